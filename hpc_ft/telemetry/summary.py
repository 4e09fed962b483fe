"""Streaming statistics in bounded memory, shared by the sampler (one sample at a time) and the report
(numpy chunks of a series file), so both compute the same numbers the same way.

- ``QuantileSketch``: log-spaced buckets (the DDSketch idea); every quantile estimate is within
  ``ALPHA`` (0.5 %) of the true value, in a fixed ~2,500-bucket array whatever the run length.
- ``Stat``: count, sum, min, max and a sketch of one metric; NaN (missing) samples are skipped.
- ``NodeSummary``: the per-node summary (host, every GPU, idle fraction, energy) of a sample stream.
- ``Downsampler`` / ``BucketMeans``: the bounded series (bucket means) for NodeReports and plots.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import numpy as np

from hpc_ft.telemetry.records import GPU_METRICS, HOST_METRICS, gpu_col

ALPHA = 0.005  # relative accuracy of quantiles
GAMMA = (1 + ALPHA) / (1 - ALPHA)
LN_GAMMA = math.log(GAMMA)
MIN_POSITIVE = 1e-4  # at or below: the zero bucket (utilization 0 %, no job memory)
MAX_VALUE = 1e7  # above: clamped into the top bucket (no metric we sketch gets near)
_I_MIN = math.ceil(math.log(MIN_POSITIVE) / LN_GAMMA)
_I_MAX = math.ceil(math.log(MAX_VALUE) / LN_GAMMA)
N_BUCKETS = _I_MAX - _I_MIN + 2  # bucket 0 holds zeros
QUANTILES = {"p50": 0.50, "p95": 0.95}
CUMULATIVE = ("energy_j",)  # counters since the segment began: their maximum matters, not their spread
J_PER_KWH = 3.6e6


def _clean(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


class QuantileSketch:
    """Quantiles of a stream of non-negative values with relative error <= ALPHA, in fixed memory."""

    __slots__ = ("counts", "n")

    def __init__(self) -> None:
        self.counts = np.zeros(N_BUCKETS, dtype=np.int64)
        self.n = 0

    @staticmethod
    def _index(x: float) -> int:
        if x <= MIN_POSITIVE:
            return 0
        i = min(math.ceil(math.log(x) / LN_GAMMA), _I_MAX)
        return i - _I_MIN + 1

    def add(self, x: float) -> None:
        self.counts[self._index(x)] += 1
        self.n += 1

    def add_many(self, xs: np.ndarray) -> None:
        """Add finite values (the caller drops NaN)."""
        if len(xs) == 0:
            return
        xs = np.asarray(xs, dtype=np.float64)
        idx = np.zeros(len(xs), dtype=np.int64)
        pos = xs > MIN_POSITIVE
        if pos.any():
            i = np.ceil(np.log(xs[pos]) / LN_GAMMA).astype(np.int64)
            idx[pos] = np.clip(i, _I_MIN, _I_MAX) - _I_MIN + 1
        self.counts += np.bincount(idx, minlength=N_BUCKETS)
        self.n += len(xs)

    def merge(self, other: "QuantileSketch") -> None:
        self.counts += other.counts
        self.n += other.n

    def quantile(self, q: float) -> float:
        """The value at rank floor(q * (n - 1)) of the sorted stream, within ALPHA; NaN when empty."""
        if self.n == 0:
            return math.nan
        k = math.floor(q * (self.n - 1))
        b = int(np.searchsorted(np.cumsum(self.counts), k, side="right"))
        if b == 0:
            return 0.0
        i = b - 1 + _I_MIN
        return 2 * GAMMA**i / (GAMMA + 1)


class Stat:
    """Count, mean, min, max and quantiles of one metric; NaN samples count as missing."""

    __slots__ = ("n", "total", "lo", "hi", "sketch")

    def __init__(self, sketch: bool = True) -> None:
        self.n = 0
        self.total = 0.0
        self.lo = math.inf
        self.hi = -math.inf
        self.sketch = QuantileSketch() if sketch else None

    def add(self, x: float) -> None:
        if x is None or x != x:  # NaN: missing
            return
        self.n += 1
        self.total += x
        if x < self.lo:
            self.lo = x
        if x > self.hi:
            self.hi = x
        if self.sketch is not None:
            self.sketch.add(x)

    def add_many(self, xs: np.ndarray) -> None:
        xs = xs[~np.isnan(xs)]
        if len(xs) == 0:
            return
        self.n += len(xs)
        self.total += float(xs.sum(dtype=np.float64))
        self.lo = min(self.lo, float(xs.min()))
        self.hi = max(self.hi, float(xs.max()))
        if self.sketch is not None:
            self.sketch.add_many(xs)

    def merge(self, other: "Stat") -> None:
        self.n += other.n
        self.total += other.total
        self.lo = min(self.lo, other.lo)
        self.hi = max(self.hi, other.hi)
        if self.sketch is not None and other.sketch is not None:
            self.sketch.merge(other.sketch)

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else math.nan

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"n": self.n, "mean": _clean(self.mean), "min": _clean(self.lo), "max": _clean(self.hi)}
        if self.sketch is not None:
            for name, q in QUANTILES.items():
                d[name] = _clean(self.sketch.quantile(q))
        return d


class NodeSummary:
    """The streaming summary of one node's samples: host metrics, and per GPU its metrics, idle fraction
    and energy. Fed one sample (``add_row``) or a chunk of records (``add_chunk``); memory is fixed."""

    def __init__(self, gpus: list[Mapping[str, Any]], idle_util_pct: float, interval_s: float,
                 host: Mapping[str, Any] | None = None):
        self.gpus = [dict(g) for g in gpus]  # static facts per GPU (name, uuid, mem_total_gb, power_limit_w)
        self.host_info = dict(host or {})  # static facts of the host (name, cpus, mem_total_gb)
        self.idle_util_pct = idle_util_pct
        self.interval_s = interval_s
        self.samples = 0
        self.t_first = math.inf  # this segment's first and last sample
        self.t_last = -math.inf
        self.t_start = math.inf  # over every merged segment
        self.t_end = -math.inf
        self.earlier_s = 0.0  # duration of segments merged in
        self.host = {m: Stat() for m in HOST_METRICS}
        self.gpu = [self._gpu_stats() for _ in gpus]
        self.idle = [0] * len(gpus)
        # Energy columns are cumulative from the segment's start: keep the segment's maximum, plus the
        # totals of earlier segments merged in (a requeued node).
        self.energy_max_j = [math.nan] * len(gpus)
        self.energy_earlier_j = [0.0] * len(gpus)

    @staticmethod
    def _gpu_stats() -> dict[str, Stat]:
        return {m: Stat() for m in GPU_METRICS if m not in CUMULATIVE}

    def add_row(self, row: Mapping[str, float]) -> None:
        t = row["t"]
        self.samples += 1
        self.t_first = min(self.t_first, t)
        self.t_last = max(self.t_last, t)
        self.t_start = min(self.t_start, t)
        self.t_end = max(self.t_end, t)
        for m, st in self.host.items():
            st.add(row.get(m, math.nan))
        for s, stats in enumerate(self.gpu):
            for m, st in stats.items():
                st.add(row.get(gpu_col(s, m), math.nan))
            u = row.get(gpu_col(s, "util_pct"), math.nan)
            if u == u and u < self.idle_util_pct:
                self.idle[s] += 1
            e = row.get(gpu_col(s, "energy_j"), math.nan)
            if e == e and not e <= self.energy_max_j[s]:
                self.energy_max_j[s] = e

    def add_chunk(self, rec: np.ndarray) -> None:
        if len(rec) == 0:
            return
        self.samples += len(rec)
        t = rec["t"]
        self.t_first = min(self.t_first, float(t.min()))
        self.t_last = max(self.t_last, float(t.max()))
        self.t_start = min(self.t_start, self.t_first)
        self.t_end = max(self.t_end, self.t_last)
        for m, st in self.host.items():
            st.add_many(rec[m])
        for s, stats in enumerate(self.gpu):
            for m, st in stats.items():
                st.add_many(rec[gpu_col(s, m)])
            self.idle[s] += int(np.count_nonzero(rec[gpu_col(s, "util_pct")] < self.idle_util_pct))
            e = rec[gpu_col(s, "energy_j")]
            e = e[~np.isnan(e)]
            if len(e) and not float(e.max()) <= self.energy_max_j[s]:
                self.energy_max_j[s] = float(e.max())

    def merge(self, other: "NodeSummary") -> None:
        """Add another segment of the same node (a requeue); GPUs are matched by slot."""
        self.samples += other.samples
        self.earlier_s += other.duration_s()  # the gap between segments (queueing) is not run time
        self.t_start = min(self.t_start, other.t_start)
        self.t_end = max(self.t_end, other.t_end)
        for m, st in self.host.items():
            st.merge(other.host[m])
        for s in range(len(other.gpu)):
            if s >= len(self.gpu):
                self.gpus.append(dict(other.gpus[s]))
                self.gpu.append(self._gpu_stats())
                self.idle.append(0)
                self.energy_max_j.append(math.nan)
                self.energy_earlier_j.append(0.0)
            for m, st in self.gpu[s].items():
                st.merge(other.gpu[s][m])
            self.idle[s] += other.idle[s]
            self.energy_earlier_j[s] += other.energy_j(s) if other.energy_j(s) == other.energy_j(s) else 0.0

    def energy_j(self, s: int) -> float:
        """GPU ``s``'s energy over every segment seen (NaN when never measured)."""
        cur = self.energy_max_j[s]
        if cur != cur:
            return self.energy_earlier_j[s] if self.energy_earlier_j[s] else math.nan
        return self.energy_earlier_j[s] + cur

    def duration_s(self) -> float:
        """Sampled run time: each sample stands for one interval (the span alone would drop the last)."""
        own = self.t_last - self.t_first + self.interval_s if self.t_last >= self.t_first else 0.0
        return self.earlier_s + own

    def to_dict(self) -> dict[str, Any]:
        gpus = []
        total_kwh, any_energy = 0.0, False
        for s, stats in enumerate(self.gpu):
            util = stats["util_pct"]
            e_j = self.energy_j(s)
            source = "counter" if e_j == e_j else None
            if source is None and stats["power_w"].n:
                # No energy counter (older GPUs): integrate the sampled power instead.
                e_j, source = stats["power_w"].total * self.interval_s, "power"
            energy_kwh = e_j / J_PER_KWH if source else None
            if energy_kwh is not None:
                total_kwh += energy_kwh
                any_energy = True
            g = {**self.gpus[s], **{m: st.to_dict() for m, st in stats.items()},
                 "idle_fraction": (self.idle[s] / util.n) if util.n else None,
                 "energy_kwh": energy_kwh,
                 "energy_source": source,
                 "missing": [m for m, st in stats.items() if st.n == 0] + ([] if source == "counter" else ["energy_j"]),
                 "gaps": [m for m, st in stats.items() if 0 < st.n < self.samples]}
            gpus.append(g)
        cost = self.host["cost_ms"]
        return {
            "samples": self.samples,
            "interval_s": self.interval_s,
            "idle_util_pct": self.idle_util_pct,
            "t_start": _clean(self.t_start),
            "t_end": _clean(self.t_end),
            "duration_s": self.duration_s(),
            "host_info": self.host_info,
            "host": {m: st.to_dict() for m, st in self.host.items() if m != "cost_ms"},
            "gpus": gpus,
            "energy_kwh": total_kwh if any_energy else None,
            "sampler": {"mean_cost_ms": _clean(cost.mean), "max_cost_ms": _clean(cost.hi),
                        "duty_pct": _clean(100 * cost.mean / 1000 / self.interval_s) if cost.n else None},
        }


