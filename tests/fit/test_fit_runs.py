"""LoRA and FSDP2 for real: 2 gloo workers through the local executor (hpc-ft, submitit, torchrun), FSDP2 across 2
emulated nodes, activation checkpointing on in each; preempted and resumed bitwise; a sharded checkpoint resumed at
another world size; a kill mid-checkpoint-write falling back to the previous complete checkpoint; exports of LoRA
(adapter and merged) and FSDP2 runs loaded with from_pretrained, reproducing the run's final evaluation."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch

from hpc_ft.train.checkpoint import list_checkpoints
from tests.fit.conftest import sft_overrides

pytestmark = pytest.mark.slow

STEPS = 4
# Micro-batches of 2 whatever the layout (12 = 2 workers x 3 accumulation steps x 2 = 3 workers x 2 x 2): every
# layout trains on the same micro-batches (hpc_ft.train.data.micro_batches), only summed in another order.
# A small clipping norm keeps clipping active, so the norm across shards is what is checked.
FSDP = ["train.strategy=fsdp", "train.activation_checkpointing=true", "train.global_batch_size=12",
        "train.grad_clip_norm=0.05"]
LORA = ["peft=lora", "train.activation_checkpointing=true", "train.grad_accum_steps=2"]


def _submit(run_cli, overrides, run: Path, env: dict | None = None, expect: int = 0):
    res = run_cli("submit", *overrides, f"hydra.run.dir={run}", env=env, timeout_s=400)
    assert res.returncode == expect, res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    return res


def _losses(run: Path) -> dict[int, float]:
    """The training loss logged at each step (metrics.jsonl's evaluation records left out)."""
    records = map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
    return {r["step"]: r["loss"] for r in records if "loss" in r}



def _export_both_ways(run_cli, run, tmp_path, llama_dir):
    """``hpc-ft export`` of a LoRA run, the adapter alone and ``--merge``d; returns (the adapter on the base, the
    merged model, the run's final eval loss)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from hpc_ft.rundir.layout import RunDir

    # The README's two commands as written, no --out: the adapter and the merged model get folders of their own.
    for extra in ([], ["--merge"]):
        done = run_cli("export", str(run), *extra)
        assert done.returncode == 0, done.stderr
        assert "UserWarning" not in done.stderr, done.stderr  # torch's single-process notice of a sharded load
    step = _train_json(run)["steps"]
    adapter, merged = RunDir(run).export(step), RunDir(run).export(step, merged=True)
    assert adapter.name == f"step_{step:08d}" and merged.name == f"step_{step:08d}_merged"
    assert (adapter / "adapter_model.safetensors").is_file() and not (adapter / "model.safetensors").exists()
    with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(llama_dir), adapter).eval()
    plain = AutoModelForCausalLM.from_pretrained(merged).eval()
    return with_adapter, plain, _train_json(run)["eval_loss"]

def _train_json(run: Path) -> dict:
    return json.loads((run / "nodes" / "node0" / "train.json").read_text())


def _dcp_tensors(path: Path, tmp: Path) -> dict:
    """A sharded checkpoint's weights and optimizer state as full tensors (flattened keys)."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    out = tmp / f"{path.parent.parent.name}_{path.name}.pt"
    dcp_to_torch_save(path, out)
    return _flat(torch.load(out, weights_only=False))


def _flat(tree, prefix=""):
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix: tree}


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k, v in a.items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(v, b[k]), k
        else:
            assert v == b[k], k


def _evaluate(model, run: Path) -> dict:
    """The run's task evaluation of ``model`` over the whole test split, in this one process."""
    from hpc_ft.job import JobSpec
    from hpc_ft.train.distributed import Dist
    from hpc_ft.train.loop import evaluate
    from hpc_ft.train.tasks.base import instantiate

    spec = JobSpec.load(run / "job.yaml")
    task = instantiate(spec.conf.task)
    data = task.build_data(spec.conf)
    return evaluate(model.eval(), task, data, 16, Dist(0, 0, 1, 0, torch.device("cpu")), contextlib.nullcontext), \
        task, data


