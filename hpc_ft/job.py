"""JobSpec: the resolved, serializable job description. Pure: composing one has no side effects.

Nodes read the saved ``job.yaml`` instead of recomposing Hydra, so every node and every requeue
sees exactly what the submitter resolved.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable

from omegaconf import OmegaConf

from hpc_ft.config.renames import upgrade_conf, upgrade_override
from hpc_ft.config.schema import JobConf
from hpc_ft.config.validate import workers_per_node

SPEC_FILE = "job.yaml"


@dataclass
class JobSpec:
    """A validated JobConf with every derived value filled in (run dir absolute, workers resolved)."""

    conf: JobConf
    overrides: list[str] = field(default_factory=list)  # the Hydra overrides that produced it

    @property
    def run_dir(self) -> Path:
        return Path(self.conf.run.dir)

    @property
    def nodes(self) -> int:
        return self.conf.resources.nodes

    @property
    def workers_per_node(self) -> int:
        return workers_per_node(self.conf)

    @property
    def world_size(self) -> int:
        return self.nodes * self.workers_per_node

    @property
    def spec_path(self) -> Path:
        return self.run_dir / SPEC_FILE

    def to_dict(self) -> dict[str, Any]:
        return {"conf": OmegaConf.to_container(OmegaConf.structured(self.conf)), "overrides": list(self.overrides)}

    def to_yaml(self) -> str:
        return OmegaConf.to_yaml(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "JobSpec":
        """The spec of a ``to_dict`` record; a record written before a key was renamed (``train.batch_size``)
        reads under the new name. Raises OmegaConf's errors on a key no version of the schema has."""
        merged = OmegaConf.merge(OmegaConf.structured(JobConf), upgrade_conf(d["conf"]))
        return cls(conf=OmegaConf.to_object(merged),
                   overrides=[upgrade_override(o) for o in d.get("overrides", [])])

    def save(self, path: Path | None = None) -> Path:
        """Write the spec atomically (a crash never leaves a half-written file)."""
        path = Path(path or self.spec_path)
        atomic_write_text(path, self.to_yaml())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "JobSpec":
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        return cls.from_dict(data)


def resolve(conf: JobConf, overrides: list[str] | None = None) -> JobSpec:
    """Make a JobSpec from a validated conf: absolute run dir, workers per node pinned."""
    conf.run.dir = str(Path(conf.run.dir).expanduser().resolve())
    conf.resources.workers_per_node = workers_per_node(conf)
    return JobSpec(conf=conf, overrides=list(overrides or []))


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(f)`` on a temporary file in ``path``'s directory, fsync it, and rename it over ``path``.

    A crash or a kill mid-write leaves the old file (or none), never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
