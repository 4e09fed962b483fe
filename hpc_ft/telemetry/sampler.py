"""NodeSampler: a background thread on each node that samples the job's GPUs and the host.

Each sample is appended to the node's series file (one write, so a killed node leaves every sample
up to the last one), folded into a streaming summary, and into a bounded downsampled series; ``stop``
returns the summary and that series for the NodeReport. Sampling never raises into the NodeTask.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from hpc_ft.rundir.layout import new_series_path
from hpc_ft.telemetry.host import HostSampler
from hpc_ft.telemetry.nvml import NvmlGpus
from hpc_ft.telemetry.records import SeriesWriter, gpu_col
from hpc_ft.telemetry.summary import Downsampler, NodeSummary

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MAX_NOTICES = 32  # the NodeReport stays bounded even if a flaky GPU keeps failing in new ways
# Columns carried back in the NodeReport's downsampled series (what the report plots).
REPORT_HOST_COLS = ("cpu_util_pct", "load1", "mem_used_gb", "job_rss_gb", "job_cpu_cores")
REPORT_GPU_COLS = ("util_pct", "mem_util_pct", "mem_used_gb", "power_w", "temp_c")


def report_columns(n_gpus: int) -> list[str]:
    """The columns of the bounded series in a NodeReport."""
    return ["t", *REPORT_HOST_COLS, *(gpu_col(s, m) for s in range(n_gpus) for m in REPORT_GPU_COLS)]


class NodeSampler:
    """Samples every ``interval_s`` seconds from ``start()`` until ``stop()``.

    ``pids`` returns the job's process ids (called once per sample); their RSS, CPU and GPU memory are
    the job's own. ``env`` (default os.environ) decides which GPUs are the job's.
    """

    def __init__(self, out_dir: str | Path, interval_s: float = 1.0, max_report_points: int = 600,
                 pids: Callable[[], Iterable[int]] | None = None, idle_util_pct: float = 5.0,
                 env: Mapping[str, str] | None = None, node_rank: int | None = None,
                 board_dir: str | Path | None = None):
        if not interval_s > 0:
            raise ValueError(f"interval_s must be positive, got {interval_s!r}")
        self.out_dir = Path(out_dir)
        self.interval_s = float(interval_s)
        self.max_report_points = int(max_report_points)
        self.idle_util_pct = float(idle_util_pct)
        self.node_rank = node_rank
        self._env = env
        self._host = HostSampler(pids)
        self._stop = threading.Event()
        self._lock = threading.Lock()  # summary/downsampler are read by stop() after the thread ends
        self._thread: threading.Thread | None = None
        self.notices: list[str] = []
        self.gpus: NvmlGpus | None = None
        self.writer: SeriesWriter | None = None
        self.summary: NodeSummary | None = None
        self.down: Downsampler | None = None
        self.errors = 0
        self.board_dir = board_dir  # TensorBoard curves of every sample go here (None: none)
        self.board = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "NodeSampler":
        """Open NVML (or note why not), write the series header, take the first sample, start the thread."""
        try:
            self.gpus, notes = NvmlGpus.open(self._env)
        except Exception as exc:  # noqa: BLE001 - a broken driver stack must not stop the node
            self.gpus, notes = None, [f"no GPU telemetry: NVML failed to start ({type(exc).__name__}: {exc})"]
        for n in notes:
            self._notice(n)
        gpu_info = [g.info for g in self.gpus.gpus] if self.gpus else []
        host_info = HostSampler.info()
        header = {"version": FORMAT_VERSION, "host": host_info, "node_rank": self.node_rank,
                  "interval_s": self.interval_s, "idle_util_pct": self.idle_util_pct, "gpus": gpu_info,
                  "nvml": self.gpus is not None, "t0": time.time()}
        try:
            self.writer = SeriesWriter(new_series_path(self.out_dir), header)
        except OSError as exc:  # e.g. a full or read-only run dir: keep the in-memory summary going
            self._notice(f"cannot write the telemetry series in {self.out_dir} ({exc}); summary only")
        if self.board_dir is not None:
            try:
                from hpc_ft.telemetry.board import TelemetryBoard

                self.board = TelemetryBoard(self.board_dir, self.out_dir, self.interval_s)
            except Exception as exc:  # noqa: BLE001 - no tensorboard: the series file and summary go on
                self._notice(f"no TensorBoard telemetry curves ({type(exc).__name__}: {exc})")
        self.summary = NodeSummary(gpu_info, self.idle_util_pct, self.interval_s, host=host_info)
        self.down = Downsampler(report_columns(len(gpu_info)), self.max_report_points)
        self.sample_now()
        self._thread = threading.Thread(target=self._run, name="hpc_ft-telemetry", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """Stop sampling (one last sample) and return the NodeReport's telemetry: JSON-serializable,
        bounded by ``max_report_points`` whatever the run length."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
            if self._thread.is_alive():
                self._notice(f"sampler thread did not stop within {timeout_s} s")
        if self._thread is None or not self._thread.is_alive():
            self.sample_now()
        with self._lock:
            if self.writer is not None:
                self.writer.close()
            if self.board is not None:
                self.board.close()
            if self.gpus is not None:
                self.gpus.close()
            return self.result()

    def result(self) -> dict[str, Any]:
        """Summary + downsampled series so far (the NodeReport's ``telemetry``)."""
        if self.summary is None or self.down is None:
            return {"version": FORMAT_VERSION, "notices": list(self.notices)}
        return {
            "version": FORMAT_VERSION,
            "series_path": str(self.writer.path) if self.writer else None,
            "nvml": self.gpus is not None,
            "notices": list(self.notices),
            "sample_errors": self.errors,
            "summary": self.summary.to_dict(),
            "series": _rounded(self.down.series()),
        }

    # -- sampling -------------------------------------------------------------------------------
    def _run(self) -> None:
        # Ticks on a fixed grid from the start; a late sample skips the ticks it missed instead of
        # bunching up. Event.wait is the sleep, so stop() interrupts it at once.
        t0 = time.monotonic()
        k = 1
        while True:
            delay = t0 + k * self.interval_s - time.monotonic()
            if delay < 0:
                k += math.ceil(-delay / self.interval_s)
                continue
            if self._stop.wait(timeout=delay):
                return
            k += 1
            self.sample_now()

    def sample_now(self) -> None:
        """Take one sample (the thread calls this every tick; tests call it to step deterministically)."""
        try:
            with self._lock:
                self._sample_locked()
        except Exception as exc:  # noqa: BLE001 - telemetry must never take the node down
            self.errors += 1
            if self.errors == 1:
                log.exception("telemetry sample failed")
                self._notice(f"a telemetry sample failed ({type(exc).__name__}: {exc}); sampling goes on")

    def _sample_locked(self) -> None:
        c0 = time.perf_counter()
        t = time.time()
        pids = self._host.job_pids()
        row: dict[str, float] = {"t": t, **self._host.sample(time.monotonic(), pids)}
        if self.gpus is not None:
            vals, notes = self.gpus.sample(set(pids))
            row.update(vals)
            for n in notes:
                self._notice(n)
        row["cost_ms"] = (time.perf_counter() - c0) * 1000.0
        assert self.summary is not None and self.down is not None
        if self.writer is not None:
            self.writer.append(row)
        if self.board is not None:
            self.board.add_row(row)
        self.summary.add_row(row)
        nan = math.nan
        self.down.add(row.get(c, nan) for c in self.down.cols)

    def _notice(self, text: str) -> None:
        if len(self.notices) < MAX_NOTICES:
            self.notices.append(text)
            log.warning("telemetry: %s", text)


def _rounded(series: dict[str, list[float | None]]) -> dict[str, list[float | None]]:
    """Three decimals keep the JSON small (time to the millisecond); full precision stays in the series file."""
    return {c: [None if v is None else round(v, 3) for v in vals] for c, vals in series.items()}
