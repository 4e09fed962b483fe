"""torchrun's command line stays within what every supported torch release accepts."""

from hpc_ft.config.compose import compose_conf
from hpc_ft.job import resolve
from hpc_ft.node.launch import torchrun_argv, worker_env
from hpc_ft.node.rendezvous import Placement


def test_shutdown_grace_travels_in_the_environment_not_a_flag(tmp_path):
    # torch 2.11 (a GPU image's) exits with "unrecognized arguments: --shutdown-timeout=105" before any worker
    # starts; the environment variable is read by releases that have the setting and ignored by older ones.
    spec = resolve(compose_conf(["model=mlp", "data=synthetic", "executor.preempt_signal_delay_s=120"],
                                run_dir=tmp_path))
    place = Placement(0, 2, "5", "h", "h0", 10005)
    argv = torchrun_argv(spec, place, python="py")
    assert not any(a.startswith("--shutdown") for a in argv)
    assert worker_env(spec, place, base={})["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] == "105"


def test_shutdown_grace_never_below_torchruns_default(tmp_path):
    spec = resolve(compose_conf(["model=mlp", "data=synthetic", "executor.preempt_signal_delay_s=20"],
                                run_dir=tmp_path))
    env = worker_env(spec, Placement(0, 1, "5", "h", "localhost", None), base={})
    assert env["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] == "30"
