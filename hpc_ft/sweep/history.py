"""Earlier runs as duration records for hpc_ft.sched.durations: read from run or sweep directories.

A run dir holds job.yaml (overrides, resources) and one NodeReport per node (``hpc_ft.rundir.layout``); a sweep
dir holds run dirs. Unreadable or unfinished runs are skipped: history only refines estimates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hpc_ft.config.renames import upgrade_override
from hpc_ft.errors import ConfigError, Problem
from hpc_ft.rundir.layout import RunDir, SweepDir
from hpc_ft.rundir.records import NodeReport


def run_record(run_dir: Path) -> dict[str, Any] | None:
    """{overrides, wall_s, gpus, ok} of one finished run (wall_s: its slowest node), or None."""
    rd = RunDir(run_dir)
    try:
        spec = yaml.safe_load(rd.spec.read_text())  # plain YAML: no Hydra/OmegaConf for a duration estimate
        reports = [NodeReport.load(rd.node_report(r)) for r in sorted(rd.node_ranks())
                   if rd.node_report(r).exists()]
    except (OSError, ValueError, yaml.YAMLError):  # RecordError is a ValueError
        return None
    if not reports or not isinstance(spec, dict):
        return None
    res = (spec.get("conf") or {}).get("resources") or {}
    gpus = int(res.get("nodes", 1)) * int(res.get("gpus_per_node") or 0) or None
    return {"overrides": [upgrade_override(o) for o in spec.get("overrides") or []],  # as keys are named today
            "wall_s": max(float(r.wall_s or 0) for r in reports), "gpus": gpus, "ok": all(r.ok for r in reports)}


def load_history(dirs: list[str]) -> list[dict[str, Any]]:
    """Records of every finished run under ``dirs`` (each a run dir or a sweep dir of run dirs)."""
    missing = [d for d in dirs if not Path(d).expanduser().is_dir()]
    if missing:
        raise ConfigError([Problem("sched.history", d, "is not a directory",
                                   "pass earlier run or sweep dirs, e.g. sched.history=[multirun/2024-01-01/10-00-00]")
                           for d in missing])
    out = []
    for d in dirs:
        root = Path(d).expanduser()
        for run_dir in SweepDir(root).run_dirs_anywhere():
            rec = run_record(run_dir)
            if rec is not None:
                out.append(rec)
    return out


def sacct_queue_estimate(days: int = 7, servers: int | None = None, timeout_s: float = 15.0):
    """M/M/c wait estimate from the cluster's recent jobs (``sacct``); (None, reason) when unavailable."""
    import shutil
    import subprocess

    from hpc_ft.errors import HpcFtError
    from hpc_ft.sched import SACCT_ARGS, estimate_from_history, parse_sacct
    from hpc_ft.sched.queueing import sacct_failure_reason

    if shutil.which("sacct") is None:
        return None, "no queue-wait estimate: sacct is not on PATH"
    argv = [*SACCT_ARGS, "-a", "-S", f"now-{int(days)}days"]
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"no queue-wait estimate: sacct failed ({exc})"
    if res.returncode != 0:
        return None, f"no queue-wait estimate: {sacct_failure_reason(res.returncode, res.stderr)}"
    try:
        return estimate_from_history(parse_sacct(res.stdout), servers=servers), ""
    except HpcFtError as exc:
        why = "; ".join(p.rule for p in getattr(exc, "problems", [])) or str(exc)
        return None, f"no queue-wait estimate from the last {days} days of sacct: {why}"
