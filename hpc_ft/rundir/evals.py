"""Evaluation records in ``metrics.jsonl``: the loop appends one per evaluation, a search reads them while it runs.

``metrics.jsonl`` holds one JSON object per line. The loop's logging windows have ``loss``, ``lr`` and throughput;
an evaluation is a line of its own, ``{"step": N, "eval": {"eval_loss": ..., ...}}`` (``EvalPoint``), so readers
of either kind skip the other by its keys. ``hpc-ft tune`` reads a running trial's points (``EvalReader``) and
hands each to its pruner: the file is the trial's report at every evaluation, on any filesystem the nodes share.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

EVAL_KEY = "eval"


@dataclass(frozen=True)
class EvalPoint:
    """One evaluation: the optimizer step it followed and the objective's metrics (name -> value)."""

    step: int
    metrics: dict[str, float]

    def to_line(self) -> str:
        return json.dumps({"step": self.step, EVAL_KEY: self.metrics}) + "\n"

    @classmethod
    def from_record(cls, rec: object) -> "EvalPoint | None":
        """The point in one parsed line, or None for a line of another kind (a logging window)."""
        if not isinstance(rec, dict) or not isinstance(rec.get(EVAL_KEY), dict) or not isinstance(rec.get("step"), int):
            return None
        metrics = {k: float(v) for k, v in rec[EVAL_KEY].items() if isinstance(v, (int, float)) and math.isfinite(v)}
        return cls(step=rec["step"], metrics=metrics)


def append_eval(f: IO[str] | None, step: int, metrics: dict[str, float | None]) -> None:
    """Append an evaluation to the open ``metrics.jsonl`` (rank 0's; None elsewhere) and flush it, so a search
    driver sees it at once. Metrics that are None (not measured) are left out."""
    if f is None:
        return
    f.write(EvalPoint(step, {k: v for k, v in metrics.items() if v is not None}).to_line())
    f.flush()


class EvalReader:
    """Reads the evaluations appended to one ``metrics.jsonl`` since the last call (a partial last line waits)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.offset = 0

    def new_points(self) -> list[EvalPoint]:
        """The complete lines added since the last call, as EvalPoints ([] when the file does not exist yet)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        out = []
        for line in data[: end + 1].splitlines():
            try:
                point = EvalPoint.from_record(json.loads(line))
            except ValueError:
                continue  # a torn line from a killed writer: the next evaluation comes on its own line
            if point is not None:
                out.append(point)
        return out


def read_evals(path: str | os.PathLike) -> list[EvalPoint]:
    """Every evaluation in ``path`` (a run dir's metrics.jsonl), in file order."""
    return EvalReader(path).new_points()
