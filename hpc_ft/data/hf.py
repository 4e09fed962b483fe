"""The one place that imports Hugging Face ``datasets``: offline, quiet, and only when data is really read."""

from __future__ import annotations

import os


def import_datasets():
    """``datasets``, imported with ``HF_DATASETS_OFFLINE=1`` (and the hub offline) unless the user set them.

    Data files are local: a training job must never wait on, or fail because of, the network. Progress bars are
    off because every worker would print its own into the job's log.
    """
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import datasets

    datasets.disable_progress_bars()
    return datasets
