"""The estimate of a job against its GPU, with the fixes when it does not fit (torch: runs where torch may load)."""

from __future__ import annotations

from hpc_ft.estimate.fixes import find_fixes
from hpc_ft.estimate.model import FitReport, gpu_memory_bytes, usable_bytes
from hpc_ft.estimate.trace import trace_memory
from hpc_ft.job import JobSpec


def fit_report(spec: JobSpec, with_fixes: bool = True) -> FitReport:
    """Trace ``spec``'s peak memory per worker and compare it with one GPU of the job.

    ``fits`` is None for a CPU job or a GPU whose memory is unknown (no gpu_type in the table, no gpu_mem_gb).
    Raises ConfigError when the model cannot be built from its config.
    """
    est = trace_memory(spec)
    gpus = int(spec.conf.resources.gpus_per_node or 0)
    if not gpus:
        return FitReport(estimate=est, gpu_bytes=None, gpu_source="a CPU job: nothing to compare with", fits=None)
    gpu_bytes, source = gpu_memory_bytes(spec.conf.resources)
    if gpu_bytes is None:
        return FitReport(estimate=est, gpu_bytes=None, gpu_source=source, fits=None)
    usable = usable_bytes(gpu_bytes)
    fits = est.peak <= usable
    fixes = [] if fits or not with_fixes else find_fixes(spec, lambda s: trace_memory(s).peak, usable)
    return FitReport(estimate=est, gpu_bytes=gpu_bytes, gpu_source=source, fits=fits,
                     fixes=[f for f, _ in fixes], fix_peaks=[p for _, p in fixes])
