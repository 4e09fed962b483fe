"""The memory estimate: traced on fake tensors, it matches the peak a real training step measures; a GPU job that
cannot fit is refused before dispatch with the overrides that make it fit; the report sets both figures side by side."""

from __future__ import annotations

import json
import time

import pytest
import torch

from hpc_ft.estimate.model import GIB, FitReport, MemoryEstimate, fit_problem, gpu_memory_bytes, usable_bytes


def sft(model_dir, data_file, *extra):
    return ["task=causal_lm_sft", "model=hf", f"model.path={model_dir}", "data=files", f"data.path={data_file}",
            "data.prompt_field=prompt", "data.response_field=response", "data.max_length=48", "precision=fp32",
            "train.max_steps=2", "train.global_batch_size=8", "train.warmup_steps=1", "train.eval_every_steps=0",
            "train.num_threads=1", "telemetry=off", *extra]


def run_in_process(overrides, run_dir):
    """One real training run in this process (world size 1), as the debug executor runs it; returns its spec and
    the measured peak."""
    from hpc_ft.config.compose import compose_conf
    from hpc_ft.rundir.spec import write_spec
    from hpc_ft.submit.executors import resolve
    from hpc_ft.train.distributed import Dist
    from hpc_ft.train.loop import Trainer

    spec = resolve(compose_conf([*overrides, "executor=debug"], run_dir=run_dir))
    write_spec(spec)
    trainer = Trainer(spec, Dist(0, 0, 1, 0, torch.device("cpu")), time.monotonic())
    trainer.setup()
    assert trainer.train() == 0
    return spec, trainer.peak.bytes


@pytest.mark.parametrize("extra", [[], ["precision=bf16"], ["train.grad_accum_steps=2"], ["peft=lora"],
                                   ["train.activation_checkpointing=true"],
                                   ["peft=lora", "train.activation_checkpointing=true"]],
                         ids=["fp32", "bf16", "accumulation", "lora", "checkpointed", "lora-checkpointed"])
def test_the_estimate_is_within_20_percent_of_the_measured_peak(extra, tmp_path, llama_dir, pairs_file,
                                                                   in_process):
    from hpc_ft.estimate.trace import trace_memory

    spec, measured = run_in_process(sft(llama_dir, pairs_file, *extra), tmp_path / "run")
    est = trace_memory(spec)
    assert measured and est.peak == pytest.approx(measured, rel=0.20), (est.lines(), measured)
    result = json.loads((spec.run_dir / "nodes" / "node0" / "train.json").read_text())
    assert result["peak_memory_bytes"] == measured and result["peak_memory_source"] == "MemTracker, first step"


@pytest.fixture(scope="module")
def llama_256_dir(tmp_path_factory):
    """The benchmarks' Llama (4 layers, hidden 256, tied embeddings): its activations and its optimizer step weigh
    in the peak, unlike the 2-layer hidden-32 one's."""
    from hpc_ft.testing.hf_models import tiny_llama

    return tiny_llama(tmp_path_factory.mktemp("llama_256"), hidden_size=256, num_layers=4)


@pytest.mark.parametrize("extra", [[], ["train.activation_checkpointing=true"]], ids=["full", "checkpointed"])
def test_the_estimate_of_a_4_layer_hidden_256_llama_is_within_20_percent(extra, tmp_path, llama_256_dir, pairs_file,
                                                                         in_process):
    from hpc_ft.estimate.trace import trace_memory

    # Packed text: every sequence is max_length tokens long, the shape the estimate assumes (padded SFT pairs
    # are shorter than max_length, and the estimate is their worst case).
    overrides = [*sft(llama_256_dir, pairs_file, *extra), "task=causal_lm", "data.text_field=response",
                 "data.packing=true", "data.max_length=128", "train.max_steps=1",
                 "train.global_batch_size=4"]  # a micro-batch of 4: the optimizer step is the peak with AC
    spec, measured = run_in_process(overrides, tmp_path / "run")
    est = trace_memory(spec)
    assert measured and est.peak == pytest.approx(measured, rel=0.20), (est.lines(), measured)


def test_tied_embeddings_are_one_parameter_in_the_trace(tmp_path, llama_256_dir, pairs_file):
    """to_empty() gives each parameter slot its own tensor: a tied embedding would count twice (parameters,
    gradients and optimizer state), the fault that put a checkpointed job's estimate 55% over its measured peak."""
    import transformers

    from hpc_ft.config.compose import compose_conf
    from hpc_ft.estimate.trace import trace_memory
    from hpc_ft.submit.executors import resolve

    real = transformers.AutoModelForCausalLM.from_pretrained(llama_256_dir)
    n = sum(p.numel() for p in real.parameters())  # parameters() yields a shared one once
    spec = resolve(compose_conf([*sft(llama_256_dir, pairs_file), "executor=debug"], run_dir=tmp_path / "run"))
    est = trace_memory(spec)
    assert est.total_params == est.trainable_params == n
    assert est.parameters == pytest.approx(4 * n, rel=1e-3)  # fp32 (and the rotary buffer)


