"""executor=debug: submitit's DebugExecutor, one node, one worker, training in this process so pdb works.

A sweep runs its jobs one after the other in this process, so it is always waited for.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Sequence

from hpc_ft.config.schema import JobConf
from hpc_ft.errors import Problem
from hpc_ft.job import JobSpec
from hpc_ft.node.task import NodeTask
from hpc_ft.submit.executors.base import (Executor, RecordIds, RecordState, SweepEntry, submitit_folder,
                                          this_machine_gpu_problems)

log = logging.getLogger(__name__)


class InProcessNodeTask(NodeTask):
    """The node task of the debug executor: trains in the submitting process (no torchrun)."""

    in_process = True


class DebugExecutor(Executor):
    """One node trained in-process: breakpoints and pdb work, nothing runs in the background."""

    name = "debug"
    node_task_class = InProcessNodeTask
    detaches = False  # the job ran in this process: nothing runs on after hpc-ft returns

    def workers_per_node(self, conf: JobConf) -> int:
        return 1  # in-process: one worker, whatever resources.workers_per_node says (see warnings)

    def problems(self, conf: JobConf, gpu_count: Callable[[], int]) -> list[Problem]:
        p = this_machine_gpu_problems(self.name, conf, gpu_count)
        if conf.resources.nodes > 1:
            p.append(Problem("resources.nodes", conf.resources.nodes, "the debug executor runs one node in-process",
                             "pass resources.nodes=1 or executor=local"))
        return p

    def warnings(self, conf: JobConf) -> list[str]:
        r = conf.resources
        if (r.workers_per_node or 1) > 1:
            return [f"executor=debug trains in-process with 1 worker (resources.workers_per_node="
                    f"{r.workers_per_node} ignored)"]
        return []

    def make_executor(self, spec: JobSpec) -> Any:
        import submitit

        return submitit.DebugExecutor(folder=submitit_folder(spec))

    def submit_sweep(self, entries: Sequence[SweepEntry], parallelism: int, sweep_dir: Path, *, wait: bool,
                     poll_s: float, record_state: RecordState, record_ids: RecordIds) -> bool:
        """In this process, one job after the other, in plan order; waited for whatever ``wait`` says."""
        from hpc_ft.submit.gather import gather, save_results

        if not wait:
            log.warning("executor=debug trains in this process: wait=false is ignored")
        for e in entries:
            e.job = self.submit(e.spec)
            e.reports = gather(e.job, e.spec)
            save_results(e.spec, e.reports)
        return True
