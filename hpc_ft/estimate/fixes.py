"""The smallest changes that make a job fit in GPU memory, as Hydra overrides (like the right-sizing advice).

Candidates, cheapest first: a smaller micro-batch with more accumulation steps (same global batch, same result, a
little slower), activation checkpointing (about a third more compute), FSDP2 sharding (needs more than one worker),
more GPUs per node with FSDP2, and LoRA (trains adapters instead of every weight: a different fine-tune). Single
changes are tried first, then pairs; each is estimated like the job itself.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

from hpc_ft.job import JobSpec

MAX_FIXES = 3  # shown to the user
MAX_TRIALS = 10  # estimates tried (each traces one step on fake tensors: seconds)


@dataclass(frozen=True)
class Change:
    """One candidate: its overrides and how to apply them to a job's config dict."""

    overrides: tuple[str, ...]
    apply: Callable[[dict[str, Any]], bool]  # edits the dict in place; False when it does not apply to this job


def _set_accum(factor: int) -> Callable[[dict[str, Any]], bool]:
    def apply(d: dict[str, Any]) -> bool:
        t = d["conf"]["train"]
        world = _world(d)
        new = int(t["grad_accum_steps"]) * factor
        if t["global_batch_size"] % (world * new):
            return False
        t["grad_accum_steps"] = new
        return True
    return apply


def _set(path: str, value: Any, only_if: Callable[[dict[str, Any]], bool] = lambda d: True):
    def apply(d: dict[str, Any]) -> bool:
        node = d["conf"]
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        if node.get(leaf) == value or not only_if(d):
            return False
        node[leaf] = value
        return True
    return apply


def _world(d: dict[str, Any]) -> int:
    return JobSpec.from_dict(d).world_size


def _lora(d: dict[str, Any]) -> bool:
    peft = d["conf"].get("peft") or {}
    if peft.get("method", "none") != "none":
        return False
    d["conf"]["peft"] = {"method": "lora", "r": 8, "alpha": 16, "dropout": 0.05, "target_modules": None,
                         "quantize": "none"}
    return True


def _more_gpus(d: dict[str, Any]) -> bool:
    r, t = d["conf"]["resources"], d["conf"]["train"]
    if int(r.get("gpus_per_node") or 0) >= 8 or r.get("workers_per_node"):
        return False
    new = min(8, int(r["gpus_per_node"]) * 2)
    if t["global_batch_size"] % (int(r["nodes"]) * new * int(t["grad_accum_steps"])):
        return False
    r["gpus_per_node"] = new
    t["strategy"] = "fsdp"
    return True


def candidates(spec: JobSpec) -> list[list[Change]]:
    """Changes to try, singles then pairs, cheapest first."""
    gpus = int(spec.conf.resources.gpus_per_node or 0)
    singles = [Change(("train.grad_accum_steps=" + str(spec.conf.train.grad_accum_steps * f),), _set_accum(f))
               for f in (2, 4, 8)]
    singles += [Change(("train.activation_checkpointing=true",), _set("train.activation_checkpointing", True)),
                Change(("train.strategy=fsdp",), _set("train.strategy", "fsdp", lambda d: _world(d) > 1))]
    if gpus:
        singles.append(Change((f"resources.gpus_per_node={min(8, gpus * 2)}", "train.strategy=fsdp"), _more_gpus))
    singles.append(Change(("peft=lora",), _lora))
    pairs = [[a, b] for i, a in enumerate(singles) for b in singles[i + 1:]
             if not (a.overrides[0].startswith("train.grad_accum") and b.overrides[0].startswith("train.grad_accum"))]
    return [[s] for s in singles] + pairs


def find_fixes(spec: JobSpec, estimate_peak: Callable[[JobSpec], int], usable: int) -> list[tuple[list[str], int]]:
    """Up to MAX_FIXES override lists that make ``spec`` fit in ``usable`` bytes, with their estimated peaks.

    ``estimate_peak`` estimates a changed job (hpc_ft.estimate.trace); a change that makes it fail is skipped.
    """
    found: list[tuple[list[str], int]] = []
    trials = 0
    for combo in candidates(spec):
        if len(found) >= MAX_FIXES or trials >= MAX_TRIALS:
            break
        keys = {o.split("=")[0] for c in combo for o in c.overrides}
        if any({o.split("=")[0] for o in f} <= keys for f, _ in found):
            continue  # changing these keys already fits (with smaller values first): this one is not the smallest
        d = copy.deepcopy(spec.to_dict())
        try:
            if not all(c.apply(d) for c in combo):
                continue
            changed = JobSpec.from_dict(d)
        except Exception:  # noqa: BLE001 - a key this version's schema lacks: not a change it can make
            continue
        trials += 1
        try:
            peak = estimate_peak(changed)
        except Exception:  # noqa: BLE001 - a change this model cannot take (e.g. LoRA without targets): not a fix
            continue
        if peak <= usable:
            found.append(([o for c in combo for o in c.overrides], peak))
    return found