def test_ddp_buckets_add_the_trainable_gradients_wherever_the_peak_falls(tmp_path, llama_256_dir, pairs_file):
    """Two DDP workers hold one more copy of the gradients than one worker at the same micro-batch: DDP's buckets,
    allocated at wrap time. Without checkpointing this job's peak is in the forward pass, where no gradient is
    live: the buckets still count (on a GPU the allocator's peak includes them)."""
    from hpc_ft.config.compose import compose_conf
    from hpc_ft.estimate.trace import trace_memory
    from hpc_ft.submit.executors import resolve

    base = [*sft(llama_256_dir, pairs_file), "task=causal_lm", "data.text_field=response", "data.packing=true",
            "data.max_length=128"]
    one = trace_memory(resolve(compose_conf([*base, "executor=debug", "train.global_batch_size=4"],
                                            run_dir=tmp_path / "one")))
    two = trace_memory(resolve(compose_conf([*base, "executor=local", "resources.workers_per_node=2",
                                             "train.global_batch_size=8"], run_dir=tmp_path / "two")))
    assert one.micro_batch_size == two.micro_batch_size == 4 and one.gradients == 0  # a forward-pass peak
    assert two.peak - one.peak == 4 * one.trainable_params  # fp32 gradients, one bucket copy


def test_the_measured_peak_counts_ddp_buckets_the_tracker_cannot_see():
    import os

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from hpc_ft.train.memory import ddp_bucket_bytes

    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 3))
    assert ddp_bucket_bytes(model) == 0
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    store = dist.HashStore()
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        wrapped = DistributedDataParallel(model)
        assert ddp_bucket_bytes(wrapped) == sum(p.numel() * 4 for p in model.parameters())
    finally:
        dist.destroy_process_group()


def test_a_gpu_job_that_cannot_fit_is_refused_with_its_fix_and_dispatches_nothing(tmp_path, run_cli, llama_dir,
                                                                                   pairs_file):
    args = [*sft(llama_dir, pairs_file, "train.global_batch_size=64", "data.max_length=128"), "resources=gpu",
            "resources.gpus_per_node=1", "executor=slurm", "resources.gpu_mem_gb=2"]
    work = tmp_path / "work"
    work.mkdir()
    done = run_cli("submit", *args, cwd=work)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "resources.gpu_mem_gb=" in done.stderr and "train.grad_accum_steps=" in done.stderr, done.stderr
    assert list(work.iterdir()) == []  # nothing dispatched, no run dir left
    # The fix it names makes the same job fit: the dry run with it passes the check and shows the estimate.
    fix = next(w for w in done.stderr.split() if w.startswith("train.grad_accum_steps="))
    ok = run_cli("submit", *args, fix, "dry_run=true", cwd=work)
    assert ok.returncode == 0, ok.stderr
    shown = json.loads(ok.stdout)["memory_estimate"]
    assert shown["fits"] is True and shown["estimate"]["peak"] <= usable_bytes(2 * GIB)


