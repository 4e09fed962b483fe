"""Datasets from files: load JSONL/CSV/Parquet/save_to_disk data through Hugging Face ``datasets`` (offline),
check it before dispatch, and tokenize it once into a shared, memory-mapped cache.

``files`` turns the ``data`` config group into a :class:`FileDataSpec`, loads the train/eval splits and lists
every bad-data problem; ``cache`` tokenizes a split once per (files, tokenizer, settings) under a file lock.
Neither imports ``datasets`` or ``torch`` at module import: login-node commands import this package to validate.
"""

from hpc_ft.data.cache import TokenizeStats, cache_root, tokenize_cached, tokenizer_fingerprint
from hpc_ft.data.files import (FileDataSpec, RawSplits, check_files, data_fingerprint, label_names, load_splits,
                               spec_from_config)

__all__ = ["FileDataSpec", "RawSplits", "TokenizeStats", "cache_root", "check_files", "data_fingerprint",
           "label_names", "load_splits", "spec_from_config", "tokenize_cached", "tokenizer_fingerprint"]
