"""What a resumed run may change: one rule per config field, checked before dispatch and again on load.

A submit into a run dir that holds checkpoints resumes that run. Each field of the new job either

- **refuses** (the checkpoint cannot mean the same thing: another model or dataset, or another sample
  order, which is a pure function of (seed, step, global batch)): before dispatch, exit 2, nothing written;
- **warns** and continues (an intentional change the loop knows how to carry: precision, world size,
  micro-batch, optimizer settings, schedule length); the warning is printed by ``hpc-ft``, logged by the
  workers and recorded in each node's train.json under ``warnings``;
- or is **free** (how the job is dispatched, observed or logged).

Before dispatch the new spec is compared with the run dir's job.yaml (the previous submission); a worker
compares it again with the spec recorded inside the checkpoint it loads (the run that actually wrote it),
so a job.yaml edited by hand or a checkpoint from an earlier submission is still caught. Pure: no torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from hpc_ft.config.renames import upgrade_conf
from hpc_ft.errors import ConfigError, Problem

REFUSE, WARN, FREE = "refuse", "warn", "free"
WORLD_SIZE = "world size"  # derived: resources.nodes x resources.workers_per_node (resolved in job.yaml)
_UNSET = "<unset>"
_ORDER = "the sample order is a pure function of (seed, step, global batch)"
_NOT_BITWISE = "not bitwise equal to an uninterrupted run"


def _added_keys() -> dict[str, Any]:
    """Keys added to the schema after run dirs were written without them, at their defaults (flat)."""
    from dataclasses import asdict

    from hpc_ft.config.schema import PeftConf

    return {**{f"peft.{k}": v for k, v in asdict(PeftConf()).items()},
            "train.activation_checkpointing": False, "train.strategy": "ddp"}


ADDED_KEYS = _added_keys()


@dataclass(frozen=True)
class ResumeRule:
    """The rule for one config key, or for every key under a group (``model`` covers ``model.hidden``)."""

    key: str
    action: str  # refuse | warn | free
    why: str


RULES: tuple[ResumeRule, ...] = (
    # What the checkpoint means: refused.
    ResumeRule("task", REFUSE, "the checkpointed steps trained another task: its loss, labels and head differ"),
    ResumeRule("model", REFUSE, "the checkpointed weights belong to the old model: they would not load, or not mean "
                                "the same"),
    ResumeRule("data", REFUSE, "the checkpointed steps read the old data: another dataset, size or split changes "
                               "what every sample index means"),
    ResumeRule("peft", REFUSE, "the checkpoint holds the weights the old fine-tuning method trained (all of them, "
                               "or LoRA adapters of another rank or targets): they do not fit the new one"),
    ResumeRule("train.strategy", REFUSE, "ddp checkpoints are single files, fsdp ones sharded directories "
                                         "(torch.distributed.checkpoint): neither loads as the other"),
    ResumeRule("train.seed", REFUSE, f"{_ORDER}: another seed mid-run repeats some samples and skips others"),
    ResumeRule("train.global_batch_size", REFUSE, f"{_ORDER}: another global batch mid-run repeats some samples "
                                                  "and skips others (the micro-batch may change: "
                                                  "train.grad_accum_steps, workers)"),
    # Intentional changes the loop carries over: continue with a warning.
    ResumeRule("train.max_steps", WARN, "the cosine schedule is spread over the new length from the resumed step: "
                                        "the learning rate jumps"),
    ResumeRule("train.warmup_steps", WARN, "the learning-rate schedule changes from the resumed step"),
    ResumeRule("train.min_lr_ratio", WARN, "the learning-rate schedule changes from the resumed step"),
    ResumeRule("train.grad_clip_norm", WARN, "updates are clipped differently from the resumed step"),
    ResumeRule("train.grad_accum_steps", WARN, "the same global batches are split into other micro-batches: the "
                                               f"same update up to summation order ({_NOT_BITWISE})"),
    ResumeRule("precision.dtype", WARN, "training continues in the new precision; fp16's loss scaler starts fresh"),
    ResumeRule("optim._target_", WARN, "another optimizer cannot use the checkpointed optimizer state: it starts "
                                       "from fresh state (weights, step and schedule continue)"),
    ResumeRule("optim", WARN, "the new value applies from the resumed step (the optimizer state is kept)"),
    ResumeRule(WORLD_SIZE, WARN, "the global batches stay the same (the sample order does not depend on the world "
                                 f"size), but dropout streams restart and gradients are summed in another order: "
                                 f"{_NOT_BITWISE}"),
    ResumeRule("resources.gpus_per_node", WARN, f"training moves to another device kind or count: {_NOT_BITWISE}"),
    # How the job runs, is dispatched, observed or logged: free.
    ResumeRule("resources.nodes", FREE, "compared as the world size"),
    ResumeRule("resources.workers_per_node", FREE, "compared as the world size"),
    ResumeRule("resources", FREE, "where and how long the job runs, not what it computes"),
    ResumeRule("executor", FREE, "how the job is dispatched"),
    ResumeRule("telemetry", FREE, "what is measured beside training"),
    ResumeRule("sched", FREE, "how sweeps are planned"),
    ResumeRule("tune", FREE, "how a hyperparameter search runs"),
    ResumeRule("tracking", FREE, "where curves are logged beside training"),
    ResumeRule("script", FREE, "a user's script keeps its own checkpoints; hpc_ft's loop resumes nothing of it"),
    ResumeRule("run", FREE, "the job's name and directory"),
    ResumeRule("dry_run", FREE, "a submit option"),
    ResumeRule("wait", FREE, "a submit option"),
    ResumeRule("preflight", FREE, "a submit option"),
    ResumeRule("train.eval_micro_batch_size", FREE, "evaluation batching, not training"),
    ResumeRule("train.eval_every_steps", FREE, "when evaluation happens"),
    ResumeRule("train.ckpt_every_steps", FREE, "when checkpoints are written"),
    ResumeRule("train.keep_checkpoints", FREE, "how many checkpoints are kept"),
    ResumeRule("train.log_every_steps", FREE, "when metrics are logged"),
    ResumeRule("train.num_threads", FREE, "how CPU kernels run"),
    ResumeRule("train.compile", FREE, "how the model is executed"),
    ResumeRule("train.activation_checkpointing", FREE, "activations are recomputed instead of kept (the RNG "
                                                       "replayed): the same result, other memory and time"),
    ResumeRule("train.deterministic", FREE, "how kernels are chosen"),
)


def rule_for(key: str) -> ResumeRule | None:
    """The most specific rule covering the dotted ``key`` (``optim._target_`` before ``optim``), or None."""
    best = None
    for r in RULES:
        if (key == r.key or key.startswith(r.key + ".")) and (best is None or len(r.key) > len(best.key)):
            best = r
    return best


@dataclass
class ResumeCheck:
    """The verdict on resuming at ``step`` with a changed job: refusals, warnings, and what the loop must redo."""

    step: int
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    fresh_optimizer: bool = False  # the optimizer class changed: its checkpointed state must not be loaded

    def raise_if_refused(self) -> None:
        if self.problems:
            raise ConfigError(self.problems)


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and scalars are leaves."""
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    if not d and prefix:
        out[prefix] = {}
    return out


