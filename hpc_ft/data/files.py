"""Datasets from files: the ``data=files`` spec, loading the train/eval splits, and every bad-data problem.

Files are read through Hugging Face ``datasets`` (imported inside the functions, offline): JSONL/JSON, CSV and
Parquet become Arrow files in the data cache and are memory-mapped, and a ``datasets.save_to_disk`` directory
is memory-mapped where it is. Problems are ``hpc_ft.errors.Problem`` (key, value, rule, fix), like every other
refusal before dispatch; ``load_splits`` raises them as one ``ConfigError`` (the CLI's exit status 2).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

from hpc_ft.errors import ConfigError, Problem

if TYPE_CHECKING:
    import datasets

FORMATS = ("auto", "json", "csv", "parquet", "disk")
# File extensions `format: auto` understands (a directory is a save_to_disk dataset).
EXTENSIONS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
FIELD_KEYS = ("text_field", "label_field", "prompt_field", "response_field", "messages_field")
FILE_FIX = "point it at a .jsonl/.json, .csv or .parquet file, or a directory written by datasets' save_to_disk"
PREFIX = "data."  # the config group these keys live in
MAX_SHOWN = 5  # bad labels named in one problem


@dataclass(frozen=True)
class FileDataSpec:
    """Where the examples are and which fields a task reads (the ``data`` config group, one key per field)."""

    path: str                      # a .jsonl/.json, .csv, .parquet file, or a datasets.save_to_disk directory
    eval_path: str | None = None   # None: a seeded eval_fraction of `path` is held out
    eval_fraction: float = 0.1
    split_seed: int = 1234
    format: str = "auto"           # auto | json | csv | parquet | disk   (auto: by extension / directory)
    text_field: str | None = None      # classification text, or plain causal-LM text
    label_field: str | None = None     # classification label (int or string; strings map to ids sorted)
    prompt_field: str | None = None    # SFT prompt
    response_field: str | None = None  # SFT response
    messages_field: str | None = None  # SFT chat messages [{"role":..., "content":...}, ...]
    max_length: int = 512              # tokens per example (or per packed block)
    packing: bool = False              # causal LM only: concatenate examples and cut max_length blocks


@dataclass(frozen=True)
class RawSplits:
    """The untokenized train and eval splits (Arrow-backed, memory-mapped)."""

    train: "datasets.Dataset"
    eval: "datasets.Dataset"


def spec_from_config(data_cfg: Mapping) -> FileDataSpec:
    """A :class:`FileDataSpec` from the ``data`` config group (a dict or an OmegaConf ``DictConfig``).

    Keys named like the spec's fields are taken (``~`` in paths expanded); other keys (``_target_``, settings
    of the task) are left to their owners. Raises ``ConfigError`` when ``path`` is missing.
    """
    names = {f.name for f in dataclasses.fields(FileDataSpec)}
    values = {k: data_cfg[k] for k in data_cfg.keys() if k in names}
    if values.get("path") in (None, ""):
        raise ConfigError([Problem(PREFIX + "path", values.get("path"), "data=files needs the file to train on",
                                   f"set data.path: {FILE_FIX}")])
    for key in ("path", "eval_path"):
        if values.get(key) not in (None, ""):
            values[key] = str(Path(str(values[key])).expanduser())
        else:
            values[key] = None
    return FileDataSpec(**values)


def spec_problems(spec: FileDataSpec) -> list[Problem]:
    """Settings that are wrong whatever the files hold (format name, eval fraction, max length)."""
    out = []
    if spec.format not in FORMATS:
        out.append(Problem(PREFIX + "format", spec.format, f"must be one of {', '.join(FORMATS)}",
                           "use auto (by extension; a directory is a save_to_disk dataset) or name the format"))
    frac = spec.eval_fraction
    if spec.eval_path is None and not (isinstance(frac, (int, float)) and not isinstance(frac, bool)
                                       and 0 < frac < 1):
        out.append(Problem(PREFIX + "eval_fraction", frac, "must be a fraction strictly between 0 and 1",
                           "hold out e.g. 0.1 of the examples, or set data.eval_path to an eval file"))
    if not (isinstance(spec.max_length, int) and not isinstance(spec.max_length, bool) and spec.max_length > 0):
        out.append(Problem(PREFIX + "max_length", spec.max_length, "must be a positive number of tokens",
                           "set data.max_length, e.g. 512"))
    if not isinstance(spec.split_seed, int) or isinstance(spec.split_seed, bool):
        out.append(Problem(PREFIX + "split_seed", spec.split_seed, "must be an integer", "set e.g. 1234"))
    if not isinstance(spec.packing, bool):
        out.append(Problem(PREFIX + "packing", spec.packing, "must be true or false", "set true or false"))
    return out


def file_format(path: str, fmt: str, key: str) -> tuple[str | None, Problem | None]:
    """The format to read ``path`` with, or the problem (missing file, unknown extension) naming ``key``."""
    p = Path(path)
    if not p.exists():
        return None, Problem(key, path, "no such file or directory", FILE_FIX)
    if fmt != "auto":
        return fmt, None
    if p.is_dir():
        return "disk", None
    found = EXTENSIONS.get(p.suffix.lower())
    if found is None:
        return None, Problem(key, path, f"unreadable format: cannot tell it from the extension {p.suffix!r} "
                                        f"(known: {', '.join(EXTENSIONS)}, or a save_to_disk directory)",
                             f"rename the file, or set data.format to one of {', '.join(FORMATS[1:])}")
    return found, None


def _short(exc: BaseException) -> str:
    """An exception's message on one short line (datasets' own messages can run to pages)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _holds_no_rows(path: str, fmt: str) -> bool:
    """Whether a file that ``datasets`` refused is simply empty: blank (JSON, ``[]``), a CSV header alone, or a
    Parquet file of zero rows. Reads only up to the first row, and only after a failed load."""
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows == 0
        allowed = 1 if fmt == "csv" else 0  # lines that are not rows: the CSV header
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.strip() and line.strip() != "[]":
                    allowed -= 1
                    if allowed < 0:
                        return False
        return True
    except Exception:  # unreadable as fmt after all: the caller reports that
        return False


