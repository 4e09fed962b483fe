"""Throughput over logging windows and what rank 0 shows of it: a progress bar on a terminal, log lines otherwise."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import torch


@dataclass
class Meter:
    """Throughput over logging windows (device-synchronised only at window ends)."""

    samples: int = 0
    tokens: int = 0
    steps: int = 0
    t0: float = field(default_factory=time.perf_counter)
    step_times_s: list[float] = field(default_factory=list)
    rates: list[tuple[float, float]] = field(default_factory=list)  # (samples/s, tokens/s) per window

    def close_window(self, device: torch.device) -> tuple[float, float]:
        """(samples/s, tokens/s) of the window ending now; the next window starts now."""
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        now = time.perf_counter()
        dt = max(now - self.t0, 1e-9)
        rate = (self.samples / dt, self.tokens / dt)
        if self.steps:
            self.step_times_s.append(dt / self.steps)
            self.rates.append(rate)
        self.samples = self.tokens = self.steps = 0
        self.t0 = now
        return rate

    def skip(self) -> None:
        """Leave the time since the window started out of it (evaluation is not training throughput)."""
        self.t0 = time.perf_counter()


class Progress:
    """A rich progress bar on an interactive rank-0 terminal; plain log lines otherwise (job logs)."""

    def __init__(self, enabled: bool, start: int, total: int):
        self.enabled = enabled
        self.bar = None
        if enabled and sys.stdout.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[info]}"), TimeRemainingColumn())
            self.task = self.bar.add_task("train", total=total, completed=start, info="")
            self.bar.start()

    def update(self, step: int, rec: dict[str, float]) -> None:
        if not self.enabled:
            return
        info = f"loss {rec['loss']:.4f} lr {rec['lr']:.2e} {rec['samples_per_s']:.1f} samples/s"
        if self.bar is not None:
            self.bar.update(self.task, completed=step, info=info)
        else:
            print(f"step {step}: {info}", flush=True)

    def note(self, text: str) -> None:
        if self.enabled:
            (self.bar.console.print if self.bar is not None else print)(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