def test_the_estimate_command_prints_the_breakdown_and_leaves_nothing(tmp_path, run_cli):
    done = run_cli("estimate", "model=mlp", "data=synthetic", "train.global_batch_size=32", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "peak" in done.stdout and "optimizer state" in done.stdout and "a CPU job" in done.stdout
    assert list(tmp_path.iterdir()) == []


def test_gpu_memory_comes_from_the_override_then_the_table():
    class R:
        gpu_mem_gb, gpu_type = None, "A100_80G"

    assert gpu_memory_bytes(R) == (80 * GIB, "A100_80G: 80 GiB")
    R.gpu_mem_gb = 24
    assert gpu_memory_bytes(R)[0] == 24 * GIB
    R.gpu_mem_gb, R.gpu_type = None, "mystery9000"
    size, why = gpu_memory_bytes(R)
    assert size is None and "resources.gpu_mem_gb" in why
    assert usable_bytes(int(41 * GIB)) == int(40 * GIB * 0.92)


def test_a_fit_problem_names_the_key_the_need_and_every_fix():
    est = MemoryEstimate(peak=50 * GIB)
    fits = FitReport(estimate=est, gpu_bytes=80 * GIB, gpu_source="h100: 80 GiB", fits=True)
    assert fit_problem(fits) is None
    bad = FitReport(estimate=est, gpu_bytes=40 * GIB, gpu_source="a100: 40 GiB", fits=False,
                    fixes=[["train.grad_accum_steps=2"], ["peft=lora"]], fix_peaks=[30 * GIB, 20 * GIB])
    p = fit_problem(bad)
    assert (p.key, p.value) == ("resources.gpu_type", "a100")
    assert "50.00 GiB" in p.rule and "train.grad_accum_steps=2 | peft=lora" in p.fix
    assert FitReport.from_dict(json.loads(json.dumps(bad.to_dict()))) == bad


def test_the_report_sets_the_estimate_beside_the_measured_peak(tmp_path):
    from hpc_ft.report.build import memory_figures
    from hpc_ft.rundir.layout import RunDir
    from hpc_ft.rundir.records import TrainResult

    assert memory_figures(tmp_path, []) == {}
    est = FitReport(estimate=MemoryEstimate(peak=110 * 1024 ** 2), gpu_bytes=None, gpu_source="", fits=None)
    RunDir(tmp_path).memory_estimate.write_text(json.dumps(est.to_dict()))
    trains = [TrainResult(peak_memory_bytes=100 * 1024 ** 2, peak_memory_source="MemTracker, first step"),
              TrainResult(peak_memory_bytes=None)]
    m = memory_figures(tmp_path, trains)
    assert m["estimated_bytes"] == 110 * 1024 ** 2 and m["measured_bytes"] == 100 * 1024 ** 2
    assert m["estimate_error"] == pytest.approx(0.10)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_the_estimate_is_within_20_percent_of_a_two_worker_run(strategy, tmp_path, run_cli, llama_dir, pairs_file):
    """2 gloo workers through the local executor: DDP's buckets and FSDP2's sharding are added by rule."""
    from hpc_ft.estimate.trace import trace_memory
    from hpc_ft.job import JobSpec

    run = tmp_path / "run"
    done = run_cli("submit", *sft(llama_dir, pairs_file, f"train.strategy={strategy}"), "executor=local",
                   f"hydra.run.dir={run}")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    measured = [json.loads((run / "nodes" / "node0" / "train.json").read_text())["peak_memory_bytes"]]
    spec = JobSpec.load(run / "job.yaml")
    assert spec.world_size == 2
    est = trace_memory(spec)
    assert est.peak == pytest.approx(measured[0], rel=0.20), (est.lines(), measured)


def test_plan_shows_one_estimate_per_distinct_gpu_job(tmp_path, run_cli):
    done = run_cli("plan", "-m", "optim.lr=1e-5,3e-5", "train.global_batch_size=64,1024", "resources=gpu",
                   "executor=slurm", "resources.gpu_mem_gb=1.2", "model=mlp", "data=synthetic", "--no-queue",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    memory = [line for line in done.stdout.splitlines() if line.startswith("memory, ")]
    # the learning rate changes no job's memory: two figures for four jobs
    assert [m.split(":")[0] for m in memory] == ["memory, jobs 0,2", "memory, jobs 1,3"], done.stdout
    assert all("fits one GPU" in m for m in memory)
    cpu = run_cli("plan", "-m", "optim.lr=1e-5,3e-5", "model=mlp", "data=synthetic", "--no-queue", cwd=tmp_path)
    assert cpu.returncode == 0 and "memory, " not in cpu.stdout


def test_advice_doubles_the_micro_batch_when_estimate_and_measurement_leave_room(tmp_path):
    from hpc_ft.config.compose import compose_conf
    from hpc_ft.job import resolve
    from hpc_ft.report.advice import advise

    spec = resolve(compose_conf(["model=mlp", "data=synthetic", "train.grad_accum_steps=4",
                                 "train.global_batch_size=64"], run_dir=tmp_path / "run"))
    gib = 1024 ** 3
    roomy = {"measured_bytes": 10 * gib, "usable_bytes": 70 * gib, "estimated_activation_bytes": 8 * gib}
    [a] = [a for a in advise(spec, [], [], {}, roomy) if a.key == "train.grad_accum_steps"]
    assert a.value == 2 and "18.0 GiB" in a.reason
    tight = {**roomy, "estimated_activation_bytes": 50 * gib}  # doubled activations would pass 80% of the GPU
    assert not [a for a in advise(spec, [], [], {}, tight) if a.key == "train.grad_accum_steps"]
    assert not [a for a in advise(spec, [], [], {}, {}) if a.key == "train.grad_accum_steps"]


# --- what a new user found in `hpc-ft estimate`: it estimates on a login node, says when nothing fits, and prints
# only its result -------------------------------------------------------------------------------------------------

def test_the_estimate_of_a_gpu_job_skips_this_machines_gpu_count_and_keeps_every_other_check(tmp_path, monkeypatch,
                                                                                            capsys):
    """The README's form (resources=gpu resources.gpu_type=a100, the local executor) was refused on a machine without
    GPUs: the estimate dispatches nothing, so only the job's own checks apply."""
    import importlib

    from hpc_ft.cli import main as cli_main

    # A login node (hpc_ft.config's validate function hides its module of the same name from a dotted path).
    monkeypatch.setattr(importlib.import_module("hpc_ft.config.validate"), "local_gpu_count", lambda: 0)
    monkeypatch.chdir(tmp_path)
    job = ["model=mlp", "data=synthetic", "train.global_batch_size=32", "resources=gpu", "resources.gpu_type=a100"]
    assert cli_main(["estimate", *job]) == 0
    out = capsys.readouterr()
    assert "  fits: " in out.out and "GPU(s)" not in out.out + out.err, out.err
    assert cli_main(["estimate", *job, "resources.nodes=0"]) == 2  # the job's own checks stand
    assert "resources.nodes=0: must be at least 1" in capsys.readouterr().err
    assert cli_main(["submit", *job, "dry_run=true"]) == 2  # a submission still counts this machine's GPUs
    assert "the local executor runs on this machine, which has 0 GPU(s)" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_an_estimate_that_no_change_makes_fit_says_so_and_exits_1(tmp_path, monkeypatch, capsys):
    """Under the 1 GiB set aside for the CUDA context nothing fits: "does NOT fit" came with no "fits with" line, no
    word that no change helps, and exit 0."""
    from hpc_ft.cli import COMMAND_USAGE, EXIT_DOES_NOT_FIT
    from hpc_ft.cli import main as cli_main

    none_fits = FitReport(estimate=MemoryEstimate(peak=5 * 1024 ** 2), gpu_bytes=int(0.03 * GIB),
                          gpu_source="resources.gpu_mem_gb=0.03", fits=False)
    monkeypatch.setattr("hpc_ft.estimate.fit.fit_report", lambda spec: none_fits)  # what the trace found
    monkeypatch.chdir(tmp_path)
    assert cli_main(["estimate", "model=mlp", "data=synthetic", "resources=gpu", "executor=slurm",
                     "resources.gpu_mem_gb=0.03"]) == EXIT_DOES_NOT_FIT == 1
    out = capsys.readouterr().out
    assert "does NOT fit: 5.0 MiB against 0.0 MiB usable" in out and "fits with" not in out
    assert ("no change it tried makes it fit (more accumulation steps, activation checkpointing, FSDP2, twice the "
            "GPUs with FSDP2, LoRA, and pairs of these): it needs a GPU with more memory") in out
    some_fit = FitReport(estimate=none_fits.estimate, gpu_bytes=none_fits.gpu_bytes, gpu_source="", fits=False,
                         fixes=[["peft=lora"]], fix_peaks=[1])
    assert not any("no change" in line for line in some_fit.lines())
    assert "1 it does not fit, 2 bad input" in COMMAND_USAGE["estimate"]


def test_the_estimate_shows_neither_the_traced_jobs_setup_logs_nor_peft_s_deprecation_warning(tmp_path, caplog,
                                                                                               llama_dir, pairs_file):
    """Its output was the result among hpc_ft's [INFO] lines (LoRA, activation checkpointing: the traced job's setup)
    and transformers' `is_gradient_checkpointing` FutureWarning (raised by peft)."""
    import logging
    import warnings

    from hpc_ft.config.compose import compose_conf
    from hpc_ft.estimate.fit import fit_report
    from hpc_ft.submit.executors import resolve

    spec = resolve(compose_conf(sft(llama_dir, pairs_file, "peft=lora", "train.activation_checkpointing=true"),
                                run_dir=tmp_path / "run"))
    caplog.set_level(logging.INFO)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        report = fit_report(spec)
        warnings.warn("`is_gradient_checkpointing` is deprecated", FutureWarning)  # the filter is gone after it
    assert report.estimate.peak > 0
    assert [r.getMessage() for r in caplog.records if r.name.startswith("hpc_ft")] == []
    assert [str(w.message) for w in seen if "is_gradient_checkpointing" in str(w.message)] == [
        "`is_gradient_checkpointing` is deprecated"]
    assert logging.getLogger("hpc_ft").level == logging.NOTSET
