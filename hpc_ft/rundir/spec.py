"""``job.yaml``: the JobSpec saved in its run dir, atomically; an earlier, different one is kept aside."""

from __future__ import annotations

import os
import time
from pathlib import Path

from hpc_ft.job import JobSpec
from hpc_ft.rundir.atomic import atomic_write_text
from hpc_ft.rundir.layout import RunDir


def spec_path(spec: JobSpec) -> Path:
    """``RUN_DIR/job.yaml`` of ``spec``: what nodes, torchrun's workers and the sbatch script read."""
    return RunDir.of(spec).spec


def write_spec(spec: JobSpec, path: str | os.PathLike | None = None) -> Path:
    """Write ``spec`` as YAML to ``path`` (default: its run dir's job.yaml) atomically; returns the path."""
    path = Path(path) if path is not None else spec_path(spec)
    atomic_write_text(path, spec.to_yaml())
    return path


def save_spec(spec: JobSpec) -> Path:
    """Write job.yaml into the run dir; a different existing one is kept aside (job.STAMP.yaml), never
    overwritten. Returns the path."""
    rd = RunDir.of(spec)
    path = rd.spec
    if path.exists():
        old = path.read_text()
        if old == spec.to_yaml():
            return path
        import shutil

        shutil.copy2(path, rd.spec_backup(time.strftime("%Y%m%d-%H%M%S")))
    return write_spec(spec)
