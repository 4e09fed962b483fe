"""Helpers for the sbatch tests: specs composed from conf/, and shellcheck (installed when missing)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def shellcheck() -> str:
    """Path to shellcheck; installs Debian's package through scripts/local-slurm.sh when it is missing."""
    exe = shutil.which("shellcheck")
    if exe is None:
        proc = subprocess.run(["bash", str(REPO / "scripts" / "local-slurm.sh"), "install"], capture_output=True,
                              text=True, timeout=600, stdin=subprocess.DEVNULL)
        exe = shutil.which("shellcheck")
        assert exe, f"shellcheck is missing and could not be installed:\n{proc.stdout}\n{proc.stderr}"
    return exe


@pytest.fixture
def make_spec():
    """``make_spec(run_dir, *overrides, **conf_edits)``: a resolved JobSpec for executor=slurm."""
    from hpc_ft.config.compose import compose_conf
    from hpc_ft.job import resolve

    def make(run_dir, *overrides: str, env: dict | None = None, setup: list | None = None,
             extra_sbatch: dict | None = None, name: str | None = None, partition: str | None = None):
        # Composed with a plain run dir; the real one (maybe hostile: Hydra's grammar can't take it) is set after.
        conf = compose_conf(["executor=slurm", "model=mlp", "data=synthetic", "precision=fp32", *overrides],
                            run_dir="/tmp/hpc_ft-placeholder")
        conf.run.dir = str(run_dir)
        if partition is not None:
            conf.resources.partition = partition
        if env is not None:
            conf.executor.env = dict(env)
        if setup is not None:
            conf.executor.setup = list(setup)
        if extra_sbatch is not None:
            conf.executor.extra_sbatch = dict(extra_sbatch)
        if name is not None:
            conf.run.name = name
        return resolve(conf)

    return make
