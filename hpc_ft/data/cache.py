"""Tokenize once, share everywhere: a cache of tokenized datasets keyed by (files, tokenizer, settings).

The first process to take the entry's file lock tokenizes (``datasets``' map), saves the result
(``save_to_disk``) into a temporary directory and renames it into place; every other process waits on the lock,
then all of them ``load_from_disk`` the same Arrow files, which are memory-mapped: no worker holds the dataset in
its own memory, and a second run with the same key starts without tokenizing. An entry appears whole or not at
all (the rename), so a crashed writer leaves only a temporary directory, which the next writer removes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from hpc_ft.errors import HpcFtError

if TYPE_CHECKING:
    import datasets

CACHE_ENV = "HPC_FT_DATA_CACHE"
DEFAULT_CACHE = Path("~/.cache/hpc_ft/data")
# Bump when what an entry holds changes (columns, packing rule): old entries are then simply not found.
CACHE_VERSION = 1
STATS_FILE = "hpc_ft_tokenize_stats.json"
TRUNCATED = "truncated"  # the per-example flag `encode` returns; counted, then dropped
INPUT_IDS = "input_ids"
SAFE_KEY = set("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_.")


class DataCacheError(HpcFtError):
    """The tokenization cache could not be written or waited for (a lock held past its timeout)."""


@dataclass(frozen=True)
class TokenizeStats:
    """What tokenizing a split did (or what the cached entry recorded when it was written)."""

    examples: int       # raw examples encoded
    truncated: int      # of those, examples cut at max_length (logged by the loop, recorded in the result)
    tokens: int         # tokens in the returned dataset (packed: the full blocks; a last partial block is dropped)
    cache_hit: bool     # True: read from the cache, `encode` not called
    seconds: float      # wall time of this call, loading included


def cache_root(run_dir_or_none) -> Path:
    """Where tokenized datasets are kept: ``$HPC_FT_DATA_CACHE``, else ``~/.cache/hpc_ft/data``.

    Shared across runs on purpose (a second run of the same data and tokenizer skips tokenizing), so the run dir
    does not choose it; it is accepted so callers need not care. On a cluster, point the variable at a
    filesystem every node sees: the lock and the rename assume one shared directory.
    """
    del run_dir_or_none  # the cache outlives runs (see above)
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def tokenizer_fingerprint(tokenizer) -> str:
    """A hex digest of everything in a Hugging Face tokenizer that changes its output: its class, vocabulary and
    merges (the fast tokenizer's full serialization, else ``get_vocab()``), added and special tokens, chat
    template, padding and truncation side, and whether BOS/EOS are added."""
    parts: dict[str, object] = {"class": type(tokenizer).__name__}
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # The serialization without its truncation/padding state: each call with truncation=True or padding
        # rewrites those (they are call arguments, not the tokenizer), so they would make every hash differ.
        parts["backend"] = {k: v for k, v in json.loads(backend.to_str()).items()
                            if k not in ("truncation", "padding")}
    else:
        parts["vocab"] = sorted(tokenizer.get_vocab().items())
    parts["added"] = sorted((str(k), int(v)) for k, v in tokenizer.get_added_vocab().items())
    parts["special"] = sorted((str(k), str(v)) for k, v in tokenizer.special_tokens_map.items())
    for attr in ("chat_template", "padding_side", "truncation_side", "add_bos_token", "add_eos_token",
                 "model_max_length", "do_lower_case"):
        parts[attr] = repr(getattr(tokenizer, attr, None))
    blob = json.dumps(parts, sort_keys=True, default=repr).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def entry_dir(cache_dir: Path, fingerprint: str, max_length: int, packing: bool) -> Path:
    """The entry for (fingerprint, settings): ``cache_dir/<fingerprint>/len<L>-<packed|examples>-v<version>``.

    The length and packing are in the name even if the caller's fingerprint holds them already: a cache that
    silently served 512-token examples to a 128-token run would be wrong, not slow.
    """
    if not fingerprint or not set(fingerprint) <= SAFE_KEY or fingerprint.startswith("."):
        raise ValueError(f"fingerprint {fingerprint!r} must be a non-empty name of letters, digits, '-', '_', '.'")
    return Path(cache_dir) / fingerprint / f"len{max_length}-{'packed' if packing else 'examples'}-v{CACHE_VERSION}"


def _load_entry(entry: Path, raw_examples: int, t0: float, hit: bool) -> tuple["datasets.Dataset", TokenizeStats]:
    from hpc_ft.data.hf import import_datasets

    saved = json.loads((entry / STATS_FILE).read_text())
    if saved["examples"] != raw_examples:
        # The same key for different examples: most likely one fingerprint used for both train and eval.
        raise DataCacheError(f"the tokenization cache entry {entry} was written from {saved['examples']} examples, "
                             f"but this split has {raw_examples}: its fingerprint must cover the files and the split "
                             f"(train/eval). Fix: build it with hpc_ft.data.files.data_fingerprint(spec, split, ...)")
    ds = import_datasets().load_from_disk(str(entry))  # memory-maps the Arrow files
    return ds, TokenizeStats(examples=saved["examples"], truncated=saved["truncated"], tokens=saved["tokens"],
                             cache_hit=hit, seconds=time.perf_counter() - t0)


def _checked_encode(encode: Callable, max_length: int) -> Callable:
    """``encode`` with its contract checked on every batch: a ``truncated`` flag per example and no example
    longer than ``max_length`` (the task truncates; the cache only counts)."""

    def run(batch: dict[str, list]) -> dict[str, list]:
        out = encode(batch)
        if INPUT_IDS not in out or TRUNCATED not in out:
            raise DataCacheError(f"the task's encode function must return {INPUT_IDS!r} and {TRUNCATED!r} "
                                 f"(one bool per example); it returned {sorted(out)}")
        longest = max((len(ids) for ids in out[INPUT_IDS]), default=0)
        if longest > max_length:
            raise DataCacheError(f"the task's encode function returned an example of {longest} tokens, longer "
                                 f"than max_length={max_length}: it must truncate (and flag it)")
        return out

    return run


def _packer(max_length: int, columns: list[str]) -> Callable:
    """A batched map function that concatenates ``columns`` across examples and cuts ``max_length`` blocks,
    carrying the remainder into the next batch (so blocks span batch boundaries and no token in the middle is
    lost); the last partial block is dropped. Stateful: run it once, in order, in one process."""
    carry: dict[str, list] = {c: [] for c in columns}

    def pack(batch: dict[str, list]) -> dict[str, list]:
        for c in columns:
            for ex, ids in zip(batch[c], batch[INPUT_IDS]):
                if len(ex) != len(ids):
                    raise DataCacheError(f"packing needs per-token columns: {c!r} has {len(ex)} values for "
                                         f"{len(ids)} tokens")
                carry[c].extend(ex)
        n_blocks = len(carry[INPUT_IDS]) // max_length
        out = {c: [carry[c][i * max_length:(i + 1) * max_length] for i in range(n_blocks)] for c in columns}
        for c in columns:
            del carry[c][:n_blocks * max_length]
        return out

    return pack


def _column_total(ds: "datasets.Dataset", column: str, lengths: bool) -> int:
    """Sum of a column (or of its lists' lengths), computed by Arrow without building Python lists."""
    import pyarrow.compute as pc

    col = ds.data.column(column)
    total = pc.sum(pc.list_value_length(col) if lengths else pc.cast(col, "int64")).as_py()
    return int(total or 0)


def _remove_leftovers(entry: Path) -> None:
    """Temporary directories of writers that died mid-write (only a lock holder writes, and this one holds it)."""
    for pattern in (f".{entry.name}.work-*", f".{entry.name}.tmp-*"):
        for left in entry.parent.glob(pattern):
            shutil.rmtree(left, ignore_errors=True)


def _build(raw: "datasets.Dataset", encode: Callable, entry: Path, max_length: int, packing: bool) -> None:
    """Tokenize ``raw`` into a temporary directory beside ``entry`` and rename it into place (lock held)."""
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    work = entry.parent / f".{entry.name}.work-{tag}"
    tmp = entry.parent / f".{entry.name}.tmp-{tag}"
    work.mkdir(parents=True)
    try:
        encoded = raw.map(_checked_encode(encode, max_length), batched=True, remove_columns=raw.column_names,
                          cache_file_name=str(work / "encoded.arrow"), load_from_cache_file=False,
                          new_fingerprint=f"encode-{tag}")
        stats = {"examples": len(encoded), "truncated": _column_total(encoded, TRUNCATED, lengths=False)}
        encoded = encoded.remove_columns(TRUNCATED)
        if packing:
            columns = [c for c in encoded.column_names
                       if c == INPUT_IDS or encoded.features[c].__class__.__name__ in ("Sequence", "List")]
            encoded = encoded.map(_packer(max_length, columns), batched=True, remove_columns=encoded.column_names,
                                  cache_file_name=str(work / "packed.arrow"), load_from_cache_file=False,
                                  new_fingerprint=f"pack-{tag}")
        stats["tokens"] = _column_total(encoded, INPUT_IDS, lengths=True)
        encoded.save_to_disk(str(tmp))
        (tmp / STATS_FILE).write_text(json.dumps({**stats, "max_length": max_length, "packing": packing}))
        os.rename(tmp, entry)  # atomic: readers see the whole entry or none
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


def tokenize_cached(raw: "datasets.Dataset", encode: Callable[[dict[str, list]], dict[str, list]],
                    fingerprint: str, cache_dir: Path, *, max_length: int, packing: bool = False,
                    lock_timeout_s: float = 600) -> tuple["datasets.Dataset", TokenizeStats]:
    """``raw`` tokenized by the task's batched ``encode``, from the cache entry for (``fingerprint``,
    ``max_length``, ``packing``) under ``cache_dir``, written first if missing.

    ``encode`` maps a batch of examples to ``{"input_ids": [[...]], ..., "truncated": [bool]}`` and truncates to
    ``max_length`` itself; the cache counts ``truncated`` and drops it. ``fingerprint`` is the caller's hash of
    the files (paths, sizes, mtimes), ``tokenizer_fingerprint`` and the task's settings. With ``packing``, the
    per-token columns are concatenated across examples and cut into ``max_length``-token blocks (labels kept as
    encoded). Exactly one process writes an entry; the others wait up to ``lock_timeout_s`` seconds for its lock
    and raise ``DataCacheError`` past it. The returned dataset is memory-mapped from the entry's Arrow files.
    """
    from filelock import FileLock, Timeout

    t0 = time.perf_counter()
    entry = entry_dir(Path(cache_dir), fingerprint, max_length, packing)
    if entry.is_dir():
        return _load_entry(entry, len(raw), t0, hit=True)
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataCacheError(f"cannot create the tokenization cache directory {entry.parent}: {exc.strerror}. Fix: "
                             f"set {CACHE_ENV} to a writable directory every node sees") from None
    lock_path = entry.parent / f"{entry.name}.lock"
    try:
        with FileLock(str(lock_path), timeout=lock_timeout_s):
            if not entry.is_dir():  # not written while this process waited
                _remove_leftovers(entry)
                _build(raw, encode, entry, max_length, packing)
                return _load_entry(entry, len(raw), t0, hit=False)
    except Timeout:
        raise DataCacheError(
            f"waited {lock_timeout_s:g} s for the tokenization cache lock {lock_path}: another process is still "
            f"writing {entry.name}. Fix: let it finish (a large dataset takes a while), raise the lock timeout, or "
            f"set {CACHE_ENV} to a directory of your own") from None
    return _load_entry(entry, len(raw), t0, hit=True)