@pytest.fixture(scope="module")
def fsdp_ref(tmp_path_factory, llama_dir, pairs_file):
    """An uninterrupted FSDP2 run: 2 workers, activation checkpointing, 2 micro-batches per step."""
    from tests.conftest import hpc_ft_cmd

    run = tmp_path_factory.mktemp("fsdp") / "ref"
    _submit(hpc_ft_cmd, [*sft_overrides(llama_dir, pairs_file, STEPS), *FSDP, "train.grad_accum_steps=3"], run)
    return run


def test_fsdp2_preempted_resumes_bitwise_and_exports_a_full_model(tmp_path, fsdp_ref, llama_dir, pairs_file,
                                                                   run_cli):
    from transformers import AutoModelForCausalLM

    from hpc_ft.train.dcp_checkpoint import load_full_model_state

    ov = [*sft_overrides(llama_dir, pairs_file, STEPS), *FSDP, "train.grad_accum_steps=3"]
    run = tmp_path / "run"
    _submit(run_cli, ov, run, env={"HPC_FT_STOP_AFTER_STEP": "2"}, expect=75)
    assert [s for s, _ in list_checkpoints(run)] == [2]
    log = (run / "nodes" / "node0" / "torchrun.log").read_text()
    assert "FSDP2: 2 blocks and the root sharded over 2 workers" in log and "activation checkpointing: 2" in log
    assert log.count("activation checkpointing: 2") == 1  # said by rank 0, not once per worker
    assert "(sharded)" in log and "MB" in log  # the checkpoint's size
    _submit(run_cli, ov, run)
    assert _train_json(run)["start_step"] == 2
    # Bitwise: every shard of weights and optimizer state, and every logged loss after the resume.
    ((_, ref_ckpt),), ((_, ckpt),) = list_checkpoints(fsdp_ref)[-1:], list_checkpoints(run)[-1:]
    _assert_same(_dcp_tensors(ref_ckpt, tmp_path), _dcp_tensors(ckpt, tmp_path))
    assert _losses(run) == {s: v for s, v in _losses(fsdp_ref).items() if s in _losses(run)}

    # The export gathers the shards into one model; from_pretrained gives the checkpoint's logits and the run's
    # final evaluation (summed over 2 workers there, over 1 here: equal up to the summation order).
    out = tmp_path / "exported"
    done = run_cli("export", str(run), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "UserWarning" not in done.stderr, done.stderr  # torch's single-process notice of the sharded load
    exported = AutoModelForCausalLM.from_pretrained(out).eval()
    gathered = AutoModelForCausalLM.from_pretrained(llama_dir).eval()
    load_full_model_state(ckpt, gathered)
    metrics, task, data = _evaluate(exported, run)
    batch = data.test.take(torch.arange(4))
    with torch.no_grad():
        assert torch.equal(task.forward(exported, batch), task.forward(gathered, batch))
    assert metrics["eval_loss"] == pytest.approx(_train_json(run)["eval_loss"], rel=1e-6)


def test_fsdp2_on_two_nodes_killed_mid_write_falls_back_and_resumes_at_another_world_size(tmp_path, fsdp_ref,
                                                                                          llama_dir, pairs_file,
                                                                                          run_cli):
    ov = [*sft_overrides(llama_dir, pairs_file, STEPS), *FSDP]
    run = tmp_path / "run"
    # 2 emulated nodes x 1 worker, every worker killed while writing step 4's checkpoint (after its shards).
    first = run_cli("submit", *ov, "train.grad_accum_steps=3", "resources.nodes=2", "resources.workers_per_node=1",
                    f"hydra.run.dir={run}",
                    env={"HPC_FT_TEST_KILL_IN_CKPT_WRITE": "4"}, timeout_s=400)
    assert first.returncode not in (0, 75), first.stdout + first.stderr
    assert [s for s, _ in list_checkpoints(run)] == [2]  # the half-written step 4 does not count
    assert (run / "checkpoints" / ".step_00000004.dcp.tmp").is_dir()
    # Resumed by 3 workers on one node: the 2 shards are read into 3 (resharded), with the RNG warning.
    res = _submit(run_cli, [*ov, "train.grad_accum_steps=2", "resources.workers_per_node=3"], run)
    assert "world size changed from 2 to 3" in " ".join(res.stdout.split())
    log = (run / "nodes" / "node0" / "torchrun.log").read_text()
    assert "checkpoint has RNG state for 2 ranks, this run has 3: dropout streams restart" in log
    train = _train_json(run)
    assert train["start_step"] == 2 and train["steps"] == STEPS and train["world_size"] == 3
    assert [s for s, _ in list_checkpoints(run)] == [2, 4]
    assert not (run / "checkpoints" / ".step_00000004.dcp.tmp").exists()
    # The same training as the uninterrupted 2-worker run (the same micro-batches, no dropout in the model), up to
    # the order of summation: the resharded weights and optimizer state went on where they stopped. And the same
    # as DDP's (unsharded gradients, torch's own clipping): FSDP2's accumulation and clipping across shards hold.
    ddp = tmp_path / "ddp"
    _submit(run_cli, [*ov, "train.grad_accum_steps=3", "train.strategy=ddp"], ddp)
    ref, by_ddp = _losses(fsdp_ref), _losses(ddp)
    assert ref.keys() == by_ddp.keys() == set(range(1, STEPS + 1))
    for step, loss in ref.items():
        assert loss == pytest.approx(by_ddp[step], rel=1e-4), step
    for step, loss in _losses(run).items():
        assert loss == pytest.approx(ref[step], rel=1e-4), step
    for other in (fsdp_ref, ddp):
        assert train["eval_loss"] == pytest.approx(_train_json(other)["eval_loss"], rel=1e-4)


def test_lora_preempted_resumes_bitwise_checkpoints_adapters_only_and_exports_both_ways(tmp_path, llama_dir,
                                                                                        pairs_file, run_cli):
    ov = [*sft_overrides(llama_dir, pairs_file, STEPS), *LORA]
    ref, run = tmp_path / "ref", tmp_path / "run"
    _submit(run_cli, ov, ref)
    _submit(run_cli, ov, run, env={"HPC_FT_STOP_AFTER_STEP": "2"}, expect=75)
    log = (run / "nodes" / "node0" / "torchrun.log").read_text()
    assert "(LoRA: trainable weights only)" in log and "activation checkpointing: 2" in log
    _submit(run_cli, ov, run)
    assert _train_json(run)["start_step"] == 2
    a = torch.load(list_checkpoints(ref)[-1][1], weights_only=True)
    b = torch.load(list_checkpoints(run)[-1][1], weights_only=True)
    assert a["model"] and all("lora_" in k for k in a["model"])  # the frozen base is never written
    _assert_same(_flat(a["model"]), _flat(b["model"]))
    _assert_same(_flat(a["optimizer"]), _flat(b["optimizer"]))
    assert _losses(run) == {s: v for s, v in _losses(ref).items() if s in _losses(run)}

    with_adapter, plain, final = _export_both_ways(run_cli, run, tmp_path, llama_dir)
    metrics, task, data = _evaluate(with_adapter, run)
    assert metrics["eval_loss"] == pytest.approx(final, rel=1e-6)  # 2 workers' sums there, one process here
    merged_metrics, _, _ = _evaluate(plain, run)
    assert merged_metrics["eval_loss"] == pytest.approx(final, rel=1e-5)  # W + BA: rounded once more
    batch = data.test.take(torch.arange(4))
    with torch.no_grad():
        torch.testing.assert_close(task.forward(plain, batch), task.forward(with_adapter, batch), rtol=1e-4,
                                   atol=1e-4)


def test_lora_with_fsdp2_preempted_resumes_bitwise_and_exports_adapter_and_merged(tmp_path, llama_dir, pairs_file,
                                                                                  run_cli):
    """peft=lora and train.strategy=fsdp together: the adapters sharded over 2 workers (the frozen base too), the
    first step traced by the memory tracker (which once refused FSDP2's unsharded frozen parameters), sharded
    checkpoints of the adapters alone, resumed bitwise, and both exports reproducing the final evaluation."""
    from transformers import AutoModelForCausalLM

    ov = [*sft_overrides(llama_dir, pairs_file, STEPS), *LORA, "train.strategy=fsdp", "train.grad_clip_norm=0.05"]
    ref, run = tmp_path / "ref", tmp_path / "run"
    _submit(run_cli, ov, ref)
    _submit(run_cli, ov, run, env={"HPC_FT_STOP_AFTER_STEP": "2"}, expect=75)
    assert [s for s, _ in list_checkpoints(run)] == [2]
    log = (run / "nodes" / "node0" / "torchrun.log").read_text()
    assert "FSDP2: 2 blocks and the root sharded over 2 workers" in log and "(sharded)" in log
    _submit(run_cli, ov, run)
    assert _train_json(run)["start_step"] == 2
    ((_, ref_ckpt),), ((_, ckpt),) = list_checkpoints(ref)[-1:], list_checkpoints(run)[-1:]
    a, b = _dcp_tensors(ref_ckpt, tmp_path), _dcp_tensors(ckpt, tmp_path)
    weights = [k for k in a if k.startswith("model.")]
    assert weights and all("lora_" in k for k in weights)  # the frozen base is never written
    assert any(k.startswith("optim.") for k in a)
    _assert_same(a, b)  # every adapter shard and its optimizer state
    assert _losses(run) == {s: v for s, v in _losses(ref).items() if s in _losses(run)}
    assert _train_json(run)["peak_memory_bytes"]  # the tracked first step

    with_adapter, plain, final = _export_both_ways(run_cli, run, tmp_path, llama_dir)
    untrained, _, _ = _evaluate(AutoModelForCausalLM.from_pretrained(llama_dir), run)
    assert untrained["eval_loss"] != pytest.approx(final, rel=1e-6)  # the adapters moved the model
    metrics, task, data = _evaluate(with_adapter, run)
    assert metrics["eval_loss"] == pytest.approx(final, rel=1e-6)
    merged_metrics, _, _ = _evaluate(plain, run)
    assert merged_metrics["eval_loss"] == pytest.approx(final, rel=1e-5)
    batch = data.test.take(torch.arange(4))
    with torch.no_grad():
        torch.testing.assert_close(task.forward(plain, batch), task.forward(with_adapter, batch), rtol=1e-4,
                                   atol=1e-4)


def test_qlora_preempted_resumes_bitwise_and_exports_adapter_and_merged(tmp_path, llama64_dir, pairs_file, run_cli):
    """QLoRA (a 4-bit NF4 base through bitsandbytes' CPU backend) with 2 workers: stopped after a checkpoint and
    resumed bit for bit (bitsandbytes would repack its CPU weights on the resumed run's first eval-mode forward and
    round differently: the layout is pinned); the adapter on the base loaded in 4 bits reproduces the final
    evaluation; --merge merges into the full-precision base (peft could merge into the 4-bit base only by
    re-quantizing, which rounds the adapter's change away), so it equals the adapter on the full-precision base."""
    pytest.importorskip("bitsandbytes", reason="QLoRA needs the qlora extra: pip install 'hpc_ft[qlora]'")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from hpc_ft.train.lora import pin_cpu_4bit_layout

    ov = [*sft_overrides(llama64_dir, pairs_file, STEPS), "peft=lora", "peft.quantize=4bit"]
    ref, run = tmp_path / "ref", tmp_path / "run"
    _submit(run_cli, ov, ref)
    _submit(run_cli, ov, run, env={"HPC_FT_STOP_AFTER_STEP": "2"}, expect=75)
    _submit(run_cli, ov, run)
    assert _train_json(run)["start_step"] == 2 and _train_json(run)["world_size"] == 2
    a = torch.load(list_checkpoints(ref)[-1][1], weights_only=True)
    b = torch.load(list_checkpoints(run)[-1][1], weights_only=True)
    assert a["model"] and all("lora_" in k for k in a["model"])  # the 4-bit base is never written
    _assert_same(_flat(a["model"]), _flat(b["model"]))
    _assert_same(_flat(a["optimizer"]), _flat(b["optimizer"]))
    assert _losses(run) == {s: v for s, v in _losses(ref).items() if s in _losses(run)}

    adapter, merged = tmp_path / "adapter", tmp_path / "merged"
    for out, extra in ((adapter, []), (merged, ["--merge"])):
        done = run_cli("export", str(run), "--out", str(out), *extra)
        assert done.returncode == 0, done.stderr
    nf4 = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    base4 = AutoModelForCausalLM.from_pretrained(llama64_dir, quantization_config=nf4, device_map={"": "cpu"},
                                                 dtype=torch.float32)
    pin_cpu_4bit_layout(base4)  # the kernel the run evaluated with
    on_4bit = PeftModel.from_pretrained(base4, adapter).eval()
    final = _train_json(run)["eval_loss"]
    metrics, task, data = _evaluate(on_4bit, run)
    assert metrics["eval_loss"] == pytest.approx(final, rel=1e-6)  # 2 workers' sums there, one process here
    plain = AutoModelForCausalLM.from_pretrained(merged).eval()
    assert not any("4bit" in type(m).__name__ for m in plain.modules())  # a full-precision model
    on_full = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(llama64_dir), adapter).eval()
    batch = data.test.take(torch.arange(4))
    with torch.no_grad():
        torch.testing.assert_close(task.forward(plain, batch), task.forward(on_full, batch), rtol=1e-4, atol=1e-4)
    merged_metrics, _, _ = _evaluate(plain, run)
    assert merged_metrics["eval_loss"] == pytest.approx(final, rel=1e-2)  # only the base's 4-bit rounding apart


