"""How many samples each split of a built-in dataset holds, computed from its config without torch.

The builders split with these same functions, so the check before dispatch and the data a worker
builds can never disagree. A user's own dataset (any other ``data._target_``) is checked only where
it is built, by the training loop.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from hpc_ft.errors import Problem

SYNTHETIC = "hpc_ft.train.tasks.synthetic.gaussian_clusters"
CHATTERBOT = "hpc_ft.train.tasks.text.chatterbot_intents"
# The installed chatterbot corpus holds 4403 utterances (chatterbot-corpus 1.3.3; a test keeps this bound true).
# Both splits grow with the corpus, so splits that pass the checks at this bound pass them at the real size:
# a dry run need not read the corpus (0.45 s of YAML) unless the bound leaves a doubt.
CORPUS_MIN_UTTERANCES = 4000


@dataclass(frozen=True)
class SplitSizes:
    """Samples in the train and test splits, and the config key (with its value) that sets them."""

    num_train: int
    num_test: int
    key: str  # named in errors, e.g. data.num_samples
    value: object
    fix: str  # how to get usable splits


def synthetic_split(num_samples: int, test_fraction: float) -> tuple[int, int]:
    """(train, test) sample counts of ``gaussian_clusters``: at least one test sample is held out."""
    n = max(0, num_samples)
    n_test = min(n, max(1, int(n * test_fraction)))
    return n - n_test, n_test


def text_split(num_utterances: int, test_fraction: float) -> tuple[int, int]:
    """(train, test) sample counts of ``chatterbot_intents``."""
    n_test = min(num_utterances, max(0, int(num_utterances * test_fraction)))
    return num_utterances - n_test, n_test


def fraction_problem(test_fraction: Any) -> Problem | None:
    """A test fraction outside [0, 1) would slice the samples backwards or leave no train split."""
    if isinstance(test_fraction, (int, float)) and 0.0 <= test_fraction < 1.0:
        return None
    return Problem("data.test_fraction", test_fraction, "must be within [0, 1) (the share of samples held out)",
                   "pass data.test_fraction=0.2")


def declared_sizes(data: dict[str, Any], lower_bound: bool = False) -> tuple[list[Problem], SplitSizes | None]:
    """Problems of a built-in dataset's size settings and its split sizes; (no problems, None) for other datasets.

    ``lower_bound``: the text corpus's splits at ``CORPUS_MIN_UTTERANCES`` instead of its real size (no file read).
    """
    target = data.get("_target_") if isinstance(data, dict) else None
    if target not in (SYNTHETIC, CHATTERBOT):
        return [], None
    frac = data.get("test_fraction", 0.25 if target == SYNTHETIC else 0.2)
    bad = fraction_problem(frac)
    if bad is not None:
        return [bad], None
    if target == SYNTHETIC:
        n = data.get("num_samples", 2048)
        if not isinstance(n, int) or n < 1:
            return [Problem("data.num_samples", n, "must be a whole number, at least 1",
                            "pass data.num_samples=2048")], None
        n_train, n_test = synthetic_split(n, frac)
        return [], SplitSizes(n_train, n_test, "data.num_samples", n,
                              f"pass a larger data.num_samples (2048 is the default), or change "
                              f"data.test_fraction={frac}")
    n_train, n_test = text_split(CORPUS_MIN_UTTERANCES if lower_bound else _utterance_count(), frac)
    return [], SplitSizes(n_train, n_test, "data.test_fraction", frac, "pass data.test_fraction=0.2")


@functools.lru_cache(maxsize=1)  # the installed corpus does not change; a sweep checks every job
def _utterance_count() -> int:
    from hpc_ft.train.tasks.corpus import intent_utterances

    return len(intent_utterances()[0])
