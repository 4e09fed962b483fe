"""Preemption: a signal asks training to stop at a step end; all ranks agree on which one before stopping.

Slurm (through submitit or the sbatch script) sends the configured signal before the time limit or on
preemption; torchrun forwards it to every worker (``--signals-to-handle``). The handler only sets a
flag: the loop votes on it between steps, so a checkpoint is never taken mid-step.

Two test hooks, read from the environment (``StopHooks``), stand in for a signal at a known step, so the
tests of resume and requeue stop training exactly where they mean to.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.distributed as dist

from hpc_ft.errors import PREEMPTED_EXIT_CODE

EXIT_PREEMPTED = PREEMPTED_EXIT_CODE  # the node task requeues the job on it
HOLD_TIMEOUT_S = 600.0
VOTE_INTERVAL_S = 0.1  # seconds of training between preemption votes (a vote costs ~0.7 ms: under 1%)
MAX_STEPS_BETWEEN_VOTES = 100


@dataclass(frozen=True)
class StopHooks:
    """Test hooks that stop training at a given step as a preemption would (0: off).

    ``HPC_FT_STOP_AFTER_STEP=N`` stops after step N (checkpoint, exit 75) as if every rank had been signalled;
    ``HPC_FT_TEST_HOLD_AT_STEP=N`` holds after step N, announcing it in the node dir's ``held_at_step``, until
    a real preemption signal arrives (so a test can send one at a known step);
    ``HPC_FT_TEST_KILL_IN_CKPT_WRITE=N`` kills every worker (SIGKILL) while it writes the sharded checkpoint of
    step N, after its shards and before the checkpoint counts (a preemption past its grace time). All fire only
    in a run that started before step N: the resumed run goes on.
    """

    stop_after_step: int = 0
    hold_at_step: int = 0
    kill_in_ckpt_write_step: int = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "StopHooks":
        def step(name: str) -> int:
            return int(environ.get(name, "0") or 0)

        return cls(stop_after_step=step("HPC_FT_STOP_AFTER_STEP"), hold_at_step=step("HPC_FT_TEST_HOLD_AT_STEP"),
                   kill_in_ckpt_write_step=step("HPC_FT_TEST_KILL_IN_CKPT_WRITE"))

    def holds_at(self, step: int, start_step: int) -> bool:
        return bool(self.hold_at_step) and step == self.hold_at_step and start_step < self.hold_at_step

    def kills_in_ckpt_write(self, step: int, start_step: int) -> bool:
        return self.kill_in_ckpt_write_step > 0 and step == self.kill_in_ckpt_write_step \
            and start_step < self.kill_in_ckpt_write_step

    def stops_after(self, step: int, start_step: int) -> bool:
        return self.stop_after_step > 0 and step == self.stop_after_step and start_step < self.stop_after_step


class PreemptFlag:
    """Set by the preemption signals; a vote across ranks makes every rank stop at the same step."""

    def __init__(self, hooks: StopHooks | None = None) -> None:
        self.hooks = hooks or StopHooks()  # off unless given (the loop reads them from the environment)
        self.requested = False
        self.signal_name: str | None = None
        self._vote: tuple | None = None  # (async all-reduce work or None, [flag, -steps to next vote], cast step)
        self._next_vote_step = 0  # the step after which the next vote is cast: the same on every rank
        self._last_cast: tuple[float, int] | None = None  # (monotonic s, step) of this rank's previous cast

    def install(self) -> None:
        names = {"SIGUSR2", "SIGTERM", os.environ.get("HPC_FT_PREEMPT_SIGNAL", "SIGUSR2")}
        for name in names:
            sig = getattr(signal, name, None)
            if sig is not None:
                signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame) -> None:
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def steps_to_next_vote(self, step: int) -> int:
        """How many steps this rank proposes until the next vote: enough to spread the vote's round trip over
        VOTE_INTERVAL_S of training, at least 1 and at most MAX_STEPS_BETWEEN_VOTES (measured from this rank's
        own step time since its previous cast; 1 before there is one)."""
        now = time.monotonic()
        last, self._last_cast = self._last_cast, (now, step)
        if last is None or step <= last[1]:
            return 1
        step_s = (now - last[0]) / (step - last[1])
        if step_s <= 0:
            return MAX_STEPS_BETWEEN_VOTES
        return max(1, min(MAX_STEPS_BETWEEN_VOTES, int(VOTE_INTERVAL_S / step_s)))

    def cast_vote(self, group=None, step: int | None = None) -> bool:
        """Ask every rank "anyone preempted?" in the background; read the answer with ``vote_result()``.

        The loop casts at the end of step k and reads at the end of step k+1, so the all-reduce's round
        trip overlaps a step's compute instead of adding to it. Even overlapped, a vote costs about 0.7 ms of
        CPU per step on gloo (25% of a 3 ms step), so with ``step`` given a vote is cast only when due: the
        same all-reduce carries each rank's proposed distance to the next vote and every rank takes the
        smallest, so all ranks cast on the same steps and a vote falls about every VOTE_INTERVAL_S (or every
        step when steps are slower). A signal then stops training at most that much, plus a step, later:
        far inside the grace a preemption allows (hpc_ft.node.preempt). Returns whether a vote was cast.
        """
        if self._vote is not None or (step is not None and step < self._next_vote_step):
            return False
        at = 0 if step is None else step
        k = self.steps_to_next_vote(at)
        if not (dist.is_available() and dist.is_initialized()):
            self._vote = (None, torch.tensor([1.0 if self.requested else 0.0, -float(k)]), at)
            return True
        flag = torch.tensor([1.0 if self.requested else 0.0, -float(k)])
        # MAX of the flags: anyone signalled; MAX of -k: the smallest proposal, the same on every rank
        self._vote = (dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=group, async_op=True), flag, at)
        return True

    def vote_result(self) -> bool:
        """The answer to the last cast vote, the same on every rank; False when none is pending."""
        vote, self._vote = self._vote, None
        if vote is None:
            return False
        work, flag, cast_step = vote
        if work is not None:
            work.wait()
        self._next_vote_step = cast_step + max(1, int(-flag[1].item()))
        return bool(flag[0].item() > 0)

    def stop_after(self, step: int, start_step: int, hold_marker: os.PathLike | None, rank: int,
                   group=None) -> bool:
        """Whether every rank stops after ``step`` (the same answer on all ranks): the vote cast after the previous
        step says a signal came, or a test hook fires. Called after every step, the last one too, so the pending
        vote is always read. The hooks fire at the same step on every rank, so they stop at once without a vote.
        """
        stop = self.vote_result()
        if self.hooks.holds_at(step, start_step):
            self.hold_until_signal(hold_marker, rank, group)
            stop = True
        return stop or self.hooks.stops_after(step, start_step)

    def hold_until_signal(self, marker: os.PathLike | None, rank: int, group=None) -> None:
        """Test hook: announce the step through ``marker`` and wait (bounded) until the signal arrives.

        Every rank polls its own flag and all ranks agree in lockstep, so a signal that reaches only
        some workers still stops them all at the same step. Rank 0 ends the wait at the deadline.
        """
        if marker is not None:
            from hpc_ft.rundir.atomic import atomic_write_text

            atomic_write_text(marker, "held\n")
        deadline = time.monotonic() + HOLD_TIMEOUT_S
        while True:
            code = 1.0 if self.requested else 0.0
            if rank == 0 and time.monotonic() > deadline:
                code = 2.0
            if dist.is_available() and dist.is_initialized():
                t = torch.tensor([code])
                dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
                code = float(t.item())
            if code >= 2.0:
                raise TimeoutError(f"no preemption signal within {HOLD_TIMEOUT_S:.0f} s of the test hold")
            if code >= 1.0:
                self.requested = True
                return
            time.sleep(0.05)  # polling a flag set by a signal handler; the all-reduce keeps ranks in step
