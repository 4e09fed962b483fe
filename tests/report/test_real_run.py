"""The whole path: a real local-executor run with 2 emulated nodes, telemetry on, then its report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hpc_ft.rundir.layout import RunDir

REAL_RUN = ["model=mlp", "data=synthetic", "precision=fp32", "train.max_steps=20", "resources.nodes=2"]


def real_run(run_dir: Path) -> subprocess.CompletedProcess:
    """`hpc-ft submit` as a user runs it (it waits, then prints and writes the run report)."""
    exe = Path(sys.executable).with_name("hpc-ft")
    return subprocess.run([str(exe), "submit", *REAL_RUN, f"hydra.run.dir={run_dir}"], capture_output=True,
                          text=True, timeout=500, stdin=subprocess.DEVNULL)


@pytest.mark.slow
def test_two_node_local_run_reports_both_nodes(tmp_path):
    run = tmp_path / "run"
    res = real_run(run)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "run report" in res.stdout and "no GPU was sampled" in res.stdout
    data = json.loads((run / "report" / "report.json").read_text())
    assert [n["node"] for n in data["nodes"]] == [0, 1]
    for n in data["nodes"]:
        assert n["status"] == "ok" and n["source"] == "series" and n["samples"] >= 2
        assert n["job_rss_peak_gb"] > 0.05 and n["steps"] == 20 and n["samples_per_s"] > 0
    for r in (0, 1):  # each node's own series file and the summary it sent back
        assert (run / "nodes" / f"node{r}" / "telemetry.bin").exists()
        tel = json.loads(RunDir(run).node(r).report.read_text())["telemetry"]
        assert tel["summary"]["samples"] >= 2 and len(tel["notices"]) == 1
    assert (run / "report" / "host.png").exists()
    # `hpc-ft report` on the finished run gives the same nodes again.
    exe = Path(sys.executable).with_name("hpc-ft")
    again = subprocess.run([str(exe), "report", str(run)], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "per node" in again.stdout
