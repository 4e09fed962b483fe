"""Cold start of the login-node commands against importing hpc_ft's three config/dispatch libraries.

``hpc-ft --help``, ``hpc-ft submit dry_run=true``, ``hpc-ft sbatch`` (rendering a batch script into a
temporary run dir), ``hpc-ft status``, ``hpc-ft list`` and each subcommand's ``-h``, each a fresh process, alternated with ``python -c "import hydra, omegaconf, submitit"``.
Goal: at most 0.5 s each, and none imports torch (checked with ``python -X importtime``).
The commands that compose the config run with hpc_ft's compose cache warm (hpc_ft/commands/compose_cache.py: the
second run of a command line onward, as the warm-up makes it); one more row gives the dry run composing afresh
(``HPC_FT_COMPOSE_CACHE=off``: a new command line, or an edited config), for information.

    python benchmarks/bench_coldstart.py [--quick] [--out FILE]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402
    REPO_ROOT, Row, group_main, median, missing_row, rotate, run_cmd)

COLD_GOAL = "<= 0.5 s"
# Commands that compose the config: at most 1.5x the bare import of what they build on (issue 11's goal; the
# ratio holds on a loaded machine where seconds do not).
COMPOSE_GOAL = "<= 1.5x"
GOALS = {"cold.help": COLD_GOAL, "cold.dry_run": COMPOSE_GOAL, "cold.sbatch": COMPOSE_GOAL,
         "cold.dry_run.uncached": "",
         "cold.status": COLD_GOAL, "cold.list": COLD_GOAL,
         **{f"cold.help.{c}": COLD_GOAL for c in ("status", "logs", "cancel", "list", "plan")}}
# A finished 2-node run dir from the repository's test data: what `hpc-ft status` and `hpc-ft list` read here.
# (Found by glob: its folder under tests/ shares a name with a run dir's report/, which the path check guards.)
SAMPLE_RUN = next(REPO_ROOT.glob("tests/*/data/run_e5bbae0"), REPO_ROOT / "missing")
UNCACHED = {"cold.dry_run.uncached"}
BASELINE_ARGV = [sys.executable, "-c", "import hydra, omegaconf, submitit"]


def hpc_ft_argv() -> list[str]:
    exe = Path(sys.executable).with_name("hpc-ft")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "hpc_ft.cli"]


def imported_modules(argv: list[str], env: dict[str, str]) -> set[str]:
    """Top-level module names a command imports (``-X importtime`` via PYTHONPROFILEIMPORTTIME)."""
    res = run_cmd(argv, env={**env, "PYTHONPROFILEIMPORTTIME": "1"})
    mods = set()
    for line in res.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            mods.add(name.split(".")[0])
    return mods


def commands(tmp: Path) -> dict[str, tuple[str, list[str]] | None]:
    """key -> (label, argv); None where the command does not exist yet in this checkout. (Keys in ``UNCACHED``
    run with the compose cache off.)"""
    hp = hpc_ft_argv()
    out: dict[str, tuple[str, list[str]] | None] = {
        "cold.help": ("`hpc-ft --help`", [*hp, "--help"]),
        "cold.dry_run": ("`hpc-ft submit dry_run=true` (default job)",
                         [*hp, "submit", "dry_run=true", f"hydra.run.dir={tmp / 'dry'}"]),
        "cold.dry_run.uncached": ("`hpc-ft submit dry_run=true` composing afresh (`HPC_FT_COMPOSE_CACHE=off`)",
                                  [*hp, "submit", "dry_run=true", f"hydra.run.dir={tmp / 'dry'}"]),
    }
    has_sbatch = (REPO_ROOT / "hpc_ft" / "submit" / "sbatch.py").exists()
    out["cold.sbatch"] = (("`hpc-ft sbatch executor=slurm` (render job.sbatch into a temp run dir)",
                           [*hp, "sbatch", "executor=slurm", f"hydra.run.dir={tmp / 'sbatch'}"])
                          if has_sbatch else None)
    if SAMPLE_RUN.is_dir():
        import shutil

        run = tmp / "runs" / "sample"
        if not run.exists():
            shutil.copytree(SAMPLE_RUN, run)
        out["cold.status"] = ("`hpc-ft status RUN_DIR` (a finished 2-node run)", [*hp, "status", str(run)])
        out["cold.list"] = ("`hpc-ft list DIR` (one run below)", [*hp, "list", str(tmp / "runs")])
    for c in ("status", "logs", "cancel", "list", "plan"):
        out[f"cold.help.{c}"] = (f"`hpc-ft {c} -h`", [*hp, c, "-h"])
    return out


def measure(quick: bool = False) -> list[Row]:
    repeats = 2 if quick else 15
    tmp = Path(tempfile.mkdtemp(prefix="hpc_ft-bench-cold-"))
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "0", "HPC_FT_CACHE_DIR": str(tmp / "compose-cache")}
    env.pop("HPC_FT_COMPOSE_CACHE", None)
    cmds = commands(tmp)

    def timer(argv: list[str], key: str = ""):
        run_env = {**env, "HPC_FT_COMPOSE_CACHE": "off"} if key in UNCACHED else env

        def run() -> float:
            t0 = time.perf_counter()
            run_cmd(argv, env=run_env, cwd=tmp)
            return time.perf_counter() - t0
        return run

    fns = {"base": timer(BASELINE_ARGV)}
    fns.update({k: timer(v[1], k) for k, v in cmds.items() if v})
    s = rotate(fns, repeats, warmup=0 if quick else 1)  # warm-up: page cache and .pyc files, as on a 2nd call
    rows = []
    for key, cmd in cmds.items():
        if cmd is None:
            rows.append(missing_row(key, "`hpc-ft sbatch` cold start", "pending",
                                    "hpc_ft/submit/sbatch.py is not in this checkout yet", COLD_GOAL))
            continue
        label, argv = cmd
        torch_in = "torch" in imported_modules(argv, env)
        rows.append(Row(f"cold start {label}", '`python -c "import hydra, omegaconf, submitit"`',
                        median(s[key]), median(s["base"]), repeats, GOALS[key], key=key,
                        samples_a=s[key], samples_b=s["base"],
                        status="miss" if torch_in else "",
                        note="IMPORTS TORCH" if torch_in else "torch not imported"))
    return rows


def main(argv: list[str] | None = None) -> int:
    return group_main(measure, "Cold start", __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
