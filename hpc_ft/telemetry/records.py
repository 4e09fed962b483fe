"""The per-node telemetry series file: a JSON header line, then fixed-size little-endian binary records.

Why binary: a 64-node x 24 h run at 1 Hz is 5.5 million node samples; fixed-size records are appended with
one ``write`` each (a killed node leaves whole records plus at most one torn record, which the reader
drops), are about a tenth of the size of JSON lines, and stream back through numpy in large chunks at
disk speed. The header names every column, so the file is self-describing.

Layout: ``HPCFT-TS1 {json header}\\n`` then records of ``header["columns"]`` (``t`` float64 Unix time,
every other column float32, NaN = missing). GPU columns are ``g{slot}.{metric}``.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any, Iterator

import numpy as np

MAGIC = b"HPCFT-TS1 "
HOST_METRICS = ("cost_ms", "cpu_util_pct", "load1", "mem_used_gb", "job_rss_gb", "job_cpu_cores")
GPU_METRICS = ("util_pct", "mem_util_pct", "mem_used_gb", "power_w", "energy_j", "temp_c", "sm_clock_mhz",
               "job_mem_gb")
CHUNK_ROWS = 65536  # ~20 MB per chunk for 8 GPUs: large enough for numpy, small enough to stream
GIB = 2**30  # memory columns (``*_gb``) are GiB, as Slurm's --mem=NG and resources.mem_gb mean


def gpu_col(slot: int, metric: str) -> str:
    """The column of ``metric`` for the GPU in sampling slot ``slot`` (``g0.util_pct``)."""
    return f"g{slot}.{metric}"


def columns(n_gpus: int) -> list[str]:
    """Every column of a node with ``n_gpus`` sampled GPUs, in record order."""
    return ["t", *HOST_METRICS, *(gpu_col(s, m) for s in range(n_gpus) for m in GPU_METRICS)]


def record_dtype(cols: list[str]) -> np.dtype:
    """The numpy record layout of ``cols``: ``t`` float64, everything else float32."""
    return np.dtype([(c, "<f8" if c == "t" else "<f4") for c in cols])


def encode_header(header: dict[str, Any]) -> bytes:
    return MAGIC + json.dumps(header, separators=(",", ":"), allow_nan=False).encode() + b"\n"


class SeriesWriter:
    """Appends one record per sample; each record reaches the kernel in a single unbuffered write."""

    def __init__(self, path: Path, header: dict[str, Any]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.cols = columns(len(header.get("gpus", [])))
        header = {**header, "columns": self.cols}
        self.dtype = record_dtype(self.cols)
        self._pack = struct.Struct("<d" + "f" * (len(self.cols) - 1)).pack
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        os.write(self._fd, encode_header(header))

    def append(self, values: dict[str, float]) -> None:
        """Write one record; columns absent from ``values`` are NaN (missing)."""
        nan = float("nan")
        os.write(self._fd, self._pack(*(values.get(c, nan) for c in self.cols)))

    def close(self) -> None:
        """Close the file (records are already on the kernel's side: nothing to flush)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class SeriesFile:
    """A series file opened for reading: its header, row count, and chunks of records as numpy arrays."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            line = f.readline()
        if not line.startswith(MAGIC) or not line.endswith(b"\n"):
            raise ValueError(f"{self.path}: not an hpc_ft telemetry series (bad or torn header)")
        self.header: dict[str, Any] = json.loads(line[len(MAGIC):])
        self.cols: list[str] = self.header["columns"]
        self.dtype = record_dtype(self.cols)
        self.offset = len(line)
        size = self.path.stat().st_size
        # A node killed mid-write leaves a torn last record: count whole records only.
        self.rows = max(0, size - self.offset) // self.dtype.itemsize

    @property
    def n_gpus(self) -> int:
        return len(self.header.get("gpus", []))

    def chunks(self, chunk_rows: int = CHUNK_ROWS) -> Iterator[np.ndarray]:
        """Yield the records in order, ``chunk_rows`` at a time (never the whole file at once)."""
        size = self.dtype.itemsize
        with open(self.path, "rb", buffering=0) as f:
            f.seek(self.offset)
            left = self.rows
            while left > 0:
                buf = f.read(min(chunk_rows, left) * size)
                n = len(buf) // size
                if n == 0:
                    break
                left -= n
                yield np.frombuffer(buf, dtype=self.dtype, count=n)

    def read(self) -> np.ndarray:
        """All whole records at once (analysis of one node; the report streams with ``chunks``)."""
        parts = list(self.chunks())
        return np.concatenate(parts) if parts else np.zeros(0, dtype=self.dtype)


def read_series(path: str | os.PathLike) -> tuple[dict[str, Any], np.ndarray]:
    """The header and every whole record of one series file (a torn last record is skipped)."""
    sf = SeriesFile(path)
    return sf.header, sf.read()

