"""The one preemption routine on the node (hpc_ft.node.preempt): its timing rule, the SIGTERM hold around the
requeue, and the three callers (submitit's hook in NodeTask and SlurmNodeTask, the sbatch entry) going through it."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from hpc_ft.config.compose import compose_conf
from hpc_ft.job import resolve
from hpc_ft.node import entry
from hpc_ft.node.launch import worker_env
from hpc_ft.node.preempt import NodePreemption, PreemptTiming
from hpc_ft.node.rendezvous import Placement
from hpc_ft.rundir.spec import save_spec, spec_path
from hpc_ft.rundir.records import NodeReport
from hpc_ft.node.slurm_task import SlurmNodeTask
from hpc_ft.node.task import NodeTask


@pytest.mark.parametrize("delay_s, grace_s, wait_s, margin_s", [
    (120, 105, 110, 10),  # the default warning: torchrun's grace, the node's wait, 10 s left to requeue
    (45, 30, 35, 10),  # the smallest delay that keeps the margin
    (20, 30, 35, -15),  # below it torchrun's 30 s floor wins: the kill may come before the requeue
])
def test_timing_rule_for_a_warning_delay(delay_s, grace_s, wait_s, margin_s):
    t = PreemptTiming(delay_s)
    assert (t.worker_grace_s, t.exit_wait_s, t.requeue_margin_s) == (grace_s, wait_s, margin_s)


def _spec(tmp_path, *overrides):
    spec = resolve(compose_conf(["model=mlp", "data=synthetic", "executor.preempt_signal_delay_s=120", *overrides],
                                run_dir=tmp_path / "run"))
    save_spec(spec)
    return spec


def test_torchruns_grace_is_the_rules(tmp_path):
    spec = _spec(tmp_path)
    env = worker_env(spec, Placement(0, 1, "5", "h", "localhost", None), base={})
    assert env["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] == str(PreemptTiming.of(spec).worker_grace_s)


HOLD_THEN_REQUEUE = textwrap.dedent("""
    import subprocess, sys
    from hpc_ft.node.preempt import NodePreemption
    if sys.argv[1] == "hold":
        NodePreemption.hold_for_requeue()
    # stands in for `scontrol requeue`: the requeue's SIGTERM reaches it before it has its answer
    child = subprocess.run([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM); "
                            "print('answered')"], capture_output=True, text=True, timeout=60)
    print(child.returncode, child.stdout.strip())
