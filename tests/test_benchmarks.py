"""The benchmarks' harness works (not how fast anything is: speed lives in benchmarks/, never in tests)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_step import windows_from_ends  # noqa: E402
from benchmarks.common import Row, markdown_table, missing_row, rotate  # noqa: E402

# Every row the CPU entry point promises, in --quick as in a full run.
CPU_KEYS = {"cold.help", "cold.dry_run", "cold.sbatch", "step.default", "step.synthetic", "optim.fused", "precision.bf16",
            "precision.fp16", "submit.api", "submit.cli", "submit.submitit", "submit.script",
            "data.cache", "data.rss", "data.step", "fit.fsdp", "fit.lora.memory", "fit.lora.step", "fit.ac.memory",
            "fit.ac.step", "fit.estimate.full", "fit.estimate.lora", "fit.estimate.ac", "fit.estimate.fsdp"}
GROWTH_ROWS = {"data.rss"}
EXTERNAL_GROUPS = ("plan", "report", "telemetry", "tune")  # other owners' scripts: their rows, or one saying why not


def test_goal_verdicts():
    assert Row("r", "b", 1.01, 1.0, 1, "<= 1.02x").verdict() == "pass"
    assert Row("r", "b", 1.03, 1.0, 1, "<= 1.02x").verdict() == "miss"
    assert Row("r", "b", 0.4, 9.0, 1, "<= 0.5 s").verdict() == "pass"  # bounds A itself, not the ratio
    assert Row("r", "b", 0.6, 0.1, 1, "<= 0.5 s").verdict() == "miss"
    assert Row("r", "b", 420.0, 1000.0, 1, ">= 0.4x", unit="TFLOP/s").verdict() == "pass"
    assert Row("r", "b", 380.0, 1000.0, 1, ">= 40%", unit="TFLOP/s").verdict() == "miss"
    assert Row("r", "b", 1.0, 2.0, 1, "report (CPU)").verdict() == "info"
    assert Row("r", "b", 0.1, 1.0, 1, "<= 0.5 s", status="miss").verdict() == "miss"  # e.g. imported torch
    gone = missing_row("x.missing", "x", "not available", "why")
    assert gone.verdict() == "not available" and math.isnan(gone.ratio)
    assert "not available" in markdown_table([gone])


def test_rotate_alternates_and_reverses():
    calls: list[str] = []
    fns = {k: (lambda k=k: calls.append(k) or float(len(calls))) for k in "abc"}
    samples = rotate(fns, repeats=2, warmup=1)
    assert calls == list("abc" "cba" "abc")  # ABC, CBA, ABC: drift lands evenly
    assert samples == {"a": [6.0, 7.0], "b": [5.0, 8.0], "c": [4.0, 9.0]}  # warm-up round dropped


def test_baseline_windows_match_hpc_ft_windows():
    # 6 steps of 1 s after t0=0, windows of 2: the first (warm-up) window is dropped, like metrics.jsonl's first.
    ends = [1.0, 2.0, 4.0, 6.0, 7.0, 8.0]
    assert windows_from_ends(0.0, ends, 2) == [2.0, 1.0]


def test_only_keeps_the_other_groups_rows(tmp_path):
    from benchmarks.run import merge_previous

    out = tmp_path / "day.json"
    old = [Row("s", "b", 1.0, 1.0, 1, "", key="step.default"), Row("p", "b", 1.0, 1.0, 1, "", key="precision.bf16"),
           Row("c", "b", 1.0, 1.0, 1, "", key="cold.help")]
    out.write_text(json.dumps({"mode": "cpu", "quick": False, "command": "python benchmarks/run.py --only step,cold",
                               "rows": [r.to_dict() for r in old]}))
    rows, earlier = merge_previous(out, [Row("c2", "b", 2.0, 1.0, 1, "", key="cold.help")], ["cold"], "cpu", False)
    assert [(r.key, r.name) for r in rows] == [("cold.help", "c2"), ("step.default", "s"), ("precision.bf16", "p")]
    assert earlier == ["python benchmarks/run.py --only step,cold"]
    assert merge_previous(out, [], ["cold"], "cpu", True) == ([], [])  # a quick run never mixes with a full one


def test_only_step_replaces_every_row_the_step_group_measures(tmp_path):
    """The step group also writes optim.* and tracking.* rows: re-measuring it must replace them, not add twins."""
    from benchmarks.run import merge_previous

    out = tmp_path / "day.json"
    old = [Row(n, "b", 1.0, 1.0, 1, "", key=k) for n, k in
           (("s", "step.default"), ("f", "optim.fused"), ("t", "tracking.overhead"), ("c", "cold.help"))]
    out.write_text(json.dumps({"mode": "cpu", "quick": False, "rows": [r.to_dict() for r in old]}))
    new = [Row(n + "2", "b", 2.0, 1.0, 1, "", key=k) for n, k in
           (("s", "step.default"), ("f", "optim.fused"), ("t", "tracking.overhead"))]
    rows, _ = merge_previous(out, new, ["step"], "cpu", False)
    assert sorted((r.key, r.name) for r in rows) == [("cold.help", "c"), ("optim.fused", "f2"), ("step.default", "s2"),
                                                      ("tracking.overhead", "t2")]


@pytest.mark.bench
def test_gpu_mode_refuses_without_cuda_or_measures_with_it(tmp_path):
    import torch

    out = tmp_path / "gpu.json"
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--gpu", "--quick", "--out", str(out)],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    if torch.cuda.is_available():
        assert res.returncode == 0, res.stderr[-2000:]
        keys = {r["key"] for r in json.loads(out.read_text())["rows"]}
        assert keys == {"gpu.precision.bf16", "gpu.precision.fp16", "gpu.mfu", "gpu.telemetry", "gpu.loop",
                        "gpu.deterministic"}
    else:
        assert res.returncode == 2
        assert "GPU mode needs a CUDA GPU" in res.stderr and not out.exists()


@pytest.mark.bench
def test_gpu_rows_harness_on_cpu():
    """The GPU measurement code itself, run on the CPU at toy size (the figures mean nothing here)."""
    from benchmarks import bench_gpu

    rows = bench_gpu.measure(quick=True, device="cpu")
    assert [r.key for r in rows] == ["gpu.precision.bf16", "gpu.precision.fp16", "gpu.mfu", "gpu.telemetry",
                                     "gpu.loop", "gpu.deterministic"]
    assert all(r.median_s > 0 and r.verdict() != "not available" for r in rows)
    assert rows[2].verdict() == "n/a"  # no peak for a CPU: said, not invented


@pytest.mark.bench
def test_quick_run_has_every_row(tmp_path):
    out = tmp_path / "quick.json"
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--out", str(out)],
                         capture_output=True, text=True, timeout=540, cwd=ROOT)
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])
    payload = json.loads(out.read_text())
    rows = {r["key"]: r for r in payload["rows"]}
    assert CPU_KEYS <= set(rows), CPU_KEYS - set(rows)
    for g in EXTERNAL_GROUPS:
        assert any(k.startswith(g + ".") for k in rows), f"no row for {g}"
    for key in CPU_KEYS:
        r = rows[key]
        if r["status"] == "pending":  # hpc-ft sbatch not written yet: the row says so
            continue
        assert r["verdict"] in ("pass", "miss", "info"), (key, r)
        # a growth row (data.rss: RSS after minus before) may be slightly negative; every other figure is positive
        assert (r["median_s"] > 0 or key in GROWTH_ROWS) and r["baseline_median_s"] > 0 and r["samples_a"], (key, r)
    assert all(r["verdict"] != "error" for r in rows.values()), [r for r in rows.values() if r["verdict"] == "error"]
    assert payload["machine"]["cpus"] >= 1 and payload["command"].startswith("python benchmarks/run.py")
    md = out.with_suffix(".md").read_text()
    assert all(r["name"].replace("|", "/") in md for r in rows.values())
    assert "measurement" in res.stdout  # the printed table
