import os
import subprocess
import sys


CLI = [sys.executable, "-m", "hpc_ft.cli"]
# The synthetic task of the training contract: trains in seconds on CPU.
TINY = ["model=mlp", "data=synthetic", "precision=fp32", "train.max_steps=10", "telemetry=off",
        "resources.workers_per_node=1"]


def hpc_ft(args, cwd, timeout_s=300):
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout_s, env=env)
