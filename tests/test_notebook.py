"""notebooks/run_analysis.ipynb runs top to bottom against a run this test produces."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hpc_ft.testing.synthetic import GpuProfile, NodeProfile, synthetic_run
from tests.conftest import execute_notebook

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "run_analysis.ipynb"


def test_notebook_on_a_two_node_gpu_run(tmp_path):
    busy, idle = GpuProfile(), GpuProfile(util_pct=0.0, mem_used_gb=0.5, power_w=70.0)
    run = synthetic_run(tmp_path / "run", [NodeProfile(gpus=[busy, idle]), NodeProfile(gpus=[busy, idle])],
                        seconds=900, overrides=["resources=gpu", "executor=slurm", "resources.nodes=2",
                                                "resources.gpus_per_node=2", "train.global_batch_size=16"],
                        train={"samples_per_s": 80.0, "flops_per_sample": 1e12})
    text, images = execute_notebook(NOTEBOOK, run, "HPC_FT_RUN_DIR")
    assert "2 node(s), 4 GPU(s) sampled" in text
    assert "per node" in text and "per GPU" in text and "MFU" in text
    assert "resources.gpus_per_node=1" in text
    assert images == 4  # utilization, memory, power, host
    assert "samples of" in text


@pytest.mark.slow
def test_notebook_on_a_real_local_run(tmp_path):
    run = tmp_path / "run"
    exe = Path(sys.executable).with_name("hpc-ft")
    res = subprocess.run([str(exe), "submit", "model=mlp", "data=synthetic", "precision=fp32", "train.max_steps=20",
                          "resources.nodes=2", f"hydra.run.dir={run}"], capture_output=True, text=True, timeout=500,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    text, images = execute_notebook(NOTEBOOK, run, "HPC_FT_RUN_DIR")
    assert "2 node(s), 0 GPU(s) sampled" in text and "no GPU was sampled" in text
    assert "per node" in text and images == 1  # host.png: CPU-only run
