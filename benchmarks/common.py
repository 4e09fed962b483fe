"""Shared pieces of the benchmarks: alternating A/B timing, goals, the result table and its JSON.

Stdlib only at import time (rich is imported when a table is printed), so the GPU mode runs on a
machine that has torch but not hydra, omegaconf or submitit.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"

_GOAL = re.compile(r"^\s*(<=|>=)\s*([0-9.]+)\s*(x|%|[A-Za-z/]+)?\s*$")


@dataclass
class Row:
    """One measurement: A (hpc_ft) against B (the raw baseline), medians of the same alternating run.

    ``goal`` is read by :meth:`verdict`: ``"<= 1.02x"``/``">= 0.4x"`` bound the ratio A/B, ``"<= 40%"``
    the ratio in percent, ``"<= 0.5 s"`` (any unit word) bounds A itself; anything else is report-only.
    """

    name: str
    baseline: str
    median_s: float  # A: hpc_ft (seconds unless ``unit`` says otherwise)
    baseline_median_s: float  # B: the raw tool
    repeats: int
    goal: str
    note: str = ""
    key: str = ""  # stable id (JSON, tests); the name may carry sizes that differ in --quick
    unit: str = "s"
    samples_a: list[float] = field(default_factory=list)
    samples_b: list[float] = field(default_factory=list)
    status: str = ""  # overrides the verdict: "pending", "not available", "error", "n/a", "miss" (imports torch)

    @property
    def ratio(self) -> float:
        if not self.baseline_median_s or self.baseline_median_s != self.baseline_median_s:
            return float("nan")
        return self.median_s / self.baseline_median_s

    def verdict(self) -> str:
        """'pass', 'miss', 'info' (no goal), or the row's status when it has one."""
        if self.status:
            return self.status
        m = _GOAL.match(self.goal or "")
        if not m:
            return "info"
        op, limit, unit = m.group(1), float(m.group(2)), (m.group(3) or "")
        value = self.ratio if unit == "x" else self.ratio * 100 if unit == "%" else self.median_s
        if value != value:  # nan
            return "miss"
        return "pass" if (value <= limit if op == "<=" else value >= limit) else "miss"

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio, "verdict": self.verdict()}

    @classmethod
    def from_dict(cls, d: dict) -> "Row":
        names = {f for f in cls.__dataclass_fields__}  # noqa: C416 - dataclass fields only
        return cls(**{k: v for k, v in d.items() if k in names})


def missing_row(key: str, name: str, status: str, note: str, goal: str = "") -> Row:
    """A row that could not be measured here, kept in the table so its absence is visible."""
    return Row(name, "-", float("nan"), float("nan"), 0, goal, note=note, key=key, status=status)


def rotate(fns: dict[str, Callable[[], float]], repeats: int, warmup: int = 0) -> dict[str, list[float]]:
    """Run every function ``repeats`` times, interleaved; return each one's samples.

    Rounds alternate forward and reverse order (A B C, C B A, ...) so a linear drift in machine speed
    (other load, thermals) lands evenly on every side. ``warmup`` rounds are run and discarded.
    """
    names = list(fns)
    out: dict[str, list[float]] = {n: [] for n in names}
    for i in range(warmup + repeats):
        order = names if i % 2 == 0 else names[::-1]
        for n in order:
            value = fns[n]()
            if i >= warmup:
                out[n].append(value)
    return out


def alternate(a: Callable[[], float], b: Callable[[], float], repeats: int) -> tuple[float, float]:
    """Run A and B alternately ``repeats`` times each (A B, B A, ...); return the two medians."""
    s = rotate({"a": a, "b": b}, repeats)
    return statistics.median(s["a"]), statistics.median(s["b"])


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def run_cmd(argv: list[str], cwd: Path | None = None, env: dict | None = None,
            timeout_s: float = 900) -> subprocess.CompletedProcess:
    """Run a command (argv list, no shell); raise with its output tail if it fails."""
    res = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s,
                         stdin=subprocess.DEVNULL)
    if res.returncode != 0:
        raise RuntimeError(f"{argv} failed ({res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return res


def time_cmd(argv: list[str], cwd: Path | None = None, env: dict | None = None, timeout_s: float = 900) -> float:
    """Wall time of one command; raises if it fails (a failing run is not a measurement)."""
    t0 = time.perf_counter()
    run_cmd(argv, cwd=cwd, env=env, timeout_s=timeout_s)
    return time.perf_counter() - t0


def _fmt(v: float, unit: str) -> str:
    if v != v:
        return "-"
    return f"{v:.3f} s" if unit == "s" else f"{v:.4g} {unit}"


def _cells(r: Row) -> list[str]:
    ratio = "-" if r.ratio != r.ratio else f"{r.ratio:.3f}x"
    return [r.name, r.baseline, _fmt(r.median_s, r.unit), _fmt(r.baseline_median_s, r.unit), ratio,
            r.goal or "-", r.verdict()]


HEADER = ["measurement", "against (B)", "hpc_ft (A) median", "baseline (B) median", "A/B", "goal", "result"]


def markdown_table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "| --- | --- | ---: | ---: | ---: | --- | --- |"]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in _cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def print_table(rows: list[Row], title: str) -> str:
    """Print rows as a markdown table (what the README quotes) and return it."""
    text = f"### {title}\n\n{markdown_table(rows)}"
    print(text)
    return text


def print_rich_table(rows: list[Row], title: str) -> None:
    """The same table for a terminal (rich), notes underneath."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # plain machines: the markdown table says the same
        print_table(rows, title)
        return
    t = Table(title=title, show_lines=False)
    for i, h in enumerate(HEADER):
        t.add_column(h, justify="right" if 2 <= i <= 4 else "left", overflow="fold")
    colors = {"pass": "green", "miss": "bold red", "info": "cyan"}
    for r in rows:
        cells = _cells(r)
        v = r.verdict()
        cells[-1] = f"[{colors.get(v, 'yellow')}]{v}[/]"
        t.add_row(*cells)
    con = Console(highlight=False, width=max(160, Console().width))
    con.print(t)
    for r in rows:
        if r.note:
            con.print(f"  [dim]{r.key or r.name}:[/] {r.note}")


def machine_info() -> dict:
    """Where and when: host, CPUs, load, Python; the load matters on a shared 2-core box."""
    info = {"host": socket.gethostname(), "date": _dt.datetime.now().isoformat(timespec="seconds"),
            "platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "cpu_model": _cpu_model()}
    try:
        info["loadavg_1_5_15"] = list(os.getloadavg())
    except OSError:
        pass
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def default_results_path(suffix: str = "") -> Path:
    return RESULTS_DIR / f"{socket.gethostname()}-{_dt.date.today().isoformat()}{suffix}.json"


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` through a temporary file and os.replace: a killed run never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, payload: dict) -> None:
    """Write results as JSON, atomically."""
    write_text_atomic(path, json.dumps(payload, indent=1, default=str) + "\n")


def group_main(measure: Callable[[bool], list[Row]], title: str, description: str,
               argv: list[str] | None = None) -> int:
    """The command line of one benchmark group: ``--quick``, ``--out JSON``; prints the table."""
    import argparse

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    rows = measure(args.quick)
    print_table(rows, title)
    if args.out:
        write_json(args.out, {"rows": [r.to_dict() for r in rows]})
    return 0
