"""A standalone sbatch script for a job (``hpc-ft sbatch``): pure rendering, then an atomic write.

The script asks for the same resources as executor=slurm (``hpc_ft.submit.slurm.sbatch_options``) and
starts one ``hpc_ft.node.entry`` task per node, which runs the same torchrun as the NodeTask and
leaves ``nodes/node{r}/node_report.json`` in the run dir for ``hpc-ft report``. Every value reaches the template
already shell-quoted; values that a ``#SBATCH`` line cannot hold are rejected before rendering.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Any

from hpc_ft.job import JobSpec
from hpc_ft.rundir.atomic import atomic_write_text
from hpc_ft.rundir.layout import RunDir
from hpc_ft.rundir.spec import spec_path
from hpc_ft.submit.slurm import check_sbatch_values, env_exports, sbatch_options

TEMPLATE = "job.sbatch.j2"


def sbatch_directives(spec: JobSpec) -> list[str]:
    """``--option=value`` strings for the ``#SBATCH`` lines, each value quoted (sbatch parses shell quoting)."""
    out = []
    for key, value in sbatch_options(spec).items():
        out.append(f"--{key}" if value is True else f"--{key}={shlex.quote(str(value))}")
    # %j: one log per Slurm job id; append, so a requeued run continues the same file.
    out.append(f"--output={shlex.quote(str(RunDir.of(spec).slurm_log))}")
    out.append("--open-mode=append")
    return out


def sbatch_context(spec: JobSpec, python: str | None = None, script_path: Path | None = None) -> dict[str, Any]:
    """Everything the template shows, already shell-quoted (the template quotes nothing itself)."""
    check_sbatch_values(spec)
    return {
        "directives": sbatch_directives(spec),
        "setup": list(spec.conf.executor.setup),  # the user's own shell lines, run as written (documented)
        "exports": env_exports(spec),
        "python": shlex.quote(python or sys.executable),
        "spec_path": shlex.quote(str(spec_path(spec))),
        "script_path": shlex.quote(str(script_path or RunDir.of(spec).sbatch_script)),
    }


def render_sbatch(spec: JobSpec, python: str | None = None, script_path: Path | None = None) -> str:
    """The batch script text for ``spec``; pure (no file, no Slurm). Raises ConfigError on unsafe values."""
    import jinja2

    from hpc_ft import TEMPLATES_DIR

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)), undefined=jinja2.StrictUndefined,
                             autoescape=False, keep_trailing_newline=True)
    return env.get_template(TEMPLATE).render(**sbatch_context(spec, python, script_path))


def write_sbatch(spec: JobSpec, path: Path, python: str | None = None) -> Path:
    """Render and write the script atomically (executable); returns its path."""
    path = Path(path)
    text = render_sbatch(spec, python, script_path=path)
    atomic_write_text(path, text)
    os.chmod(path, 0o755)
    return path