def read_file(path: str, fmt: str, key: str) -> tuple["datasets.Dataset | None", Problem | None]:
    """One file (or save_to_disk directory) as a memory-mapped ``datasets.Dataset``, or the problem naming ``key``.

    JSON/CSV/Parquet are converted once into Arrow files under ``cache_root()/hf`` (``datasets``' own cache,
    keyed by the file's path, size and mtime), so a second read, and every worker after the first, maps them.
    """
    from hpc_ft.data.cache import cache_root
    from hpc_ft.data.hf import import_datasets

    fmt_found, problem = file_format(path, fmt, key)
    if problem is not None:
        return None, problem
    datasets = import_datasets()
    try:
        if fmt_found == "disk":
            ds = datasets.load_from_disk(path)
            if isinstance(ds, datasets.DatasetDict):
                if "train" not in ds:
                    return None, Problem(key, path, f"a DatasetDict without a 'train' split (splits: "
                                                    f"{', '.join(ds)})", "save the split to train on as 'train'")
                ds = ds["train"]
        else:
            ds = datasets.load_dataset(fmt_found, data_files=path, split="train",
                                       cache_dir=str(cache_root(None) / "hf"))
    except Exception as exc:  # datasets raises many kinds for a bad file; each means "cannot read it as fmt"
        if _holds_no_rows(path, fmt_found):  # datasets cannot build a table from no rows: say what is wrong
            return datasets.Dataset.from_dict({}), None
        return None, Problem(key, path, f"unreadable format: cannot be read as {fmt_found} ({_short(exc)})",
                             f"check the file is valid {fmt_found}, or set data.format to its real format")
    return ds, None


def _eval_split(spec: FileDataSpec, full: "datasets.Dataset") -> tuple[RawSplits | None, Problem | None]:
    """Hold out a seeded ``eval_fraction`` of ``full`` (the same examples for the same seed, on every worker)."""
    n = len(full)
    n_eval = math.ceil(spec.eval_fraction * n)
    if n_eval < 1 or n - n_eval < 1:
        return None, Problem(PREFIX + "eval_fraction", spec.eval_fraction,
                             f"holds out {n_eval} of {n} examples, leaving {n - n_eval} to train on",
                             "hold out a fraction that leaves both splits non-empty, or set data.eval_path")
    parts = full.train_test_split(test_size=n_eval, shuffle=True, seed=spec.split_seed)
    return RawSplits(train=parts["train"], eval=parts["test"]), None


def _load(spec: FileDataSpec) -> tuple[RawSplits | None, list[Problem]]:
    problems = spec_problems(spec)
    if problems:
        return None, problems
    train, problem = read_file(spec.path, spec.format, PREFIX + "path")
    problems += [problem] if problem else []
    evald = None
    if spec.eval_path is not None:
        evald, problem = read_file(spec.eval_path, spec.format, PREFIX + "eval_path")
        problems += [problem] if problem else []
    for key, path, ds in ((PREFIX + "path", spec.path, train), (PREFIX + "eval_path", spec.eval_path, evald)):
        if ds is not None and len(ds) == 0:
            problems.append(Problem(key, path, "empty dataset: it holds no examples",
                                    "point it at a file with examples"))
    if problems or train is None:
        return None, problems
    if evald is not None:
        return RawSplits(train=train, eval=evald), []
    splits, problem = _eval_split(spec, train)
    return splits, [problem] if problem else []


def load_splits(spec: FileDataSpec) -> RawSplits:
    """The train and eval splits: ``eval_path`` when given, else a seeded ``eval_fraction`` of ``path``.

    Offline; raises ``ConfigError`` (every problem: missing file, unreadable format, empty dataset, bad settings).
    """
    splits, problems = _load(spec)
    if problems:
        raise ConfigError(problems)
    assert splits is not None
    return splits


