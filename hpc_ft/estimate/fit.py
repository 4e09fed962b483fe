"""The estimate of a job against its GPU, with the fixes when it does not fit (torch: runs where torch may load)."""

from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Iterator

from hpc_ft.estimate.fixes import find_fixes
from hpc_ft.estimate.model import FitReport, gpu_memory_bytes, usable_bytes
from hpc_ft.estimate.trace import trace_memory
from hpc_ft.job import JobSpec


# Library warnings that building the traced job's model raises, which say nothing about its memory: peft reads
# transformers' deprecated ``is_gradient_checkpointing`` on every model it wraps (LoRA, each LoRA fix tried).
QUIET_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    (r"`is_gradient_checkpointing` is deprecated", FutureWarning),
)


@contextlib.contextmanager
def quiet_trace(level: int = logging.WARNING) -> Iterator[None]:
    """Within the block, what building a traced job logs stays off the console: hpc_ft's records below ``level``
    (its setup's INFO: "activation checkpointing: 2 LlamaDecoderLayer blocks recomputed", "LoRA r=8 ...") and the
    library warnings of ``QUIET_WARNINGS`` (by message and category). A level the user set on the "hpc_ft" logger
    is kept; the logger's level and the warning filters come back after the block."""
    lg = logging.getLogger("hpc_ft")
    before = lg.level
    if before == logging.NOTSET:
        lg.setLevel(level)
    try:
        with warnings.catch_warnings():
            for message, category in QUIET_WARNINGS:
                warnings.filterwarnings("ignore", message=message, category=category)
            yield
    finally:
        lg.setLevel(before)


def fit_report(spec: JobSpec, with_fixes: bool = True) -> FitReport:
    """Trace ``spec``'s peak memory per worker and compare it with one GPU of the job, quietly (``quiet_trace``:
    the job's warnings show, its setup's INFO records do not; a candidate fix's warnings do not either).

    ``fits`` is None for a CPU job or a GPU whose memory is unknown (no gpu_type in the table, no gpu_mem_gb).
    Raises ConfigError when the model cannot be built from its config.
    """
    with quiet_trace():
        est = trace_memory(spec)
    gpus = int(spec.conf.resources.gpus_per_node or 0)
    if not gpus:
        return FitReport(estimate=est, gpu_bytes=None, gpu_source="a CPU job: nothing to compare with", fits=None)
    gpu_bytes, source = gpu_memory_bytes(spec.conf.resources)
    if gpu_bytes is None:
        return FitReport(estimate=est, gpu_bytes=None, gpu_source=source, fits=None)
    usable = usable_bytes(gpu_bytes)
    fits = est.peak <= usable
    fixes = []
    if not fits and with_fixes:
        # What a candidate change warns about (checkpointing a model without transformer blocks) is not the job's.
        with quiet_trace(logging.ERROR):
            fixes = find_fixes(spec, lambda s: trace_memory(s).peak, usable)
    return FitReport(estimate=est, gpu_bytes=gpu_bytes, gpu_source=source, fits=fits,
                     fixes=[f for f, _ in fixes], fix_peaks=[p for _, p in fixes])
