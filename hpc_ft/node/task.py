"""NodeTask: the submitit callable, one per node. Samples telemetry, runs torchrun, reports back."""

from __future__ import annotations

import collections
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from hpc_ft.config.schema import schema_shape
from hpc_ft.errors import LaunchError
from hpc_ft.job import JobSpec
from hpc_ft.node import errortail
from hpc_ft.node.errortail import WorkerOutput
from hpc_ft.node.launch import scoped_environ, torchrun_argv, user_env, worker_env
from hpc_ft.node.payload import is_script, run_script_in_process, script_result
from hpc_ft.node.preempt import NodePreemption
from hpc_ft.node.rdzv_store import agree_endpoint
from hpc_ft.node.rendezvous import Placement, placement_from_env
from hpc_ft.rundir.layout import NodeDir, RunDir
from hpc_ft.rundir.records import PREEMPTED_EXIT_CODE, NodeAttempt, NodeReport, TrainResult

log = logging.getLogger(__name__)


@dataclass
class NodeTask:
    """Runs the job's share on one node. Picklable: submitit ships it, and requeues it after preemption."""

    spec_path: str
    requeues: int = 0  # how many times this task was requeued after preemption
    # The spec as the submitter saved it in job.yaml, carried in the pickle: the node then starts torchrun without
    # importing OmegaConf and reading job.yaml through it (~0.12 s of every node's start). None: read job.yaml
    # (the plain sbatch script's entry; a search trial, whose job.yaml is written after its task is submitted).
    spec: JobSpec | None = None
    # Train in this very process instead of under torchrun, so breakpoints work (the debug executor's task).
    in_process: ClassVar[bool] = False

    def __post_init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._preemption: NodePreemption | None = None

    def __getstate__(self) -> dict[str, Any]:
        state: dict[str, Any] = {"spec_path": self.spec_path, "requeues": self.requeues, "spec": self.spec}
        if self.spec is not None:
            state["schema_shape"] = schema_shape()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        shape = state.pop("schema_shape", None)
        if state.get("spec") is not None and shape != schema_shape():
            # Pickled by an hpc_ft with another schema (upgraded while the job was pending): job.yaml is read
            # instead, with its renamed keys upgraded (hpc_ft.config.renames).
            state["spec"] = None
        self.__dict__.update({"spec": None, **state})
        self._proc = None
        self._preemption = None

    def load_spec(self) -> JobSpec:
        """The job's spec: the one carried, else ``job.yaml`` read (and kept for the rest of this run)."""
        if self.spec is None:
            self.spec = JobSpec.load(self.spec_path)
        return self.spec

    def __call__(self) -> NodeReport:
        spec = self.load_spec()
        place = placement_from_env()
        if self.in_process:
            return self._run_in_process(spec, place)
        return self._run_torchrun(spec, place)

    # -- the real path: torchrun in a subprocess, telemetry beside it ---------------------------
    def _run_torchrun(self, spec: JobSpec, place: Placement) -> NodeReport:
        ndir = RunDir.of(spec).node(place.node_rank)
        ndir.path.mkdir(parents=True, exist_ok=True)
        ndir.train_result.unlink(missing_ok=True)  # a requeued run must not report the last run's result
        # The run dir's own count of requeues (hpc-ft status): the local executor has no sacct to ask.
        NodeAttempt(place.job_id, self.requeues, time.time()).save(ndir.attempt)
        try:
            with agree_endpoint(place, spec.run_dir, self.requeues) as place:
                return self._torchrun(spec, place, ndir)
        except LaunchError as exc:  # no rendezvous: the node reports why instead of dying with a traceback
            log.error("%s", exc)
            report = NodeReport(host=place.host, node_rank=place.node_rank, job_id=place.job_id, exit_code=-1,
                                wall_s=0.0, error_tail=str(exc))
            report.save(ndir.report)
            return report

    def _torchrun(self, spec: JobSpec, place: Placement, ndir: NodeDir) -> NodeReport:
        # torchrun's --log-dir: its --tee copies of the workers' output and their error files, on the node's local
        # disk (not the shared run dir); the workers' lines are in torchrun.log, so it goes when torchrun ends.
        log_dir = tempfile.mkdtemp(prefix="hpc_ft-torchrun-")
        try:
            return self._run_agent(spec, place, ndir, log_dir)
        finally:
            shutil.rmtree(log_dir, ignore_errors=True)

    def _run_agent(self, spec: JobSpec, place: Placement, ndir: NodeDir, log_dir: str) -> NodeReport:
        argv = torchrun_argv(spec, place, log_dir=log_dir)
        env = worker_env(spec, place)
        ndir.torchrun_argv.write_text(json.dumps(argv))
        output = WorkerOutput()
        sampler = _start_sampler(spec, ndir, _JobPids(self))
        t0, started_unix_s = time.monotonic(), time.time()
        with open(ndir.torchrun_log, "a", buffering=1) as logf:  # line-buffered: a killed node keeps its log
            # Own process group so a Ctrl-C on the submitter's terminal reaches torchrun exactly once, via us.
            self._proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True, bufsize=1, start_new_session=True)
            pump = threading.Thread(target=_tee, args=(self._proc.stdout, logf, output), daemon=True)
            pump.start()
            code = self._proc.wait()
            pump.join(timeout=10)
        wall_s = time.monotonic() - t0
        telemetry = sampler.stop() if sampler else {}
        train = (script_result(spec, since_unix_s=started_unix_s, wall_s=wall_s, exit_code=code)
                 if is_script(spec) else _read_train(ndir))
        routine = getattr(self, "_preemption", None)  # made when a stop signal came (self.preemption)
        stop_sent = routine is not None and routine.forwarder.sent_to(self._proc.pid)
        code = finished_code(code, train, spec, stop_sent=stop_sent)
        preempted = _preempted(code, train)
        # After a preemption checkpoint torchrun ends with its SignalException traceback: noise, not an error
        # (torchrun.log keeps it).
        quiet = code == 0 or (train is not None and train.preempted)
        report = NodeReport(host=place.host, node_rank=place.node_rank, job_id=place.job_id, exit_code=code,
                            wall_s=wall_s, train=train, telemetry=telemetry,
                            error_tail="" if quiet else output.error_tail(), preempted=preempted)
        report.save(ndir.report)
        return report

    # -- debug: train in this very process so breakpoints work ----------------------------------
    def _run_in_process(self, spec: JobSpec, place: Placement) -> NodeReport:
        ndir = RunDir.of(spec).node(place.node_rank)
        ndir.path.mkdir(parents=True, exist_ok=True)
        ndir.train_result.unlink(missing_ok=True)
        single = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
                  "HPC_FT_NODE_RANK": str(place.node_rank)}
        t0, started_unix_s, error_tail = time.monotonic(), time.time(), ""
        # The user's executor.env as torchrun's workers get it (worker_env), for this run only: the submitting
        # process's environment is as before once it returns or raises.
        with scoped_environ({**user_env(spec), **single}):
            if is_script(spec):
                code, error_tail = run_script_in_process(spec)
            else:
                from hpc_ft.train.loop import train

                code = train(spec)
        wall_s = time.monotonic() - t0
        train = (script_result(spec, since_unix_s=started_unix_s, wall_s=wall_s, exit_code=code)
                 if is_script(spec) else _read_train(ndir))
        report = NodeReport(host=place.host, node_rank=place.node_rank, job_id=place.job_id, exit_code=code,
                            wall_s=wall_s, train=train, error_tail=errortail.error_tail(error_tail.splitlines()),
                            preempted=_preempted(code, train))
        report.save(ndir.report)
        return report

    # -- submitit's preemption hook --------------------------------------------------------------
    def preemption(self, spec: JobSpec | None = None) -> NodePreemption:
        """This task's preemption routine (hpc_ft.node.preempt), made once per run of the task."""
        if getattr(self, "_preemption", None) is None:
            self._preemption = NodePreemption(spec or self.load_spec(), self)
        return self._preemption

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Called by submitit on its preemption/time-out signal (in global rank 0): let training checkpoint,
        then requeue.

        The routine of hpc_ft.node.preempt: the signal is forwarded to torchrun (which forwards it to its
        workers); the workers finish the current step, write a checkpoint and exit; the node waits for that
        (bounded by the timing rule) and holds SIGTERM for submitit's `scontrol requeue`. The requeued task
        resumes from the checkpoint in the same run directory. Returns None (no requeue) once
        executor.max_requeues is used up.
        """
        import submitit

        routine = self.preemption()
        routine.stop_torchrun()
        if not routine.may_requeue():
            return None
        routine.hold_for_requeue()
        return submitit.helpers.DelayedSubmission(type(self)(self.spec_path, self.requeues + 1, spec=self.spec))


def _start_sampler(spec: JobSpec, ndir: NodeDir, pids):
    if not spec.conf.telemetry.enabled:
        return None
    from hpc_ft.telemetry import NodeSampler

    t = spec.conf.telemetry
    from hpc_ft.train.tracking import telemetry_board_dir

    sampler = NodeSampler(out_dir=ndir.path, interval_s=t.interval_s, max_report_points=t.max_report_points,
                          pids=pids, idle_util_pct=t.idle_util_pct, board_dir=telemetry_board_dir(spec, ndir.rank))
    sampler.start()
    return sampler


def _tee(stream, logf, output: WorkerOutput) -> None:
    """Copy torchrun's output to our stdout and the node log, keeping each worker's last lines for the report."""
    for line in stream:
        line = output.add(line)  # kept for the error tail, its doubled rank prefix said once
        sys.stdout.write(line)
        logf.write(line)
    sys.stdout.flush()
    logf.flush()


class _JobPids:
    """The pids of torchrun and its workers for the sampler, re-walked at most every ``ttl_s``.

    The tree changes only when torchrun (re)starts workers, while a /proc walk costs milliseconds on a busy
    node: re-walking every few seconds keeps the sampler cheap at 1 Hz.
    """

    def __init__(self, task: "NodeTask", ttl_s: float = 5.0):
        self.task, self.ttl_s = task, ttl_s
        self._pids: list[int] = []
        self._at = float("-inf")

    def __call__(self) -> list[int]:
        proc = self.task._proc
        if proc is None:
            return []
        now = time.monotonic()
        if now - self._at >= self.ttl_s or (self._pids and self._pids[0] != proc.pid):
            self._pids, self._at = _process_tree(proc.pid), now
        return self._pids


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants (``root`` first)."""
    return _process_tree(root)


