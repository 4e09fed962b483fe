"""The training-side checks before dispatch: dataset split sizes, ``model=hf``'s checkpoint, ``data=files``' files,
and what a resumed run may change. No torch, except for ``data=files`` (the task that reads the files is built)."""

from __future__ import annotations

from typing import Any

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
        from hpc_ft.train.tasks.hf_checks import model_problems

        problems, notes = model_problems(plain(conf.model))
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


def check_before_dispatch(spec: Any) -> list[str]:
    """Raise ConfigError with every data and resume problem of a validated JobSpec; return its warnings.

    Reads the run dir (job.yaml, checkpoint names) and writes nothing, so a refused job leaves it as it was.
    """
    problems, warnings = data_problems(spec)
    p, w = task_problems(spec)
    problems += p
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
