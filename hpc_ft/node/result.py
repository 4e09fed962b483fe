"""NodeReport: what one node sends back to the submitter (through submitit or a JSON file)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hpc_ft.errors import PREEMPTED_EXIT_CODE  # noqa: F401  re-exported: the node's modules read it from here
from hpc_ft.job import atomic_write_text


@dataclass
class NodeReport:
    """One node's outcome: identity, exit status, timing, training metrics and telemetry."""

    host: str
    node_rank: int
    job_id: str
    exit_code: int  # torchrun's exit status (0: every worker succeeded)
    wall_s: float  # torchrun's wall time on this node
    train: dict[str, Any] = field(default_factory=dict)  # steps, samples_per_s, final_loss, eval_accuracy, ...
    telemetry: dict[str, Any] = field(default_factory=dict)  # summary + bounded downsampled series
    error_tail: str = ""  # last lines of the node's error output when exit_code != 0
    requeued: bool = False  # True when the node stopped for preemption and the job was requeued

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def preempted(self) -> bool:
        """Stopped at a preemption checkpoint (resumable), not failed: torchrun's own non-zero exit after
        forwarding the signal says nothing about training."""
        return not self.ok and self.requeued and bool(self.train.get("preempted"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NodeReport":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1, default=str))

    @classmethod
    def load(cls, path: Path) -> "NodeReport":
        return cls.from_dict(json.loads(Path(path).read_text()))