def _process_tree(root: int) -> list[int]:
    """``root`` and all its descendants, read from /proc/PID/task/TID/children, else a full /proc scan."""
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
            except FileNotFoundError:
                if os.path.exists(f"/proc/{pid}/task/{tid}"):
                    return _process_tree_scan(root)  # kernel without CONFIG_PROC_CHILDREN
            except OSError:
                continue
    return out


def _process_tree_scan(root: int) -> list[int]:
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children[ppid].append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def finished_code(code: int, train: TrainResult | None, spec: JobSpec, stop_sent: bool = False) -> int:
    """0 for a torchrun that a stop signal (the preemption signal, or SIGTERM) ended after its workers had trained
    every step and written their result: a search's pruning or a cancel that came as the trial finished.

    Two ways that reads as a failure of a run that is complete: torchrun, past its handlers in its last moments,
    dies of the signal (exit -12 for USR2); or its handler takes the signal as the workers exit and torchrun
    raises SignalException (exit 1). The second is told from a real failure only by ``stop_sent``: this node task
    forwarded a stop signal to this torchrun. Any other exit status is returned as it is."""
    from hpc_ft.node.preempt import preempt_signum

    complete = (train is not None and not train.preempted and train.max_steps is not None
                and train.steps >= train.max_steps)
    killed_by_stop = code < 0 and -code in (preempt_signum(spec), signal.SIGTERM)
    if (killed_by_stop or (code > 0 and stop_sent)) and complete and not is_script(spec):
        log.info("torchrun ended (exit %d) by a stop signal after training finished (%d of %d steps): complete",
                 code, train.steps, train.max_steps)
        return 0
    return code


def _preempted(code: int, train: TrainResult | None) -> bool:
    """Training stopped at a preemption checkpoint (torchrun itself exits non-zero after forwarding a signal)."""
    return code == PREEMPTED_EXIT_CODE or (train is not None and train.preempted)


def _read_train(ndir: NodeDir) -> TrainResult | None:
    """The node's training result; None when training wrote none (it crashed first) or it is unreadable."""
    try:
        return TrainResult.load(ndir.train_result)
    except (OSError, ValueError) as exc:
        if ndir.train_result.exists():
            log.warning("unreadable training result: %s", exc)
        return None
