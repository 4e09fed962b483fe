"""executor=slurm on the real local cluster: 2-node training, failures, preflight, preemption and requeue."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hpc_ft.node.rdzv_store import RendezvousRecord, record_path
from hpc_ft.rundir.layout import RunDir
from tests.slurm.conftest import assert_bitwise_equal, sacct_runs, wait_job_done
from tests.conftest import wait_until

pytestmark = pytest.mark.slurm

SLURM = ["executor=slurm", "resources.mem_gb=1", "resources.timeout_min=10", "executor.poll_interval_s=0.5"]
HOLD_AT = 8  # the test hook holds training after this step until the preemption signal arrives


def results(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "results.json").read_text())


def node_report(run_dir: Path, rank: int) -> dict:
    return json.loads(RunDir(run_dir).node(rank).report.read_text())


def final_weights(run_dir: Path) -> dict:
    from hpc_ft.train.checkpoint import load_latest

    return load_latest(run_dir).state["model"]


def submitted_job_id(stdout: str) -> str:
    m = re.search(r"submitted job (\S+)", stdout)
    assert m, stdout
    return m.group(1)


def test_two_nodes_train_one_world_and_both_report(slurm_cluster, run_cli, synth, tmp_path, reference_weights):
    run = tmp_path / "run"
    res = run_cli("submit", *synth, *SLURM, "resources.nodes=2", f"hydra.run.dir={run}")
    assert res.returncode == 0, res.stdout + res.stderr
    job_id = submitted_job_id(res.stdout)
    nodes = results(run)
    assert [n["node_rank"] for n in nodes] == [0, 1]
    assert sorted(n["host"] for n in nodes) == ["node01", "node02"]
    assert all(n["exit_code"] == 0 and n["job_id"] == job_id for n in nodes)
    assert all(n["train"]["world_size"] == 4 and n["train"]["steps"] == 20 for n in nodes)
    # Rendezvous: first host of the allocation, the port node 0 published for this job, the same on both nodes.
    rec = RendezvousRecord.from_json(record_path(run).read_text())
    assert rec.job_id == job_id
    for rank in (0, 1):
        argv = json.loads((run / "nodes" / f"node{rank}" / "torchrun_argv.json").read_text())
        assert f"--rdzv-endpoint=node01:{rec.port}" in argv and "--nnodes=2" in argv
    # The nodes' results arrive before the job step ends: wait for Slurm's final state, not its state now.
    assert wait_job_done(job_id) == ["COMPLETED"]
    assert_bitwise_equal(final_weights(run), reference_weights(2))


def test_failed_nodes_show_exit_code_and_error_tail(slurm_cluster, run_cli, synth, tmp_path):
    run = tmp_path / "run"
    res = run_cli("submit", *synth, *SLURM, "resources.nodes=2", "model.hidden=-3", f"hydra.run.dir={run}")
    assert res.returncode == 1, res.stdout + res.stderr
    nodes = results(run)
    assert len(nodes) == 2
    for n in nodes:
        assert n["exit_code"] not in (0, None) and "negative dimension" in n["error_tail"], n
    assert "negative dimension" in res.stdout


def test_preflight_refuses_before_anything_is_written(slurm_cluster, run_cli, synth, tmp_path):
    run = tmp_path / "run"
    res = run_cli("submit", *synth, *SLURM, "resources.partition=short", "resources.nodes=2",
                  "resources.timeout_min=30", f"hydra.run.dir={run}")
    assert res.returncode == 2
    assert "resources.nodes=2: partition short allows at most MaxNodes=1" in res.stderr
    assert "resources.timeout_min=30: partition short allows at most MaxTime=00:10:00" in res.stderr
    assert not (run / "job.yaml").exists() and not (run / "submitit").exists()
    # preflight=false skips the check: Slurm takes the job and leaves it pending for good.
    res = run_cli("submit", *synth, *SLURM, "resources.partition=short", "resources.nodes=2", "preflight=false",
                  "wait=false", f"hydra.run.dir={run}")
    assert res.returncode == 0, res.stdout + res.stderr
    job_id = submitted_job_id(res.stdout)
    try:
        reason = wait_until(lambda: subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%r"], capture_output=True,
                                                   text=True, timeout=30).stdout.strip(), 60, "a pending reason")
        assert reason.startswith("Partition"), reason  # PartitionNodeLimit / PartitionTimeLimit
    finally:
        subprocess.run(["scancel", job_id], timeout=30)


def test_preflight_accepts_a_request_that_fits_the_real_cluster(slurm_cluster, make_resources):
    from hpc_ft.submit.preflight import preflight

    preflight(make_resources(nodes=2, gpus_per_node=2, gpu_type="testgpu", mem_gb=8, timeout_min=600))
    preflight(make_resources(nodes=1, partition="short", timeout_min=10))


def test_preemption_requeues_into_the_same_hydra_run_dir_and_resumes_exactly(slurm_cluster, run_cli, synth,
                                                                             tmp_path, reference_weights):
    """No hydra.run.dir: Hydra makes outputs/DATE/TIME; the requeued job must land in that same dir."""
    res = run_cli("submit", *synth, *SLURM, "resources.nodes=1", "wait=false", "executor.preempt_signal_delay_s=60",
                  f"+executor.env.HPC_FT_TEST_HOLD_AT_STEP={HOLD_AT}", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    job_id = submitted_job_id(res.stdout)
    (run,) = (tmp_path / "outputs").glob("*/*")
    wait_until(lambda: (run / "nodes" / "node0" / "held_at_step").exists(), 180, "training to hold")
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=30)
    assert wait_job_done(job_id) == ["REQUEUED", "COMPLETED"]
    assert list((tmp_path / "outputs").glob("*/*")) == [run]  # no second run dir
    node = node_report(run, 0)
    assert node["exit_code"] == 0 and node["train"]["start_step"] == HOLD_AT and node["train"]["steps"] == 20
    assert_bitwise_equal(final_weights(run), reference_weights(1))


@pytest.fixture(scope="module")
def two_node_preempted(slurm_cluster, tmp_path_factory):
    """One 2-node job, held at step HOLD_AT, preempted with USR2, requeued and finished: (spec, reports, runs)."""
    from hpc_ft.config.compose import compose_conf
    from hpc_ft.job import resolve
    from hpc_ft.submit.dispatch import submit
    from hpc_ft.submit.gather import gather, wait
    from tests.conftest import SYNTH

    conf = compose_conf([*SYNTH, *SLURM, "resources.nodes=2", "executor.preempt_signal_delay_s=60"],
                        run_dir=tmp_path_factory.mktemp("preempt2") / "run")
    conf.executor.env = {"HPC_FT_TEST_HOLD_AT_STEP": str(HOLD_AT)}
    spec = resolve(conf)
    job = submit(spec)
    held = [spec.run_dir / "nodes" / f"node{r}" / "held_at_step" for r in (0, 1)]
    wait_until(lambda: all(p.exists() for p in held), 180, "both nodes to hold")
    subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True, timeout=30)
    wait(job, poll_s=0.5, timeout_s=300)
    return spec, gather(job, spec), wait_job_done(job.job_id)


def test_preemption_across_two_nodes_requeues_and_resumes_at_the_step(two_node_preempted):
    spec, reports, runs = two_node_preempted
    assert [r.exit_code for r in reports] == [0, 0], [r.error_tail for r in reports]
    assert all(r.train.start_step == HOLD_AT and r.train.world_size == 4 for r in reports)
    assert all(r.train.steps == 20 for r in reports)
    assert runs == ["REQUEUED", "COMPLETED"]


def test_preemption_across_two_nodes_matches_the_uninterrupted_run(two_node_preempted, reference_weights):
    spec, _, _ = two_node_preempted
    assert_bitwise_equal(final_weights(spec.run_dir), reference_weights(2))


def test_requeues_are_bounded(slurm_cluster, make_spec, tmp_path):
    """executor.max_requeues=0: the preempted job checkpoints and stops instead of requeueing."""
    from hpc_ft.submit.dispatch import submit
    from hpc_ft.submit.gather import gather, wait
    from hpc_ft.train.checkpoint import load_latest

    spec = make_spec(tmp_path / "run", "resources.nodes=1", "executor.max_requeues=0",
                     env={"HPC_FT_TEST_HOLD_AT_STEP": str(HOLD_AT)})
    job = submit(spec)
    wait_until(lambda: (spec.run_dir / "nodes" / "node0" / "held_at_step").exists(), 180, "training to hold")
    subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True, timeout=30)
    wait(job, poll_s=0.5, timeout_s=300)
    (rep,) = gather(job, spec)
    assert rep.exit_code != 0 and "not requeued" in rep.error_tail, rep
    assert "REQUEUED" not in wait_job_done(job.job_id)
    assert load_latest(spec.run_dir).step == HOLD_AT  # the preemption checkpoint is there to resume from


def _next_job_ids(count: int) -> list[int]:
    """The ids this cluster gives the next jobs (it numbers them in order; these tests are its only users)."""
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-a", "-o", "JobIDRaw", "-S", "2000-01-01"], capture_output=True,
                         text=True, timeout=30).stdout
    last = max((int(x) for x in out.split() if x.isdigit()), default=0)
    return list(range(last + 1, last + 1 + count))


def test_two_two_node_jobs_on_the_same_hosts_keep_their_own_rendezvous(slurm_cluster, make_spec, tmp_path):
    """Issue 10.1 on a real Slurm: two 2-node jobs on node01+node02 (one machine) at once, while something else
    listens on the ports the old rule (10000 + id % 20000) would give them. The first is preempted, requeued and
    finishes while the second still trains (its store goes away twice); then the second does the same."""
    import socket

    from hpc_ft.submit.dispatch import submit
    from hpc_ft.submit.gather import gather, wait

    busy = []
    for jid in _next_job_ids(6):  # a port in use on the rendezvous host must never be picked
        s = socket.socket()
        try:
            s.bind(("", 10000 + jid % 20000))
            s.listen()
            busy.append(s)
        except OSError:
            s.close()
    specs = [make_spec(tmp_path / f"run{i}", "resources.nodes=2", "resources.workers_per_node=1",
                       "resources.cpus_per_task=1", env={"HPC_FT_TEST_HOLD_AT_STEP": str(HOLD_AT)}) for i in (0, 1)]
    jobs = [submit(s) for s in specs]
    try:
        for s in specs:
            held = [s.run_dir / "nodes" / f"node{r}" / "held_at_step" for r in (0, 1)]
            wait_until(lambda: all(p.exists() for p in held), 240, f"both nodes of job in {s.run_dir} to hold")
        ports = [RendezvousRecord.from_json(record_path(s.run_dir).read_text()).port for s in specs]
        assert ports[0] != ports[1] and not {p for p in ports} & {b.getsockname()[1] for b in busy}
        outcomes = []
        for s, job in zip(specs, jobs):
            subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True, timeout=30)
            wait(job, poll_s=0.5, timeout_s=300)
            outcomes.append((gather(job, s), wait_job_done(job.job_id)))
    finally:
        subprocess.run(["scancel", *[j.job_id for j in jobs]], timeout=30)
        for b in busy:
            b.close()
    assert busy, "no port of the old rule could be occupied"
    for reports, runs in outcomes:
        assert [r.exit_code for r in reports] == [0, 0], [r.error_tail for r in reports]
        assert all(r.train.start_step == HOLD_AT and r.train.steps == 20 for r in reports)
        assert runs == ["REQUEUED", "COMPLETED"]


def test_a_running_slurm_job_holds_its_run_dir_after_the_submitter_returned(slurm_cluster, run_cli, synth, tmp_path):
    """wait=false: hpc-ft has returned, the job holds the dir while squeue lists it (issue 10.2)."""
    run = tmp_path / "run"
    first = run_cli("submit", *synth, *SLURM, "wait=false", f"+executor.env.HPC_FT_TEST_HOLD_AT_STEP={HOLD_AT}",
                    f"hydra.run.dir={run}")
    assert first.returncode == 0, first.stdout + first.stderr
    job_id = submitted_job_id(first.stdout)
    try:
        wait_until(lambda: (run / "nodes" / "node0" / "held_at_step").exists(), 180, "training to hold")
        second = run_cli("submit", *synth, *SLURM, f"hydra.run.dir={run}")
        assert second.returncode == 2, second.stdout + second.stderr
        assert f"in use by job {job_id} (slurm)" in second.stderr and "still running" in second.stderr
        assert "Traceback" not in second.stderr and not (run / "submitit" / "controller.log").exists()
    finally:
        subprocess.run(["scancel", job_id], timeout=30)
    wait_job_done(job_id)
    from hpc_ft.rundir.lock import RunDirLock, detached_job_alive

    owner = RunDirLock(run).read_owner()
    assert owner.detached and owner.job_id == job_id
    wait_until(lambda: detached_job_alive(owner) is False, 60, "squeue to list the job as ended")
    third = run_cli("submit", *synth, *SLURM, f"hydra.run.dir={run}")  # the job has ended: the dir resumes
    assert third.returncode == 0, third.stdout + third.stderr
    (node,) = results(run)
    # scancel's SIGTERM stops training like a preemption: a checkpoint at the held step, resumed from there.
    assert node["train"]["start_step"] == HOLD_AT and node["train"]["steps"] == 20


def _two_attempts(release: str) -> str:
    """A 2-task submitit payload run twice by one Slurm job (tasks wait on files, each wait bounded).

    Attempt 1: task 1 returns at once, so its result file exists; task 0 waits for that file, requeues the job
    as node 0 does after a preemption (hpc_ft.node.preempt) and waits for the requeue to stop it, writing no
    result. Attempt 2: task 0 returns at once; task 1 returns only once the file ``release`` exists.
    """
    import os
    import time

    import submitit
    from submitit.core.utils import JobPaths

    from hpc_ft.node.preempt import NodePreemption, scontrol_requeue

    def wait_for(path: Path) -> None:
        deadline = time.monotonic() + 120
        while not path.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path} did not appear within 120 s")
            time.sleep(0.1)

    env = submitit.JobEnvironment()
    attempt = int(os.environ.get("SLURM_RESTART_COUNT") or 0) + 1
    if attempt == 1 and env.global_rank == 0:
        wait_for(JobPaths(env.paths.folder, env.job_id, 1).result_pickle)
        assert scontrol_requeue(env.job_id), "scontrol requeue failed"
        NodePreemption.await_requeue_kill()
        raise SystemExit(1)  # stopped by the requeue: no result for this attempt
    if attempt == 2 and env.global_rank == 1:
        wait_for(Path(release))
    return f"attempt {attempt}"


def test_waiting_ends_with_the_requeued_jobs_last_run_not_its_first(slurm_cluster, tmp_path):
    """A requeued job's first attempt leaves the result file of every task that returned, and the requeued run
    replaces them one by one: while the last run still works, each task has a result file (submitit's done()),
    one of them the first attempt's. hpc_ft's wait lasts until Slurm has ended the job (the flaky 2-node
    preemption tests gathered node 1's first-attempt report)."""
    import cloudpickle
    import submitit

    from hpc_ft.submit.gather import wait

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the nodes need not import this test module
    ex = submitit.SlurmExecutor(folder=tmp_path / "submitit", max_num_timeout=1)
    ex.update_parameters(nodes=2, ntasks_per_node=1, cpus_per_task=1, mem="256M", time=10,
                         additional_parameters={"requeue": True})
    release = tmp_path / "release"
    job = ex.submit(_two_attempts, str(release))
    try:
        tasks = [job.task(0), job.task(1)]
        wait_until(lambda: all(t.paths.result_pickle.exists() for t in tasks), 180, "a result file per task")
        assert sacct_runs(job.job_id)[0] == "REQUEUED"  # task 0's file is the second run's, task 1's the first's
        assert job.done()  # what submitit alone says
        with pytest.raises(TimeoutError):
            wait(job, poll_s=0.2, timeout_s=3)  # hpc_ft: Slurm still runs the job
        release.touch()
        wait(job, poll_s=0.2, timeout_s=120)
    finally:
        subprocess.run(["scancel", job.job_id], timeout=30)
    assert [t.result() for t in tasks] == ["attempt 2", "attempt 2"]
    assert sacct_runs(job.job_id) == ["REQUEUED", "COMPLETED"]
