"""Records as the previous version of hpc_ft wrote them, before config keys were renamed (issue 11).

Written from today's records by renaming the keys back, so the tests see exactly the files an earlier run dir
holds: ``job.yaml`` and the job recorded in every checkpoint.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

# What the previous version called them: the global batch and the per-worker eval batch.
OLD_NAMES = {"global_batch_size": "batch_size", "eval_micro_batch_size": "eval_batch_size"}


def previous_conf(conf: dict[str, Any]) -> dict[str, Any]:
    """A JobConf container (``JobSpec.to_dict()["conf"]``) with the train keys under their old names."""
    old = copy.deepcopy(conf)
    old["train"] = {OLD_NAMES.get(k, k): v for k, v in old["train"].items()}
    return old


def previous_overrides(overrides: list[str]) -> list[str]:
    """Overrides as the previous version's users typed them (``train.batch_size=32``)."""
    out = []
    for o in overrides:
        for new, old in OLD_NAMES.items():
            o = o.replace(f"train.{new}=", f"train.{old}=")
        out.append(o)
    return out


def write_previous_job_yaml(spec: Any, path: str | Path | None = None) -> Path:
    """Write ``spec`` (a JobSpec) as the previous version wrote its job.yaml; returns the path."""
    from omegaconf import OmegaConf

    record = spec.to_dict()
    record = {"conf": previous_conf(record["conf"]), "overrides": previous_overrides(record["overrides"])}
    path = Path(path or spec.spec_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(OmegaConf.to_yaml(record))
    return path