def _field_key(spec: FileDataSpec, name: str) -> tuple[str, str | None]:
    """(config key, column) for a required field given as a spec key (``"text_field"``) or as a column name."""
    if name in FIELD_KEYS:
        return PREFIX + name, getattr(spec, name)
    for key in FIELD_KEYS:
        if getattr(spec, key) == name:
            return PREFIX + key, name
    return PREFIX + "path", name


def _is_messages(feature) -> bool:
    """Whether a column's ``datasets`` feature is a list of {role, content, ...} records (chat messages)."""
    inner = getattr(feature, "feature", None)
    return isinstance(inner, dict) and {"role", "content"} <= set(inner)


def check_files(spec: FileDataSpec, required_fields: Sequence[str], min_train_examples: int,
                label_set: Sequence | None = None) -> list[Problem]:
    """Every bad-data problem, each naming its key: missing file, unreadable format, empty dataset, a missing
    field, fewer train examples than ``min_train_examples`` (one global batch), labels not in ``label_set``.

    ``required_fields`` are the fields the task reads, as spec keys (``"prompt_field"``: its value is the column,
    and an unset key is a problem) or as column names. Reads the files (offline); returns [] when all is well.
    """
    splits, problems = _load(spec)
    if splits is None:
        return problems
    fields = [_field_key(spec, name) for name in required_fields]
    for key, column in fields:
        if column is None:
            problems.append(Problem(key, None, "the task reads this field, but it is not set",
                                    f"set {key} to the column holding it"))
            continue
        for where, path, ds in (("path", spec.path, splits.train), ("eval_path", spec.eval_path, splits.eval)):
            if column not in ds.column_names:
                problems.append(Problem(key, column, f"missing field: {path} has no column {column!r} "
                                                     f"(columns: {', '.join(ds.column_names)})",
                                        f"set {key} to one of its columns"))
            elif key == PREFIX + "messages_field" and not _is_messages(ds.features[column]):
                problems.append(Problem(key, column, f"column {column!r} of {path} is not a list of chat messages "
                                                     f"with 'role' and 'content' (it is {ds.features[column]})",
                                        'store each example\'s messages as [{"role": ..., "content": ...}, ...]'))
            if spec.eval_path is None:
                break  # the eval split is part of the same file
    n_train = len(splits.train)
    if n_train < min_train_examples:
        held = "" if spec.eval_path is not None else f" after holding out {len(splits.eval)} for evaluation"
        problems.append(Problem(PREFIX + "path", spec.path,
                                f"{n_train} training examples{held}, fewer than one global batch "
                                f"({min_train_examples})",
                                f"add examples, or lower train.global_batch_size to at most {n_train}"))
    if label_set is not None and spec.label_field is not None and not any(p.key == PREFIX + "label_field"
                                                                          for p in problems):
        allowed = set(label_set)
        found = set(splits.train.unique(spec.label_field)) | set(splits.eval.unique(spec.label_field))
        bad = sorted(found - allowed, key=repr)
        if bad:
            shown = bad[:MAX_SHOWN] + (["..."] if len(bad) > MAX_SHOWN else [])
            problems.append(Problem(PREFIX + "label_field", spec.label_field,
                                    f"labels not in the label set: {shown} (label set: {list(label_set)})",
                                    "fix those examples, or give the task a label set that holds them"))
    return problems


def label_names(splits: RawSplits, label_field: str) -> list:
    """Every label of ``label_field`` in either split, sorted: a string label's class id is its index here
    (the same ids on every worker and in every run over the same files)."""
    found = set(splits.train.unique(label_field)) | set(splits.eval.unique(label_field))
    return sorted(found, key=lambda v: (not isinstance(v, (int, float)), v if isinstance(v, (int, float)) else str(v)))


def _file_stats(path: str | None) -> list:
    """(relative name, size in bytes, mtime in ns) of ``path``, or of every file under it (a directory)."""
    if path is None:
        return []
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    return [(str(f.relative_to(p)) if p.is_dir() else str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]


def data_fingerprint(spec: FileDataSpec, split: str, tokenizer_fp: str, settings: Mapping | None = None) -> str:
    """A cache key for one tokenized split (``tokenize_cached``'s ``fingerprint``): the spec, the files' paths,
    sizes and modification times, the split name (``"train"``/``"eval"``), the tokenizer's fingerprint and the
    task's own settings (JSON-able values; others by ``repr``). Editing a file, or any of these, changes it."""
    blob = json.dumps({"spec": dataclasses.asdict(spec), "files": [_file_stats(spec.path), _file_stats(spec.eval_path)],
                       "split": split, "tokenizer": tokenizer_fp, "settings": dict(settings or {})},
                      sort_keys=True, default=repr)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]
