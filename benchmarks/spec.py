"""Jobs for the benchmarks: compose a JobSpec once, then give every run a fresh copy in its own run dir.

A fresh run dir per run matters: hpc_ft resumes from the newest checkpoint in the run dir, so a reused
one would train zero steps.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

SYNTHETIC = ["model=mlp", "data=synthetic", "precision=fp32", "optim.lr=0.01", "telemetry=off"]
# Measure training only: no mid-run checkpoints or evals inside the timed windows (both happen at the end).
STEADY = ["train.ckpt_every_steps=0", "train.eval_every_steps=0"]


def compose_spec(overrides: list[str], run_dir: Path):
    """A validated, resolved JobSpec for ``overrides`` (as ``hpc-ft submit`` would build it)."""
    from hpc_ft.config.compose import compose_conf
    from hpc_ft.submit.executors import resolve, validate

    conf = compose_conf(list(overrides), run_dir=run_dir)
    validate(conf)
    return resolve(conf, list(overrides))


def fresh_copy(spec, root: Path, tag: str):
    """``spec`` in a new, empty run dir under ``root``, job.yaml saved."""
    new = copy.deepcopy(spec)
    new.conf.run.dir = tempfile.mkdtemp(prefix=f"{tag}-", dir=root)
    new.save()
    return new


def torchrun_cmd(spec) -> tuple[list[str], dict[str, str]]:
    """The exact torchrun argv and environment NodeTask uses for this spec on a single node."""
    from hpc_ft.node.launch import torchrun_argv, worker_env
    from hpc_ft.node.rendezvous import placement_from_env

    place = placement_from_env({})
    return torchrun_argv(spec, place), worker_env(spec, place)
