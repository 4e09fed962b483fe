"""Host metrics from /proc: CPU utilization, load, memory, and the CPU and resident memory of the job's
processes. Plain file reads (no psutil): a few hundred microseconds per sample on a busy node."""

from __future__ import annotations

import os
import socket
from typing import Callable, Iterable

from hpc_ft.telemetry.records import GIB

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from the first line of /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user/nice
    return total - idle, total


def _meminfo_gb() -> tuple[float, float] | None:
    """(used, total) GiB: used = MemTotal - MemAvailable, what the kernel could not hand out."""
    vals: dict[str, int] = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("MemTotal", "MemAvailable"):
                    vals[key] = int(rest.split()[0]) * 1024
                    if len(vals) == 2:
                        break
    except (OSError, ValueError, IndexError):
        return None
    if len(vals) < 2:
        return None
    return (vals["MemTotal"] - vals["MemAvailable"]) / GIB, vals["MemTotal"] / GIB


def _proc_usage(pid: int) -> tuple[int, int] | None:
    """(utime + stime jiffies, resident bytes) of one process; None once it has exited."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            after = f.read().rsplit(")", 1)[1].split()  # the command name may contain spaces and ')'
        ticks = int(after[11]) + int(after[12])  # fields 14 and 15: utime, stime
        rss_pages = int(after[21])  # field 24: rss
    except (OSError, IndexError, ValueError):
        return None
    return ticks, rss_pages * PAGE_BYTES


class HostSampler:
    """Turns /proc counters into rates between consecutive samples."""

    def __init__(self, pids: Callable[[], Iterable[int]] | None = None):
        self._pids = pids
        self._cpu_prev = _cpu_times()
        self._ticks_prev: dict[int, int] = {}
        self._t_prev: float | None = None

    @staticmethod
    def info() -> dict:
        """Static facts of this host for the series header."""
        mem = _meminfo_gb()
        return {"name": socket.gethostname(), "cpus": os.cpu_count(),
                "mem_total_gb": round(mem[1], 3) if mem else None}

    def job_pids(self) -> list[int]:
        if self._pids is None:
            return []
        try:
            return [int(p) for p in self._pids()]
        except Exception:  # noqa: BLE001 - the caller's process lookup must never stop sampling
            return []

    def sample(self, now: float, pids: list[int]) -> dict[str, float]:
        """One sample at monotonic time ``now``; rates (CPU) are missing on the first call."""
        out: dict[str, float] = {}
        cpu = _cpu_times()
        if cpu and self._cpu_prev and cpu[1] > self._cpu_prev[1]:
            out["cpu_util_pct"] = 100.0 * (cpu[0] - self._cpu_prev[0]) / (cpu[1] - self._cpu_prev[1])
        self._cpu_prev = cpu or self._cpu_prev
        try:
            out["load1"] = os.getloadavg()[0]
        except OSError:
            pass
        mem = _meminfo_gb()
        if mem:
            out["mem_used_gb"] = mem[0]
        if self._pids is not None:
            rss, ticks_now, delta = 0, {}, 0
            for pid in pids:
                u = _proc_usage(pid)
                if u is None:
                    continue
                ticks_now[pid] = u[0]
                rss += u[1]
                # Only processes seen last time count towards the rate (a new one's past is not this interval).
                if pid in self._ticks_prev:
                    delta += max(0, u[0] - self._ticks_prev[pid])
            out["job_rss_gb"] = rss / GIB
            if self._t_prev is not None and now > self._t_prev:
                out["job_cpu_cores"] = delta / CLK_TCK / (now - self._t_prev)
            self._ticks_prev = ticks_now
        self._t_prev = now
        return out
