import os
import subprocess
import sys
import time

import pytest

CLI = [sys.executable, "-m", "hpc_ft.cli"]
# The synthetic task of the training contract: trains in seconds on CPU.
TINY = ["model=mlp", "data=synthetic", "precision=fp32", "train.max_steps=10", "telemetry=off",
        "resources.workers_per_node=1"]


def hpc_ft(args, cwd, timeout_s=300):
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout_s, env=env)


def wait_for(cond, timeout_s, what):
    """Poll ``cond`` until true; fail after ``timeout_s`` (the condition is a file the system writes)."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.2)