def _show(v: Any) -> str:
    return "null" if v is None else str(v)


def _same_local_path(key: str, was: Any, now: Any) -> bool:
    """Whether ``was``, a path an older job.yaml or checkpoint recorded relative to its submitting directory,
    names the file ``now`` names: today's jobs record it absolute (``hpc_ft.job.resolve``). Relative to this
    working directory, where the same command is run again to resume (a worker runs where it was submitted)."""
    from hpc_ft.job import LOCAL_PATH_KEYS

    return (key in LOCAL_PATH_KEYS and isinstance(was, str) and isinstance(now, str) and os.path.isabs(now)
            and not os.path.isabs(os.path.expanduser(was))
            and os.path.normpath(os.path.join(os.getcwd(), os.path.expanduser(was))) == os.path.normpath(now))


def compare(old_conf: dict[str, Any], new_conf: dict[str, Any], old_world: int, new_world: int, step: int,
            where: str) -> ResumeCheck:
    """Apply RULES to every key that differs between the checkpointed job and the new one.

    ``old_conf``/``new_conf`` are JobConf containers (``JobSpec.to_dict()["conf"]``); ``step`` is the
    checkpoint's step; ``where`` names the run dir in messages. Never raises: see ``ResumeCheck``.
    """
    old, new = flatten(upgrade_conf(old_conf)), flatten(new_conf)  # a checkpoint may hold renamed keys
    for key, default in ADDED_KEYS.items():  # a record older than the key ran as its default does
        if key in new:
            old.setdefault(key, default)
    check = ResumeCheck(step=step)
    check.fresh_optimizer = old.get("optim._target_", _UNSET) != new.get("optim._target_", _UNSET)
    changed = [(k, old.get(k, _UNSET), new.get(k, _UNSET)) for k in sorted(old.keys() | new.keys())
               if old.get(k, _UNSET) != new.get(k, _UNSET)
               and not _same_local_path(k, old.get(k, _UNSET), new.get(k, _UNSET))]
    if old_world != new_world:
        changed.append((WORLD_SIZE, old_world, new_world))
    for key, was, now in changed:
        rule = rule_for(key)
        if rule is None:  # a key no rule knows (a newer schema): the safe side
            rule = ResumeRule(key, REFUSE, "no rule says a resumed run may change it")
        if check.fresh_optimizer and key.startswith("optim.") and key != "optim._target_":
            continue  # one warning for the new optimizer, not one per hyperparameter
        if key == "train.max_steps" and isinstance(now, int) and now < step:
            check.problems.append(Problem(key, now, f"is below the step the run in {where} has already reached "
                                                    f"(checkpoint at step {step}, was {_show(was)})",
                                          f"pass train.max_steps>={step} to resume it, or use a new run dir "
                                          f"(hydra.run.dir=NEW_DIR)"))
            continue
        if rule.action == REFUSE:
            fix = f"drop {key}" if was == _UNSET else f"pass {key}={_show(was)}"
            check.problems.append(Problem(key, now, f"differs from the run being resumed in {where} (was "
                                                    f"{_show(was)}, checkpoint at step {step}): {rule.why}",
                                          f"{fix} to resume that run, or start a new run in a new run dir "
                                          f"(hydra.run.dir=NEW_DIR)"))
        elif rule.action == WARN:
            check.warnings.append(f"resuming {where} at step {step} with {key} changed from {_show(was)} to "
                                  f"{_show(now)}: {rule.why}")
    return check