class Downsampler:
    """Bucket means of a stream of unknown length in at most ``max_points`` points: when full, adjacent
    buckets merge pairwise and the bucket size doubles."""

    def __init__(self, cols: list[str], max_points: int):
        if max_points < 2:
            raise ValueError("max_points must be at least 2")
        self.cols = list(cols)
        self.max_points = max_points
        self.k = 1  # samples per full bucket
        self.sums = np.zeros((max_points, len(cols)))
        self.counts = np.zeros((max_points, len(cols)), dtype=np.int64)
        self.sizes = np.zeros(max_points, dtype=np.int64)
        self.used = 0
        self._open = False

    def add(self, values: Iterable[float]) -> None:
        v = np.fromiter(values, dtype=np.float64, count=len(self.cols))
        ok = ~np.isnan(v)
        if self._open and self.sizes[self.used - 1] >= self.k:
            self._open = False
        if not self._open:
            if self.used == self.max_points:
                self._compact()
            self.used += 1
            self._open = True
        i = self.used - 1
        self.sums[i, ok] += v[ok]
        self.counts[i, ok] += 1
        self.sizes[i] += 1

    def _compact(self) -> None:
        m = self.used // 2
        for arr in (self.sums, self.counts, self.sizes):
            merged = arr[0:2 * m:2] + arr[1:2 * m:2]
            odd = arr[2 * m:self.used].copy()
            arr[:] = 0
            arr[:m] = merged
            arr[m:m + len(odd)] = odd
        self.used = m + (self.used - 2 * m)
        self.k *= 2

    def series(self) -> dict[str, list[float | None]]:
        return _means(self.cols, self.sums[:self.used], self.counts[:self.used])


