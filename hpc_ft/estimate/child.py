"""The estimate in a child process, so the login-node commands (dry run, submit, plan) never import torch.

``python -m hpc_ft.estimate.child`` reads a job (``JobSpec.to_yaml``) on standard input and writes its FitReport as
JSON on standard output; a ConfigError is written as ``{"error": ...}``.
"""

from __future__ import annotations

import json
import subprocess
import sys

from hpc_ft.errors import ConfigError, HpcFtError, Problem
from hpc_ft.estimate.model import FitReport
from hpc_ft.job import JobSpec

TIMEOUT_S = 600.0  # tracing a large model on fake tensors takes seconds to a minute


class EstimateFailed(HpcFtError):
    """The estimate could not be made (the child crashed or timed out); the job itself may still be fine."""


def estimate_in_child(spec: JobSpec, timeout_s: float = TIMEOUT_S) -> FitReport:
    """``fit_report(spec)`` computed by ``python -m hpc_ft.estimate.child``.

    Raises ConfigError when the job's model cannot be built, EstimateFailed when the child fails or times out.
    """
    try:
        proc = subprocess.run([sys.executable, "-m", "hpc_ft.estimate.child"], input=spec.to_yaml(),
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise EstimateFailed(f"the memory estimate took longer than {timeout_s:.0f} s") from None
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise EstimateFailed(f"the memory estimate failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}")
    out = json.loads(lines[-1])
    if "problems" in out:
        raise ConfigError([Problem(**p) for p in out["problems"]])
    if "error" in out:
        raise EstimateFailed(out["error"])
    return FitReport.from_dict(out)


def main() -> int:
    import yaml

    from hpc_ft.estimate.fit import fit_report

    spec = JobSpec.from_dict(yaml.safe_load(sys.stdin.read()))
    try:
        report = fit_report(spec)
    except ConfigError as exc:
        print(json.dumps({"problems": [{"key": p.key, "value": str(p.value), "rule": p.rule, "fix": p.fix}
                                       for p in exc.problems]}))
        return 0
    except HpcFtError as exc:
        print(json.dumps({"error": str(exc)}))
        return 0
    print(json.dumps(report.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
