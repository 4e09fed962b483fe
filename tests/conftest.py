"""Shared helpers: run the real `hpc-ft` console script in a subprocess, with a timeout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# The synthetic task: seconds to train; lr raised so 20 steps separate the clusters.
SYNTH = ["model=mlp", "data=synthetic", "precision=fp32", "optim.lr=0.01", "train.max_steps=20",
         "train.ckpt_every_steps=5", "train.eval_every_steps=0", "train.warmup_steps=2", "telemetry=off"]


def hpc_ft_cmd(*args: str, env: dict[str, str] | None = None, timeout_s: float = 300,
               cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``hpc-ft ARGS`` as a user would; fails the test (not hangs) past ``timeout_s``."""
    exe = Path(sys.executable).with_name("hpc-ft")
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([str(exe), *args], env=full_env, capture_output=True, text=True, timeout=timeout_s,
                          cwd=cwd, stdin=subprocess.DEVNULL)


@pytest.fixture
def run_cli():
    """``run_cli(*args, env=..., timeout_s=...)`` runs the real hpc-ft command."""
    return hpc_ft_cmd


@pytest.fixture
def synth() -> list[str]:
    """Overrides selecting the seconds-long synthetic task."""
    return list(SYNTH)
