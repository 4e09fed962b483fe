"""Node placement and the torchrun argv for one node and for several."""

import pytest

from hpc_ft.config.compose import compose_conf
from hpc_ft.errors import LaunchError
from hpc_ft.job import resolve
from hpc_ft.node.launch import torchrun_argv, worker_env
from hpc_ft.node.rendezvous import Placement, derive_port, placement_from_env


def _spec(tmp_path, *overrides):
    return resolve(compose_conf(["model=mlp", "data=synthetic", *overrides], run_dir=tmp_path))


def test_single_process_fallback():
    p = placement_from_env({})
    assert (p.node_rank, p.nnodes, p.standalone) == (0, 1, True)


def test_local_executor_emulated_nodes():
    env = {"SUBMITIT_LOCAL_JOB_ID": "4321", "SUBMITIT_LOCAL_NTASKS": "2", "SUBMITIT_LOCAL_GLOBALID": "1"}
    p = placement_from_env(env)
    assert (p.node_rank, p.nnodes, p.rdzv_host, p.rdzv_port) == (1, 2, "127.0.0.1", derive_port("4321"))


def test_slurm_multi_node_uses_first_host_and_job_port():
    env = {"SLURM_JOB_ID": "777", "SLURM_NODEID": "2", "SLURM_JOB_NUM_NODES": "3",
           "SLURM_JOB_NODELIST": "gpu[07-08],cpu1", "SLURMD_NODENAME": "cpu1"}
    p = placement_from_env(env)
    assert (p.node_rank, p.nnodes, p.rdzv_host, p.host) == (2, 3, "gpu07", "cpu1")
    assert p.rdzv_port == derive_port("777")


def test_slurm_nodelist_count_mismatch_is_refused():
    env = {"SLURM_JOB_ID": "1", "SLURM_NODEID": "0", "SLURM_JOB_NUM_NODES": "3", "SLURM_JOB_NODELIST": "a[1-2]"}
    with pytest.raises(LaunchError, match="expands to 2 hosts"):
        placement_from_env(env)


def test_ports_differ_between_jobs_and_avoid_defaults_and_ephemeral_range():
    ports = {derive_port(str(j)) for j in range(1000, 1100)}
    assert len(ports) == 100
    assert all(10000 <= p < 30000 for p in ports)
    assert derive_port("123_4") == derive_port("1234")


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
    sig = next(a for a in argv if a.startswith("--signals-to-handle="))
    assert "SIGUSR2" in sig.split("=", 1)[1].split(",") and "SIGTERM" in sig


def test_worker_env(tmp_path):
    spec = _spec(tmp_path, "resources.cpus_per_task=8", "+executor.env.MY_VAR=x")
    env = worker_env(spec, Placement(1, 2, "5", "h", "h0", 10005), base={})
    assert env["HPC_FT_NODE_RANK"] == "1" and env["OMP_NUM_THREADS"] == "4" and env["MY_VAR"] == "x"
