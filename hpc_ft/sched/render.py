"""Plan rendering: a plain-text table for the terminal and JSON for tools. Pure (returns strings).

Plain text rather than rich: 1,000 rows render in milliseconds, and the output is the same on any terminal.
"""

from __future__ import annotations

import json

from hpc_ft.sched.model import Plan, QueueEstimate


def num(x: float, fmt: str) -> str:
    """``format(x, fmt)`` without a negative zero ("-0.00" reads as a loss where there is none)."""
    s = format(x, fmt)
    if s.startswith("-") and not any(c in "123456789" for c in s.split("e")[0]):
        return s[1:]
    return s


def _opt(x, fmt: str = "g") -> str:
    return "-" if x is None else num(x, fmt)


def wait_line(wait: QueueEstimate) -> str:
    if not wait.stable:
        return (f"wait before start: unbounded (M/M/c with c={wait.c}, rho={wait.rho:.3g} >= 1: "
                "jobs arrive faster than they finish)")
    seen = "" if wait.observed_wq_h is None else f", observed {wait.observed_wq_h:.3g} h"
    return (f"wait before start: {wait.wq_h:.3g} h expected (M/M/c, c={wait.c}, rho={wait.rho:.3g}, "
            f"P(wait)={wait.p_wait:.3g}{seen})")


def plan_table(plan: Plan) -> str:
    """The plan as text: a summary, one row per job in submission order, the assumptions."""
    b, u = plan.budget, plan.unit  # u: GPU, or node for a CPU-only sweep
    head = [f"sweep plan: {len(plan.assignments)} jobs, policy={plan.policy}"
            + (f" (objective={plan.objective})" if plan.objective else "")
            + f", order={plan.order_policy}, array parallelism {plan.array_parallelism}",
            f"budget: {_opt(b.gpus)} {u}{'' if b.gpus == 1 else 's'} at once, {_opt(b.gpu_hours)} {u}-hours, money {_opt(b.money)} "
            f"at {num(b.price_per_gpu_hour, 'g')} per {u}-hour",
            f"predicted: makespan {num(plan.makespan_h, '.3f')} h (lower bound {num(plan.lower_bound_h, '.3f')} h), "
            f"utilization {num(100 * plan.utilization, '.1f')}%, {num(plan.gpu_hours, '.3f')} {u}-hours, "
            f"cost {num(plan.cost, '.2f')}"]
    if plan.wait is not None:
        head.append(wait_line(plan.wait))
    cols = ["#", "job", "gpus" if u == "GPU" else "nodes", "start_h", "end_h", "hours", "priority", "overrides"]
    rows = [[str(a.order_index), a.job.name, str(a.gpus), num(a.start_h, ".3f"), num(a.end_h, ".3f"),
             num(a.duration_h, ".3f"), num(a.job.priority, "g"), " ".join(a.job.overrides)] for a in plan.assignments]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    left = {1, 7}  # text columns align left, numbers right

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    lines = head + ["", fmt(cols).rstrip(), "  ".join("-" * w for w in widths)]
    lines += [fmt(r).rstrip() for r in rows]
    lines += ["", "assumptions:"] + [f"  - {a}" for a in plan.assumptions]
    if plan.wait is not None:
        lines += [f"  - wait: {a}" for a in plan.wait.assumptions]
    return "\n".join(lines)


def plan_json(plan: Plan) -> str:
    """The plan as JSON (strict: no NaN or infinity)."""
    return json.dumps(plan.to_dict(), indent=1, allow_nan=False)
