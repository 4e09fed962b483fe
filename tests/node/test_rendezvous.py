"""Node placement, the rendezvous port every node agrees on, and the torchrun argv for one node and for several."""

import socket
import threading

import pytest

from hpc_ft.config.compose import compose_conf
from hpc_ft.errors import LaunchError
from hpc_ft.job import resolve
from hpc_ft.node.launch import torchrun_argv, worker_env
from hpc_ft.node.rdzv_store import EXCLUDED_PORTS, RendezvousRecord, agree_endpoint, record_path
from hpc_ft.node.rendezvous import Placement, placement_from_env


def _spec(tmp_path, *overrides):
    return resolve(compose_conf(["model=mlp", "data=synthetic", *overrides], run_dir=tmp_path))


def test_single_process_fallback():
    p = placement_from_env({})
    assert (p.node_rank, p.nnodes, p.standalone) == (0, 1, True)


def test_local_executor_emulated_nodes():
    env = {"SUBMITIT_LOCAL_JOB_ID": "4321", "SUBMITIT_LOCAL_NTASKS": "2", "SUBMITIT_LOCAL_GLOBALID": "1"}
    p = placement_from_env(env)
    assert (p.node_rank, p.nnodes, p.rdzv_host, p.rdzv_port) == (1, 2, "127.0.0.1", None)  # port: node 0 picks


def test_slurm_multi_node_uses_first_host():
    env = {"SLURM_JOB_ID": "777", "SLURM_NODEID": "2", "SLURM_JOB_NUM_NODES": "3",
           "SLURM_JOB_NODELIST": "gpu[07-08],cpu1", "SLURMD_NODENAME": "cpu1", "SLURM_RESTART_COUNT": "1"}
    p = placement_from_env(env)
    assert (p.node_rank, p.nnodes, p.rdzv_host, p.host, p.restart) == (2, 3, "gpu07", "cpu1", 1)
    assert p.rdzv_port is None  # chosen by node 0 when the job starts


def test_slurm_nodelist_count_mismatch_is_refused():
    env = {"SLURM_JOB_ID": "1", "SLURM_NODEID": "0", "SLURM_JOB_NUM_NODES": "3", "SLURM_JOB_NODELIST": "a[1-2]"}
    with pytest.raises(LaunchError, match="expands to 2 hosts"):
        placement_from_env(env)


def _node(job_id: str, rank: int, restart: int = 0) -> Placement:
    return Placement(rank, 2, job_id, "h", "localhost", None, restart)


def _connects(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("localhost", port)) == 0


def test_jobs_sharing_a_host_get_distinct_free_ports_and_every_node_agrees(tmp_path):
    """1234567 and 1254567 both got 24567 from `10000 + id % 20000`, and 19500 got torchrun's own 29500."""
    ids = ["1234567", "1254567", "19500"]
    # A port already in use on the host (the one the old rule gave the first job) must not be picked.
    with socket.socket() as busy:
        busy.bind(("", 0))
        busy.listen()
        with agree_endpoint(_node(ids[0], 0), tmp_path / ids[0]) as a0, \
                agree_endpoint(_node(ids[1], 0), tmp_path / ids[1]) as b0, \
                agree_endpoint(_node(ids[2], 0), tmp_path / ids[2]) as c0:
            ports = [a0.rdzv_port, b0.rdzv_port, c0.rdzv_port]
            assert len(set(ports)) == 3 and busy.getsockname()[1] not in ports
            assert not set(ports) & set(EXCLUDED_PORTS)
            assert all(_connects(p) for p in ports)  # node 0 holds the store: nobody else can take the port
            for job, host_side in zip(ids, (a0, b0, c0)):
                with agree_endpoint(_node(job, 1), tmp_path / job, timeout_s=5) as other:
                    assert other.rdzv_port == host_side.rdzv_port and other.rdzv_host == "localhost"
    assert RendezvousRecord.from_json(record_path(tmp_path / ids[0]).read_text()).job_id == ids[0]


def test_a_node_waits_for_node_0_and_never_uses_an_earlier_runs_record(tmp_path):
    with agree_endpoint(_node("42", 0), tmp_path):
        pass  # the first run of job 42 ended; its record stays in the run dir
    got = {}
    waiter = threading.Thread(target=lambda: got.update(p=_enter(_node("42", 1, restart=1), tmp_path)))
    waiter.start()  # node 1 of the requeued run starts before node 0 publishes
    with agree_endpoint(_node("42", 0, restart=1), tmp_path) as host_side:
        waiter.join(timeout=30)
        assert got["p"].rdzv_port == host_side.rdzv_port


def _enter(place, run_dir):
    with agree_endpoint(place, run_dir, timeout_s=30) as p:
        return p


def test_a_node_whose_node_0_never_publishes_fails_with_a_clear_error(tmp_path):
    with agree_endpoint(_node("7", 0), tmp_path):
        pass
    with pytest.raises(LaunchError, match=r"node 0 did not publish the rendezvous port of job 7 .*earlier run"):
        _enter_with_timeout(_node("7", 1, restart=2), tmp_path)


def _enter_with_timeout(place, run_dir):
    with agree_endpoint(place, run_dir, timeout_s=0.3):
        pass


def test_argv_one_node_is_standalone(tmp_path):
    spec = _spec(tmp_path)
    argv = torchrun_argv(spec, Placement(0, 1, "9", "h", "localhost", None), python="py")
    assert argv[:3] == ["py", "-m", "torch.distributed.run"]
    assert "--standalone" in argv and "--nnodes=1" in argv and "--nproc-per-node=2" in argv
    assert not any(a.startswith("--rdzv-endpoint") for a in argv)
    assert argv[-3:] == ["-m", "hpc_ft.train", str(spec.spec_path)]


def test_argv_n_nodes_rendezvous_on_first_host(tmp_path):
    spec = _spec(tmp_path, "resources.nodes=3", "executor.preempt_signal=SIGUSR2")
    argv = torchrun_argv(spec, Placement(1, 3, "55", "n2", "n1", 10055), python="py")
    assert "--nnodes=3" in argv and "--rdzv-backend=c10d" in argv
    assert "--rdzv-endpoint=n1:10055" in argv and "--rdzv-id=hpc_ft-55" in argv
    assert "--rdzv-conf=is_host=0" in argv  # node 0's task hosts the store; no agent may take over a port
    sig = next(a for a in argv if a.startswith("--signals-to-handle="))
    assert "SIGUSR2" in sig.split("=", 1)[1].split(",") and "SIGTERM" in sig


def test_worker_env(tmp_path):
    spec = _spec(tmp_path, "resources.cpus_per_task=8", "+executor.env.MY_VAR=x")
    env = worker_env(spec, Placement(1, 2, "5", "h", "h0", 10005), base={})
    assert env["HPC_FT_NODE_RANK"] == "1" and env["OMP_NUM_THREADS"] == "4" and env["MY_VAR"] == "x"
