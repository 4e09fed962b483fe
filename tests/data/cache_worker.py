"""A worker process for the tokenization-cache tests: loads a JSONL file, tokenizes it through tokenize_cached
(with a word-length "tokenizer": the processes race on the cache, not on tokenization, and skip importing
transformers), and writes what happened as JSON. Also the tests' own encode functions.

    python cache_worker.py DATA CACHE_DIR FINGERPRINT FLAGS_DIR NAME MODE OUT_JSON

MODE ``race:OTHER``: mark FLAGS_DIR/entered-NAME before calling; encode waits until OTHER has entered too, so
both processes are inside tokenize_cached while the entry is being written. MODE ``hold``: encode marks
FLAGS_DIR/writing and waits for FLAGS_DIR/release (so the test can meet the held lock). Every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

WAIT_S = 60.0


def make_encode(tokenizer, max_length: int, calls: list | None = None, mask_first: bool = False):
    """A causal-LM style batched encode: ``labels`` = ``input_ids`` (first token masked when ``mask_first``),
    cut at ``max_length`` with a ``truncated`` flag; appends each batch's size to ``calls``."""

    def encode(batch: dict[str, list]) -> dict[str, list]:
        if calls is not None:
            calls.append(len(batch["text"]))
        full = tokenizer(batch["text"], add_special_tokens=True)["input_ids"]
        ids = [x[:max_length] for x in full]
        labels = [([-100] + x[1:]) if mask_first else list(x) for x in ids]
        return {"input_ids": ids, "labels": labels, "truncated": [len(x) > max_length for x in full]}

    return encode


def word_encode(max_length: int, calls: list | None = None):
    """A batched encode whose token ids are word lengths (enough to tell examples apart), cut at ``max_length``."""

    def encode(batch: dict[str, list]) -> dict[str, list]:
        if calls is not None:
            calls.append(len(batch["text"]))
        full = [[len(w) for w in text.split()] for text in batch["text"]]
        return {"input_ids": [x[:max_length] for x in full], "truncated": [len(x) > max_length for x in full]}

    return encode


def _wait_for(path: Path, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {WAIT_S} s for {what}")
        time.sleep(0.01)


def main(argv: list[str]) -> int:
    data, cache_dir, fingerprint, flags, name, mode, out = argv
    flags_dir = Path(flags)
    from hpc_ft.data import FileDataSpec, load_splits, tokenize_cached

    raw = load_splits(FileDataSpec(path=data, eval_path=data)).train
    calls: list = []
    inner = word_encode(16, calls)

    def encode(batch):
        if mode.startswith("race:"):
            _wait_for(flags_dir / f"entered-{mode.split(':', 1)[1]}", "the other process to enter")
        elif mode == "hold":
            (flags_dir / "writing").touch()
            _wait_for(flags_dir / "release", "the test to release the writer")
        return inner(batch)

    (flags_dir / f"entered-{name}").touch()
    ds, stats = tokenize_cached(raw, encode, fingerprint, Path(cache_dir), max_length=16)
    Path(out).write_text(json.dumps({"pid": os.getpid(), "cache_hit": stats.cache_hit, "encode_calls": len(calls),
                                     "rows": list(ds["input_ids"]), "truncated": stats.truncated}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
