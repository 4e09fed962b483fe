"""Config keys renamed since an earlier version: refused with their new name on input, mapped when reading records.

A renamed key typed by a user (on the command line, or in a yaml of their own) is refused naming the new key,
before Hydra's generic "not a setting" message. A run dir written by an earlier version (its ``job.yaml``, the
job recorded in its checkpoints) still holds the old keys: ``upgrade_conf`` maps them, so such a run can be
resumed and reported. Pure: no Hydra, no torch.
"""

from __future__ import annotations

import copy
import shlex
from dataclasses import dataclass
from typing import Any

from hpc_ft.errors import Problem


@dataclass(frozen=True)
class Rename:
    """One renamed key: the old dotted key, the new one, and what the new name means."""

    old: str
    new: str
    meaning: str


RENAMES: tuple[Rename, ...] = (
    Rename("train.batch_size", "train.global_batch_size",
           "samples per optimizer step across all workers and accumulation steps"),
    Rename("train.eval_batch_size", "train.eval_micro_batch_size",
           "evaluation samples per forward pass on each worker"),
)
BY_OLD = {r.old: r for r in RENAMES}


def override_key(override: str) -> str:
    """The dotted key of a Hydra override: ``+train.batch_size=32`` -> ``train.batch_size``."""
    return override.split("=", 1)[0].lstrip("+~")


def renamed_override_problems(overrides: list[str]) -> list[Problem]:
    """A Problem for every override (``key=value``, ``+key=``, ``~key``, a sweep ``key=a,b``) that sets a
    renamed key; the fix passes the same value under the new key. Overrides that are not ``key=value``
    (``-m``, ``--cfg``) are skipped."""
    problems = []
    for o in overrides:
        if o.startswith("-"):
            continue
        r = BY_OLD.get(override_key(o))
        if r is None:
            continue
        value = o.split("=", 1)[1] if "=" in o else ""
        # Shell-quoted: the value came from the command line and goes back to it.
        fix = f"pass {shlex.quote(f'{r.new}={value}')}" if value else f"use {r.new} instead"
        problems.append(Problem(r.old, _typed(value), f"was renamed {r.new} ({r.meaning})", fix))
    return problems


def renamed_in_config_file(exc: BaseException | None) -> Problem | None:
    """The renamed key behind Hydra's refusal to compose a config file that sets it, or None.

    Hydra reports an unknown key of a typed group as an OmegaConf error carrying ``full_key``; it exits from
    within its handler, so the error is reachable from the ``SystemExit`` through ``__context__``/``__cause__``.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        r = BY_OLD.get(str(getattr(exc, "full_key", "") or ""))
        if r is not None:
            group, _, leaf = r.old.rpartition(".")
            new_leaf = r.new.rpartition(".")[2]
            return Problem(r.old, "set in a config file", f"was renamed {r.new} ({r.meaning})",
                           f"in that file, under {group}:, write {new_leaf}: instead of {leaf}:")
        exc = exc.__cause__ or exc.__context__
    return None


def upgrade_conf(conf: dict[str, Any]) -> dict[str, Any]:
    """A copy of a recorded JobConf container (``job.yaml``'s ``conf``, a checkpoint's ``conf``) with every
    renamed key under its new name. A record holding both names keeps the new one."""
    out = copy.deepcopy(conf)
    for r in RENAMES:
        *old_path, old_leaf = r.old.split(".")
        *new_path, new_leaf = r.new.split(".")
        parent = _node(out, old_path)
        if not isinstance(parent, dict) or old_leaf not in parent:
            continue
        value = parent.pop(old_leaf)
        target = _node(out, new_path)
        if isinstance(target, dict):
            target.setdefault(new_leaf, value)
    if isinstance(out, dict) and "model" in out and "task" not in out:
        # Recorded before tasks were a config group: every such job was a sequence classification.
        from hpc_ft.config.schema import DEFAULT_TASK

        out["task"] = {"_target_": DEFAULT_TASK, "labels": None}  # as conf/task/sequence_classification.yaml
    return out


def upgrade_override(override: str) -> str:
    """A recorded override with a renamed key under its new name (``train.batch_size=32`` ->
    ``train.global_batch_size=32``, prefixes kept); any other override unchanged."""
    r = BY_OLD.get(override_key(override))
    if r is None:
        return override
    prefix = override[:len(override) - len(override.lstrip("+~"))]
    rest = override[len(prefix):]
    return prefix + r.new + rest[len(r.old):]


def _node(tree: Any, path: list[str]) -> Any:
    for part in path:
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def _typed(value: str) -> Any:
    """``"32"`` -> 32 (how the value would read in the message); anything else as typed."""
    try:
        return int(value)
    except ValueError:
        return value