""")


@pytest.mark.parametrize("hold, outcome", [("hold", "0 answered"), ("no-hold", "-15")])
def test_the_requeue_call_outlives_the_requeues_own_sigterm(hold, outcome):
    """The SIGTERM block is inherited by the requeue call (without it, scontrol dies and submitit records the
    preempted attempt as an error). A separate process: pytest's own SIGTERM stays unblocked."""
    res = subprocess.run([sys.executable, "-c", HOLD_THEN_REQUEUE, hold], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == outcome


class _Calls:
    """Records the routine's steps as the callers take them (the steps themselves stay real unless stubbed)."""

    def __init__(self, monkeypatch):
        self.seen: list[tuple[str, int]] = []
        for step in ("stop_torchrun", "may_requeue", "hold_for_requeue", "install"):
            real = getattr(NodePreemption, step)
            monkeypatch.setattr(NodePreemption, step, self._spy(step, real))

    def _spy(self, step, real):
        calls = self.seen

        def spy(self, *a, **kw):
            calls.append((step, id(self)))
            return real(self, *a, **kw) if step != "hold_for_requeue" else None  # pytest keeps its SIGTERM

        return spy

    def steps(self):
        return [s for s, _ in self.seen]


@pytest.mark.parametrize("cls", [NodeTask, SlurmNodeTask])
def test_submitits_hook_runs_the_routine_and_requeues_the_same_task_class(cls, tmp_path, monkeypatch):
    calls = _Calls(monkeypatch)
    spec = _spec(tmp_path, "executor.max_requeues=1")
    torchrun = subprocess.Popen([sys.executable, "-c", "import signal, sys\n"
                                 "signal.signal(signal.SIGUSR2, lambda *a: sys.exit(75))\n"
                                 "print('ready', flush=True)\nsignal.pause()\n"], stdout=subprocess.PIPE, text=True)
    assert torchrun.stdout.readline() == "ready\n"
    task = cls(str(spec_path(spec)))
    task._proc = torchrun
    delayed = task.checkpoint()
    assert torchrun.wait(timeout=30) == 75  # the signal reached "torchrun", which stopped
    assert type(delayed.function) is cls and delayed.function.requeues == 1
    assert delayed.function.spec == spec  # the requeued task carries the spec (read from job.yaml here)
    assert calls.steps() == ["stop_torchrun", "may_requeue", "hold_for_requeue"]
    assert len({i for _, i in calls.seen}) == 1  # one routine per task
    task2 = delayed.function
    assert task2.checkpoint() is None  # executor.max_requeues=1 used up: the checkpoint stays, no requeue
    assert calls.steps()[3:] == ["stop_torchrun", "may_requeue"]


def test_slurm_node_task_installs_the_routine_on_every_node(tmp_path, monkeypatch):
    calls = _Calls(monkeypatch)
    spec = _spec(tmp_path)
    monkeypatch.setattr(NodeTask, "__call__", lambda self: signal.raise_signal(signal.SIGUSR2) or "ran")
    previous = []
    old = signal.signal(signal.SIGUSR2, lambda s, f: previous.append(s))  # stands in for submitit's handler
    try:
        task = SlurmNodeTask(str(spec_path(spec)))
        assert task() == "ran"
    finally:
        signal.signal(signal.SIGUSR2, old)
    assert calls.steps() == ["install", "stop_torchrun"]  # on the signal, before submitit's handler
    assert previous == [signal.SIGUSR2] and task.preemption().received


def test_the_sbatch_entry_runs_the_routine(tmp_path, monkeypatch):
    """Node 0 of a plain sbatch job: the signal comes while training runs; the report says preempted; the node
    decides through the routine, requeues with SIGTERM held, then waits for the requeue to stop it."""
    calls = _Calls(monkeypatch)
    spec = _spec(tmp_path, "executor.max_requeues=2")
    requeued = []

    def train(self):
        signal.raise_signal(signal.SIGUSR2)  # Slurm's --signal, while torchrun runs
        return NodeReport(host="h", node_rank=0, job_id="7", exit_code=1, wall_s=1.0, preempted=True)

    monkeypatch.setattr(NodeTask, "__call__", train)
    monkeypatch.setattr(entry, "_claim_run_dir", lambda spec, job_id: True)
    monkeypatch.setattr(entry, "placement_from_env", lambda: Placement(0, 1, "7", "h", "localhost", None))
    monkeypatch.setattr(entry, "scontrol_requeue", lambda job_id: requeued.append(job_id) or True)
    monkeypatch.setattr(NodePreemption, "await_requeue_kill", staticmethod(lambda: requeued.append("stopped")))
    old = signal.getsignal(signal.SIGUSR2)
    try:
        assert entry.run(str(spec_path(spec))) == 0
    finally:
        signal.signal(signal.SIGUSR2, old)
    assert calls.steps() == ["install", "stop_torchrun", "may_requeue"]
    assert requeued == ["7", "stopped"]


@pytest.mark.parametrize("code, train, expected", [
    (-signal.SIGUSR2, {"steps": 20, "max_steps": 20}, 0),  # pruned or cancelled as it finished: complete
    (-signal.SIGTERM, {"steps": 20, "max_steps": 20}, 0),
    (-signal.SIGUSR2, {"steps": 5, "max_steps": 20}, -signal.SIGUSR2),  # stopped short: not complete
    (-signal.SIGUSR2, {"steps": 20, "max_steps": 20, "preempted": True}, -signal.SIGUSR2),
    (-signal.SIGKILL, {"steps": 20, "max_steps": 20}, -signal.SIGKILL),  # not a stop signal hpc_ft sends
    (-signal.SIGUSR2, None, -signal.SIGUSR2),  # no result: nothing says it finished
    (1, {"steps": 20, "max_steps": 20}, 1),
])
def test_a_stop_signal_that_reaches_torchrun_after_training_finished_is_no_failure(tmp_path, code, train, expected):
    """`hpc-ft tune` said "trial 1 pruned after step 5", the trial had run its 20 steps, and torchrun, past its
    handlers, died of USR2: status and list showed the complete trial FAILED (exit -12)."""
    from hpc_ft.node.task import finished_code
    from hpc_ft.rundir.records import TrainResult

    spec = resolve(compose_conf(["model=mlp", "data=synthetic"], run_dir=tmp_path / "run"), [])
    assert finished_code(code, None if train is None else TrainResult(**train), spec) == expected


@pytest.mark.parametrize("code, train, stop_sent, expected", [
    (1, {"steps": 20, "max_steps": 20}, True, 0),  # torchrun's handler took the stop as the workers ended
    (1, {"steps": 20, "max_steps": 20}, False, 1),  # no stop was sent: a real failure after the last step
    (1, {"steps": 5, "max_steps": 20}, True, 1),  # stopped short
    (1, None, True, 1),
])
def test_a_stop_torchrun_handled_after_training_finished_is_no_failure(tmp_path, code, train, stop_sent, expected):
    """`hpc-ft tune` asked a 60-step trial to stop after step 20; it had trained its 60 steps when the signal came,
    torchrun raised SignalException and exited 1, and the complete trial's node report said it failed."""
    from hpc_ft.node.task import finished_code
    from hpc_ft.rundir.records import TrainResult

    spec = resolve(compose_conf(["model=mlp", "data=synthetic"], run_dir=tmp_path / "run"), [])
    got = finished_code(code, None if train is None else TrainResult(**train), spec, stop_sent=stop_sent)
    assert got == expected


def test_the_forwarder_knows_which_torchrun_it_signalled():
    import subprocess
    import sys

    from hpc_ft.node.preempt import PreemptForwarder

    class Task:
        _proc = None

    task = Task()
    fwd = PreemptForwarder(task, signal.SIGUSR2)
    fwd.forward()  # no torchrun yet: nothing sent
    task._proc = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
    try:
        assert not fwd.sent_to(task._proc.pid)
        fwd.forward()
        assert fwd.sent_to(task._proc.pid)
        assert task._proc.wait(timeout=30) == -signal.SIGUSR2
    finally:
        task._proc.kill()
        task._proc.wait(timeout=30)
