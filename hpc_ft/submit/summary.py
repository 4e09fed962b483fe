"""The per-node results table printed after a job: pure rendering of NodeReports."""

from __future__ import annotations

from typing import Any

from hpc_ft.job import JobSpec
from hpc_ft.node.payload import is_script
from hpc_ft.rundir.layout import RunDir
from hpc_ft.rundir.records import NodeReport, TrainResult


def _fmt(v: Any, spec: str = "") -> str:
    if v is None or v == "":
        return "-"
    return format(v, spec) if spec and isinstance(v, (int, float)) else str(v)


def _eval_line(t: TrainResult) -> str:
    """Classification as it always read (accuracy against the majority baseline); other tasks their metrics; a run
    that left none (it failed before evaluating) ``eval: -``, whatever its task."""
    if t.metric("eval_accuracy") is not None:
        return (f"eval accuracy: {_fmt(t.metric('eval_accuracy'), '.3f')} "
                f"(majority baseline {_fmt(t.metric('majority_accuracy'), '.3f')})")
    return t.eval_summary() if t.metrics else "eval: -"


class Fields:
    """``label: value`` fields on one line, three spaces apart, broken between fields only when the console is
    narrower than the line: rich's word wrap would part a label from its value (``precision:`` at the end of one
    line, ``bf16`` on the next). A field wider than the console wraps on its own line as any text does."""

    SEP = "   "

    def __init__(self, *fields: str) -> None:
        self.fields = [f for f in fields if f]

    def __rich_console__(self, console, options):
        from rich.cells import cell_len
        from rich.text import Text

        lines: list[str] = []
        for f in self.fields:
            if lines and cell_len(lines[-1] + self.SEP + f) <= options.max_width:
                lines[-1] += self.SEP + f
            else:
                lines.append(f)
        yield Text("\n".join(lines))


def render_results(spec: JobSpec, reports: list[NodeReport]):
    """A rich renderable: per-node table, final loss, eval accuracy, run dir, failed nodes' error tails."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{spec.conf.run.name}: {len(reports)} node(s)")
    for col in ("node", "host", "exit", "wall s", "steps", "samples/s"):
        table.add_column(col, justify="right" if col not in ("host",) else "left")
    for r in reports:
        t = r.train or TrainResult(steps=None)  # no result: every figure shows "-"
        status = "ok" if r.ok else ("preempted" if r.resumable else str(r.exit_code))
        table.add_row(str(r.node_rank), r.host, status, _fmt(r.wall_s, ".1f"), _fmt(t.steps),
                      _fmt(t.samples_per_s, ".1f"))
    first = next((r.train for r in reports if r.train), None) or TrainResult(steps=None)
    if is_script(spec):
        # A script's own metrics by the names it reported (hpc_ft.script_api.report): no eval accuracy or precision
        # line, which are the loop's and would read "-" for every script.
        lines = [table, Fields(f"final train loss: {_fmt(first.final_loss, '.4f')}",
                               f"world size: {_fmt(first.world_size or spec.world_size)}"),
                 Text("script metrics: " + (", ".join(f"{k} {_fmt(v, '.4g')}" for k, v in first.metrics.items())
                                            or "none reported"))]
    else:
        lines = [table,
                 Fields(f"final train loss: {_fmt(first.final_loss, '.4f')}", _eval_line(first),
                        f"precision: {_fmt(first.precision)}", f"world size: {_fmt(first.world_size)}"),
                 *([Text(f"precision: {first.precision_reason}")] if first.precision_reason else [])]
    lines.append(Text(f"run dir: {spec.run_dir}"))
    for r in reports:
        if not r.ok and not r.resumable and r.error_tail:
            lines.append(Text(f"--- node {r.node_rank} (exit {r.exit_code}) error output, last lines:\n"
                              f"{r.error_tail.rstrip()}", style="red"))
    if all_preempted(reports):
        lines.append(Text(preempted_notice(spec, reports), style="yellow"))  # the command follows (cli)
    return Group(*lines)


def all_preempted(reports: list[NodeReport]) -> bool:
    """Every node stopped at the preemption checkpoint (or finished): the run is resumable, not failed."""
    return bool(reports) and all(r.ok or r.resumable for r in reports) and any(r.resumable for r in reports)


def hydra_value(text: str) -> str:
    """``text`` as a Hydra override value: as is when plain, else single-quoted with Hydra's escapes."""
    import re

    if re.fullmatch(r"[\w./+:@-]+", text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def resume_command(spec: JobSpec) -> str:
    """The shell command that resumes this run in its run dir: the same overrides, the run dir pinned."""
    import shlex

    overrides = [o for o in spec.overrides if not o.startswith(("hydra.run.dir=", "run.dir="))]
    return shlex.join(["hpc-ft", "submit", *overrides, f"hydra.run.dir={hydra_value(str(spec.run_dir))}"])


def preempted_notice(spec: JobSpec, reports: list[NodeReport]) -> str:
    """What happened to a preempted run and how to resume it (not a failure: the checkpoint is complete)."""
    step = max((r.train.steps or 0 for r in reports if r.resumable and r.train), default=0)
    if is_script(spec):  # the script keeps its own checkpoint and knows its own number of steps
        return (f"preempted at step {step}: the script asked to be requeued (exit 75) after its checkpoint. "
                f"Not a failure; run it again in the same run dir with:")
    return (f"preempted at step {step} of {spec.conf.train.max_steps}: every rank stopped there and the checkpoint "
            f"is saved in {RunDir.of(spec).checkpoints}. Not a failure; resume at that step with:")
