"""The optimizer's learning-rate schedule, and putting optimizer and schedule back on resume."""

from __future__ import annotations

import math
from typing import Any

import torch


def lr_lambda(step: int, warmup_steps: int, max_steps: int, min_ratio: float) -> float:
    """Linear warmup to 1, then cosine decay to ``min_ratio`` at ``max_steps``."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_schedule(optimizer: torch.optim.Optimizer, t: Any) -> torch.optim.lr_scheduler.LambdaLR:
    """The job's schedule (``t``: the train conf's warmup_steps, max_steps, min_lr_ratio) over ``optimizer``."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_lambda(s, t.warmup_steps, t.max_steps, t.min_lr_ratio))


def restore_optimizer(optimizer: torch.optim.Optimizer, scheduler: Any, state: dict[str, Any],
                      fresh_state: bool, t: Any, load_optimizer: Any = None) -> None:
    """Load the checkpointed optimizer and schedule position, keeping this job's hyperparameters.

    ``Optimizer.load_state_dict`` and ``LambdaLR.load_state_dict`` also restore the old lr, weight decay
    and base learning rates: a resumed run with a new optim.lr would silently keep the old one. The
    values built from this job's config are put back, and the learning rate of the resumed step is
    recomputed from them (the same float as the saved one when nothing changed: resume stays bitwise).
    With ``fresh_state`` (another optimizer class) the checkpointed state is not loaded at all.
    ``load_optimizer`` (no arguments) loads the optimizer state instead of ``state["optimizer"]`` (a sharded
    checkpoint's, hpc_ft.train.dcp_checkpoint).
    """
    built = [{k: v for k, v in g.items() if k not in ("params", "lr")} for g in optimizer.param_groups]
    if not fresh_state:
        if load_optimizer is not None:
            load_optimizer()
        else:
            optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    for group, values in zip(optimizer.param_groups, built):
        group.update(values)
    scheduler.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
    lrs = [base * lr_lambda(scheduler.last_epoch, t.warmup_steps, t.max_steps, t.min_lr_ratio)
           for base in scheduler.base_lrs]
    for group, lr in zip(optimizer.param_groups, lrs):
        group["lr"] = lr
    scheduler._last_lr = lrs  # what get_last_lr() reports until the next step