def test_fsdp2_trains_in_fp16_with_a_sharded_loss_scaler_and_resumes_bitwise(tmp_path, llama_dir, pairs_file,
                                                                             run_cli):
    """precision=fp16 under FSDP2 (parameters gathered in fp16, gradients reduced in fp32): the loss scaler is a
    ShardedGradScaler (found-inf all-reduced over the workers) that works with the fused AdamW; the loss goes down,
    and the scaler's state is checkpointed and resumed with the rest, bit for bit."""
    ov = [*sft_overrides(llama_dir, pairs_file, 6), "precision=fp16", "train.strategy=fsdp",
          "train.grad_accum_steps=2", "train.grad_clip_norm=1.0"]
    ref, run = tmp_path / "ref", tmp_path / "run"
    _submit(run_cli, ov, ref)
    _submit(run_cli, ov, run, env={"HPC_FT_STOP_AFTER_STEP": "2"}, expect=75)
    log = (run / "nodes" / "node0" / "torchrun.log").read_text()
    assert "FSDP2: 2 blocks and the root sharded over 2 workers (parameters in torch.float16)" in log
    _submit(run_cli, ov, run)
    assert _train_json(run)["start_step"] == 2 and _train_json(run)["precision"] == "fp16"
    losses = _losses(run)
    assert losses == _losses(ref) and losses[6] < losses[1] - 1.0, losses  # nats per response token
    ((_, ref_ckpt),), ((_, ckpt),) = list_checkpoints(ref)[-1:], list_checkpoints(run)[-1:]
    _assert_same(_dcp_tensors(ref_ckpt, tmp_path), _dcp_tensors(ckpt, tmp_path))
    # The scaler went on from the checkpoint's state (a fresh one would have counted 4 steps since the resume).
    scaler = torch.load(ckpt / "meta.pt", weights_only=False)["scaler"]
    assert scaler and scaler == torch.load(ref_ckpt / "meta.pt", weights_only=False)["scaler"]
