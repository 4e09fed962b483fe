"""The training-side checks before dispatch: dataset split sizes and what a resumed run may change. No torch."""

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


def check_before_dispatch(spec: Any) -> list[str]:
    """Raise ConfigError with every data and resume problem of a validated JobSpec; return its warnings.

    Reads the run dir (job.yaml, checkpoint names) and writes nothing, so a refused job leaves it as it was.
    A user's script (``script.*``) has neither hpc_ft's data nor its checkpoints: nothing to check.
    """
    if uses_script(spec.conf):
        return []
    problems, warnings = data_problems(spec)
    resume = resume_check(spec)
    if resume is not None:
        problems += resume.problems
        warnings += resume.warnings
    if problems:
        raise ConfigError(problems)
    return warnings