class BucketMeans:
    """Bucket means of a series whose length is known up front (a file), fed chunk by chunk."""

    def __init__(self, cols: list[str], total_rows: int, max_points: int):
        self.cols = list(cols)
        self.k = max(1, math.ceil(total_rows / max(max_points, 1)))
        n = max(1, math.ceil(total_rows / self.k))
        self.sums = np.zeros((n, len(cols)))
        self.counts = np.zeros((n, len(cols)), dtype=np.int64)
        self.row = 0

    def add_chunk(self, rec: np.ndarray) -> None:
        ids = (np.arange(self.row, self.row + len(rec)) // self.k)
        self.row += len(rec)
        base = int(ids[0]) if len(ids) else 0
        ids = ids - base
        width = int(ids[-1]) + 1 if len(ids) else 0
        for j, c in enumerate(self.cols):
            x = rec[c].astype(np.float64)
            ok = ~np.isnan(x)
            self.sums[base:base + width, j] += np.bincount(ids[ok], weights=x[ok], minlength=width)
            self.counts[base:base + width, j] += np.bincount(ids[ok], minlength=width)

    def series(self) -> dict[str, list[float | None]]:
        used = math.ceil(self.row / self.k)
        return _means(self.cols, self.sums[:used], self.counts[:used])


def _means(cols: list[str], sums: np.ndarray, counts: np.ndarray) -> dict[str, list[float | None]]:
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts
    out: dict[str, list[float | None]] = {}
    for j, c in enumerate(cols):
        col = means[:, j]
        out[c] = [None if not math.isfinite(x) else float(x) for x in col.tolist()]
    return out
