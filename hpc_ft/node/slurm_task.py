"""The NodeTask under Slurm: the preemption signal reaches torchrun on every node, and the job requeues.

submitit calls ``checkpoint()`` only in global rank 0 (node 0); the other nodes' handlers do nothing.
``SlurmNodeTask`` installs the node's preemption routine (hpc_ft.node.preempt) on every node, so each forwards
the signal to its torchrun (the workers then agree through an all-reduce and checkpoint together); node 0 then
runs the rest of the routine in ``checkpoint()``: wait for torchrun, decide, hold SIGTERM while submitit requeues.
``hpc_ft.node.entry`` runs the same routine without submitit.
"""

from __future__ import annotations

from hpc_ft.node.task import NodeTask


class SlurmNodeTask(NodeTask):
    """NodeTask for executor=slurm (submitted by hpc_ft.submit.dispatch and Slurm sweeps)."""

    def __call__(self):
        self.preemption(self.load_spec()).install()  # before submitit's own handler, which acts on node 0 only
        return super().__call__()
