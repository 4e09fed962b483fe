"""Resource management for sweeps: allocation policies, LP allocation, order, queueing, planning. Pure.

Nothing here launches anything or imports torch; scipy is imported only when policy=lp runs.
"""

from hpc_ft.sched.allocate import OBJECTIVES, POLICIES, allocate
from hpc_ft.sched.durations import estimate_duration, estimate_durations
from hpc_ft.sched.model import Assignment, Budget, Plan, QueueEstimate, SweepJob, jobs_from_points
from hpc_ft.sched.order import ORDERS, list_schedule, order_jobs
from hpc_ft.sched.planner import check_budget, plan_sweep, validate_inputs
from hpc_ft.sched.queueing import SACCT_ARGS, HistoryRecord, estimate_from_history, mm1, mmc, parse_sacct
from hpc_ft.sched.render import plan_json, plan_table
from hpc_ft.sched.simulate import SimResult, simulate

__all__ = [
    "Assignment", "Budget", "HistoryRecord", "OBJECTIVES", "ORDERS", "POLICIES", "Plan", "QueueEstimate",
    "SACCT_ARGS", "SimResult", "SweepJob", "allocate", "check_budget", "estimate_duration", "estimate_durations",
    "estimate_from_history", "jobs_from_points", "list_schedule", "mm1", "mmc", "order_jobs", "parse_sacct",
    "plan_json", "plan_sweep", "plan_table", "simulate", "validate_inputs",
]