def compare_with_checkpoint(state: dict[str, Any], new_conf: dict[str, Any], new_world: int,
                            where: str) -> ResumeCheck:
    """``compare`` against the job recorded in a checkpoint's ``state`` (``conf``, ``world_size``, ``step``).

    A checkpoint written before the job was recorded in it carries only its precision and world size:
    those are compared, every other field is taken as unchanged.
    """
    old_conf = state.get("conf")
    if not isinstance(old_conf, dict):
        old_conf = {**new_conf, "precision": {**new_conf.get("precision", {}),
                                              "dtype": state.get("precision", new_conf["precision"]["dtype"])}}
    return compare(old_conf, new_conf, int(state.get("world_size", new_world)), new_world, int(state["step"]),
                   where)


def nothing_left(spec: Any, step: int) -> Problem:
    """The refusal of a submission into a run dir whose newest checkpoint (``step``) is at or past the new
    ``train.max_steps``: its job would train no step and overwrite the run's results with a step-less attempt's."""
    import shlex

    where = shlex.quote(str(spec.run_dir))
    max_steps = spec.conf.train.max_steps
    rule = (f"the run in {spec.run_dir} has already reached train.max_steps (checkpoint at step {step}): nothing "
            f"left to train" if max_steps == step else
            f"is below the step the run in {spec.run_dir} has already reached (checkpoint at step {step}): "
            f"nothing left to train")
    return Problem("train.max_steps", max_steps, rule,
                   f"`hpc-ft report {where}` shows its results; pass train.max_steps=M with M > {step} to train "
                   f"further; or start a new run in a new run dir (hydra.run.dir=NEW_DIR)")


def check_before_dispatch(spec: Any) -> ResumeCheck | None:
    """Compare a JobSpec with the previous job in its run dir when that run left checkpoints; else None.

    The previous job is the run dir's job.yaml (the last submission). A run whose newest checkpoint is at or past
    the new ``train.max_steps`` is refused (``nothing_left``), with or without job.yaml: only before dispatch, a
    requeued job of it still finishes (its workers compare with ``compare_with_checkpoint``, which allows it).
    Raises ConfigError when job.yaml cannot be read (nothing is known about what the checkpoints hold). Reads no
    checkpoint: no torch.
    """
    from hpc_ft.job import JobSpec
    from hpc_ft.rundir.spec import spec_path
    from hpc_ft.train.checkpoint import list_checkpoints

    ckpts = list_checkpoints(spec.run_dir)
    if not ckpts:
        return None  # nothing trained yet
    step = ckpts[-1][0]
    finished = spec.conf.train.max_steps <= step
    if not spec_path(spec).exists():  # no record of the job: the worker compares with the checkpoint
        return ResumeCheck(step=step, problems=[nothing_left(spec, step)]) if finished else None
    try:
        old = JobSpec.load(spec_path(spec))
    except Exception as exc:  # noqa: BLE001 - any unreadable job.yaml means: we can't tell what is resumed
        raise ConfigError([Problem("run.dir", str(spec.run_dir), f"holds checkpoints but its job.yaml cannot be "
                                   f"read ({type(exc).__name__}: {exc})", "use a new run dir (hydra.run.dir=NEW_DIR)")])
    check = compare(old.to_dict()["conf"], spec.to_dict()["conf"], old.world_size, spec.world_size, step,
                    str(spec.run_dir))
    if finished:  # one refusal of train.max_steps, with the fix that trains further (compare's says >= step)
        check.problems = [p for p in check.problems if p.key != "train.max_steps"] + [nothing_left(spec, step)]
    return check
