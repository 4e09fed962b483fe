"""The training-side checks before dispatch: dataset split sizes, ``model=hf``'s checkpoint, ``data=files``' files,
the optimizer's arguments, and what a resumed run may change. No torch (``data=files`` builds the task, whose
module imports torch only to make tensors, and reads the files through ``datasets``), except for an optimizer group
changed from its file (its class is imported to read its arguments)."""

from __future__ import annotations

from typing import Any

from hpc_ft.config.script import uses_script
from hpc_ft.config.validate import split_problems
from hpc_ft.errors import ConfigError, Problem
from hpc_ft.train.resume import check_before_dispatch as resume_check
from hpc_ft.train.tasks.sizes import declared_sizes


def data_problems(spec: Any) -> tuple[list[Problem], list[str]]:
    """Problems and warnings of a built-in dataset's split sizes for this job's global batch and world size."""
    def check(lower_bound: bool) -> tuple[list[Problem], list[str]]:
        problems, sizes = declared_sizes(spec.conf.data, lower_bound=lower_bound)
        if sizes is None:
            return problems, []
        p, warnings = split_problems(sizes.num_train, sizes.num_test, sizes.key, sizes.value, sizes.fix,
                                     global_batch_size=spec.conf.train.global_batch_size, world_size=spec.world_size)
        return problems + p, warnings

    # Splits only grow with the corpus: clean at its lower bound means clean, without reading it.
    bounded = check(lower_bound=True)
    return bounded if bounded == ([], []) else check(lower_bound=False)


def task_problems(spec: Any) -> tuple[list[Problem], list[str]]:
    """Problems and notes of ``model=hf`` (the checkpoint directory) and ``data=files`` (the files, for the task)."""
    from hpc_ft.train.tasks.base import is_file_data, is_hf_model, plain

    conf = spec.conf
    problems: list[Problem] = []
    notes: list[str] = []
    if is_hf_model(conf.model):
        from hpc_ft.train.tasks.hf_checks import max_length_problems, model_problems

        problems, notes = model_problems(plain(conf.model))
        if not problems and is_file_data(conf.data):  # every task truncates examples (and packs) to data.max_length
            problems += max_length_problems(plain(conf.model), conf.data.get("max_length"))
    if is_file_data(conf.data):
        from hpc_ft.train.tasks.base import instantiate
        from hpc_ft.train.tasks.files import data_problems

        try:
            task = instantiate(conf.task)
        except Exception as exc:  # noqa: BLE001 - a user's task that cannot be built: one clear problem
            return problems + [Problem("task._target_", conf.task.get("_target_"), f"cannot be built "
                                       f"({type(exc).__name__}: {exc})", "pick a task from conf/task/")], notes
        p, w = data_problems(task, conf, spec.world_size)
        problems += p
        notes += w
    return problems, notes


def optim_problems(spec: Any) -> list[Problem]:
    """Keys of ``optim`` that its ``_target_`` does not take: a typo added with '+' (``+optim.lrr=1e-5``) or another
    optimizer's option. Every worker would fail on it in ``torch.optim``'s constructor after the job was queued.

    Read from the optimizer's signature (``inspect.signature``), so any optimizer class works; one that takes
    ``**kwargs`` accepts anything. The class (torch) is imported only when the group differs from its file in
    conf/optim/ (an added key, another ``_target_``): the default job's dry run stays without torch.
    """
    import inspect

    from hpc_ft.config.overrides import chosen_option, option_values
    from hpc_ft.train.tasks.base import plain

    if not any(o.lstrip("+~").startswith("optim.") for o in spec.overrides):
        return []  # optim as its file in conf/optim/ has it (no file read: this runs in every dry run)
    optim = plain(spec.conf.optim)
    if not isinstance(optim, dict) or not isinstance(optim.get("_target_"), str):
        return []
    as_written = option_values("optim", chosen_option("optim", list(spec.overrides))) or {}
    own = {k for k in optim if not k.startswith("_")}
    if optim["_target_"] == as_written.get("_target_") and own <= set(as_written):
        return []  # the file's own optimizer and keys: torch's own options
    target = optim["_target_"]
    import pydoc

    try:
        cls = pydoc.locate(target)  # None where the path names nothing
        params = inspect.signature(cls).parameters if isinstance(cls, type) else None
    except Exception:  # noqa: BLE001 - a module that fails to import, or a class without a signature: the same
        params = None
    if params is None:
        return [Problem("optim._target_", target, "does not name an optimizer class that can be imported here",
                        "pass optim=adamw (or sgd), or the import path of an optimizer class (torch.optim.RAdam)")]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return []
    takes = [n for n in params if n != "params"]  # hpc_ft passes the parameters to train
    problems = []
    for key in sorted(own - set(params)):
        import difflib

        near = difflib.get_close_matches(key, takes, n=1, cutoff=0.6)
        fix = (f"did you mean optim.{near[0]}? pass optim.{near[0]}={optim[key]!r} (not +optim.{key})" if near else
               f"drop it (~optim.{key}); {target} takes: {', '.join(takes)}")
        problems.append(Problem(f"optim.{key}", optim[key], f"is not an argument of {target}", fix))
    return problems


def check_before_dispatch(spec: Any) -> list[str]:
    """Raise ConfigError with every data and resume problem of a validated JobSpec; return its warnings.

    Reads the run dir (job.yaml, checkpoint names) and writes nothing, so a refused job leaves it as it was.
    A user's script (``script.*``) has neither hpc_ft's data nor its checkpoints: nothing to check.
    """
    if uses_script(spec.conf):
        return []
    problems, warnings = data_problems(spec)
    p, w = task_problems(spec)
    problems += p + optim_problems(spec)
    from hpc_ft.train.fit_checks import qlora_problems

    problems += qlora_problems(spec)  # peft.quantize=4bit: bitsandbytes and the model
    warnings += w
    resume = resume_check(spec)
    if resume is not None:
        problems += resume.problems
        warnings += resume.warnings
    if problems:
        raise ConfigError(problems)
    return warnings
