"""Bad configs are rejected before dispatch, each problem naming its key, value, rule and fix."""

import pytest

from hpc_ft.config.compose import compose_conf
from hpc_ft.submit.executors import validate  # the config checks with the registered executors' rules
from hpc_ft.errors import ConfigError

BASE = ["model=mlp", "data=synthetic"]

BAD = [
    (["resources.nodes=0"], "resources.nodes"),
    (["precision.dtype=fp8"], "precision"),
    (["optim.lr=0"], "optim.lr"),
    (["optim.lr=-1e-3"], "optim.lr"),
    (["train.global_batch_size=10"], "train.global_batch_size"),  # 2 workers x accum 1: 10 ok; see next
    (["train.global_batch_size=16", "train.grad_accum_steps=3"], "train.global_batch_size"),
    (["resources.gpus_per_node=4"], "resources.gpus_per_node"),  # local executor, no GPU here
    (["executor.preempt_signal=USR1"], "executor.preempt_signal"),
    (["executor.preempt_signal=NOPE"], "executor.preempt_signal"),
    (["run.name='bad name;rm'"], "run.name"),
    (["train.max_steps=0"], "train.max_steps"),
    (["telemetry.interval_s=0"], "telemetry.interval_s"),
    (["resources.timeout_min=0"], "resources.timeout_min"),
    (["sched.policy=random"], "sched.policy"),
    (["executor=debug", "resources.nodes=2"], "resources.nodes"),
    (["+executor.env.BAD-KEY=1"], "executor.env.BAD-KEY"),
    # issue 10.5: signals that cannot be caught (torchrun dies at start), stop/continue the job, or are no signal
    (["executor.preempt_signal=KILL"], "executor.preempt_signal"),
    (["executor.preempt_signal=SIGSTOP"], "executor.preempt_signal"),
    (["executor.preempt_signal=CONT"], "executor.preempt_signal"),
    (["executor.preempt_signal=CHLD"], "executor.preempt_signal"),
    (["executor.preempt_signal=SEGV"], "executor.preempt_signal"),
    (["executor.preempt_signal=PROF"], "executor.preempt_signal"),  # profilers' timer signal
    (["executor.preempt_signal=_DFL"], "executor.preempt_signal"),  # signal.SIG_DFL is a handler, not a signal
    # issue 10.6: the lead time of the preemption signal
    (["executor.preempt_signal_delay_s=-5"], "executor.preempt_signal_delay_s"),
    (["resources.timeout_min=1", "executor.preempt_signal_delay_s=120"], "executor.preempt_signal_delay_s"),
    (["resources.timeout_min=2000", "executor.preempt_signal_delay_s=70000"], "executor.preempt_signal_delay_s"),
    # issue 10.7: values that round to nothing, or can't be numbers of anything
    (["resources.mem_gb=0.0004"], "resources.mem_gb"),
    (["resources.mem_gb=inf"], "resources.mem_gb"),
    (["telemetry.interval_s=inf"], "telemetry.interval_s"),
    (["telemetry.idle_util_pct=150"], "telemetry.idle_util_pct"),
    (["telemetry.price_per_gpu_hour=-1"], "telemetry.price_per_gpu_hour"),
    (["telemetry.gpu_peak_tflops=0"], "telemetry.gpu_peak_tflops"),
    (["executor.poll_interval_s=-1"], "executor.poll_interval_s"),
]


@pytest.mark.parametrize("overrides,key", BAD, ids=[k for _, k in BAD])
def test_bad_config_names_its_key(tmp_path, overrides, key):
    if overrides == ["train.global_batch_size=10"]:
        overrides = ["train.global_batch_size=10", "resources.workers_per_node=4"]
    conf = compose_conf(BASE + overrides, run_dir=tmp_path)
    with pytest.raises(ConfigError) as err:
        validate(conf, gpu_count=lambda: 0)
    keys = [p.key for p in err.value.problems]
    assert key in keys, str(err.value)
    msg = str(err.value)
    assert "Fix:" in msg and key in msg


@pytest.mark.parametrize("sig", ["USR2", "sigterm", "XCPU"])
def test_catchable_preempt_signals_pass(tmp_path, sig):
    validate(compose_conf([*BASE, f"executor.preempt_signal={sig}"], run_dir=tmp_path))


def test_smallest_memory_slurm_can_hold_passes(tmp_path):
    validate(compose_conf([*BASE, "resources.mem_gb=0.001"], run_dir=tmp_path))  # 1 MiB: --mem=1M


def test_all_problems_in_one_error(tmp_path):
    conf = compose_conf(BASE + ["resources.nodes=0", "optim.lr=-1", "precision.dtype=int4"], run_dir=tmp_path)
    with pytest.raises(ConfigError) as err:
        validate(conf, gpu_count=lambda: 0)
    assert {"resources.nodes", "optim.lr", "precision"} <= {p.key for p in err.value.problems}


def test_gpu_request_accepted_where_gpus_exist(tmp_path):
    conf = compose_conf(BASE + ["resources.gpus_per_node=2", "train.global_batch_size=16"], run_dir=tmp_path)
    assert validate(conf, gpu_count=lambda: 2) == []


def test_fp16_on_cpu_is_flagged_not_refused(tmp_path):
    conf = compose_conf(BASE + ["precision=fp16"], run_dir=tmp_path)
    warnings = validate(conf, gpu_count=lambda: 0)
    assert any("fp16" in w and "slow" in w for w in warnings)


def test_default_config_is_valid(tmp_path):
    assert validate(compose_conf([], run_dir=tmp_path), gpu_count=lambda: 0) == []
