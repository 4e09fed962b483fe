"""LoRA, activation checkpointing and FSDP2's pieces in one process: transformer blocks (on the meta device too),
default LoRA targets and the refusal of targets that match nothing, what checkpointing saves, the checks before
dispatch, the resume rules of the new keys, and QLoRA on this machine's CPU (bitsandbytes' CPU backend)."""

from __future__ import annotations

import time

import pytest
import torch

from hpc_ft.config.compose import compose_conf
from hpc_ft.errors import ConfigError
from hpc_ft.job import resolve
from hpc_ft.train.blocks import transformer_blocks
from hpc_ft.train.lora import apply_lora, default_target_modules, trainable_keys
from tests.fit.conftest import sft_overrides

LORA = {"method": "lora", "r": 4, "alpha": 8, "dropout": 0.1, "target_modules": None, "quantize": "none"}


def _meta_model(directory, auto="AutoModelForCausalLM"):
    import transformers

    with torch.device("meta"):
        return getattr(transformers, auto).from_config(transformers.AutoConfig.from_pretrained(directory))


def test_blocks_and_lora_on_meta_models_of_both_architectures(llama_dir, bert_dir):
    llama = _meta_model(llama_dir)
    assert transformer_blocks(llama) == list(llama.model.layers) and len(llama.model.layers) == 2
    bert = _meta_model(bert_dir, "AutoModelForSequenceClassification")
    assert transformer_blocks(bert) == list(bert.bert.encoder.layer)
    assert transformer_blocks(torch.nn.Sequential(torch.nn.Linear(2, 2))) == []
    assert {"q_proj", "v_proj"} <= set(default_target_modules(llama))
    assert {"query", "value"} <= set(default_target_modules(bert))
    # LoRA on a meta model (the memory estimate builds one): the blocks are still found through peft's wrappers.
    lora = apply_lora(llama, LORA)
    assert len(transformer_blocks(lora)) == 2
    assert trainable_keys(lora) and all("lora_" in k for k in trainable_keys(lora))
    from hpc_ft.train.ac import apply_activation_checkpointing

    apply_activation_checkpointing(lora)  # on the meta device too, and the blocks are still the blocks
    assert [type(b).__name__ for b in transformer_blocks(lora)] == ["CheckpointWrapper"] * 2
    assert trainable_keys(lora) == {k for k in lora.state_dict() if "lora_" in k}
    lora_bert = apply_lora(bert, LORA)  # the fresh classification head is trained in full
    assert any(k.startswith("base_model.model.classifier") for k in trainable_keys(lora_bert))


def test_lora_targets_matching_nothing_are_refused_naming_the_model_modules(llama_dir):
    with pytest.raises(ConfigError) as err:
        apply_lora(_meta_model(llama_dir), {**LORA, "target_modules": ["query", "value"]})
    (problem,) = err.value.problems
    assert problem.key == "peft.target_modules" and problem.value == ["query", "value"]
    for name in ("q_proj", "k_proj", "gate_proj", "down_proj"):
        assert name in problem.rule, problem.rule
    assert "peft.target_modules=[" in problem.fix


def _saved_bytes_and_grads(model, batch):
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    torch.manual_seed(1)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(**batch).loss
    loss.backward()
    grads = {n.replace("_checkpoint_wrapped_module.", ""): p.grad.clone() for n, p in model.named_parameters()
             if p.grad is not None}
    return sum(saved), loss.detach(), grads


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_activation_checkpointing_keeps_less_for_backward_and_computes_the_same(llama_dir, lora):
    from transformers import AutoModelForCausalLM

    from hpc_ft.train.ac import apply_activation_checkpointing

    def model(checkpointed):
        torch.manual_seed(0)
        m = AutoModelForCausalLM.from_pretrained(llama_dir)
        m = apply_lora(m, LORA) if lora else m
        if checkpointed:
            apply_activation_checkpointing(m)
        return m.train()

    ids = torch.randint(5, 1000, (4, 24))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    plain_bytes, plain_loss, plain_grads = _saved_bytes_and_grads(model(False), batch)
    ac_model = model(True)
    assert all(hasattr(b, "_checkpoint_wrapped_module") for b in transformer_blocks(ac_model))
    ac_bytes, ac_loss, ac_grads = _saved_bytes_and_grads(ac_model, batch)
    # Each block keeps only its input: at least a few (batch x seq x hidden) activations per block are gone.
    per_activation = 4 * 24 * 32 * 4
    assert plain_bytes - ac_bytes >= 2 * 4 * per_activation, (plain_bytes, ac_bytes)
    # Recomputation replays the RNG (LoRA's dropout): the same loss and gradients, bit for bit.
    assert torch.equal(plain_loss, ac_loss)
    assert plain_grads.keys() == ac_grads.keys()
    for name, g in plain_grads.items():
        assert torch.equal(g, ac_grads[name]), name
    # Checkpoints do not see the wrapper: the same state_dict keys as without it.
    assert set(ac_model.state_dict()) == set(model(False).state_dict())


BAD = [
    (["train.strategy=zero3"], "train.strategy"),
    (["peft.method=prefix"], "peft.method"),
    (["peft=lora", "peft.r=0"], "peft.r"),
    (["peft=lora", "peft.dropout=1.0"], "peft.dropout"),
    (["peft=lora", "peft.quantize=8bit"], "peft.quantize"),
    (["peft.quantize=4bit"], "peft.quantize"),  # a 4-bit base without adapters trains nothing
    (["peft=lora", "peft.quantize=4bit", "train.strategy=fsdp"], "peft.quantize"),
]


@pytest.mark.parametrize("overrides,key", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_fit_settings_are_refused_naming_the_key(tmp_path, overrides, key):
    from hpc_ft.submit.executors import validate

    conf = compose_conf(["model=mlp", "data=synthetic", *overrides], run_dir=tmp_path)
    with pytest.raises(ConfigError) as err:
        validate(conf, gpu_count=lambda: 0)
    assert key in [p.key for p in err.value.problems], str(err.value)


def test_qlora_on_cpu_is_refused_before_dispatch_for_a_model_bitsandbytes_cannot_pack(tmp_path, llama_dir, pairs_file,
                                                                                     run_cli):
    run = tmp_path / "run"
    res = run_cli("submit", *sft_overrides(llama_dir, pairs_file), "peft=lora", "peft.quantize=4bit",
                  f"hydra.run.dir={run}", timeout_s=120)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "peft.quantize" in res.stderr and "hidden_size=32" in res.stderr and "multiples of 64" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (run / "submitit").exists() and not (run / "checkpoints").exists()  # nothing dispatched


def test_resume_rules_of_the_fit_keys(tmp_path):
    from hpc_ft.train.resume import compare

    def conf(*o):
        return resolve(compose_conf(["model=mlp", "data=synthetic", *o], run_dir=tmp_path)).to_dict()["conf"]

    base = conf()
    assert [p.key for p in compare(base, conf("peft=lora"), 2, 2, 10, "RUN").problems] == ["peft.method"]
    assert [p.key for p in compare(base, conf("train.strategy=fsdp"), 2, 2, 10, "RUN").problems] == \
        ["train.strategy"]
    free = compare(base, conf("train.activation_checkpointing=true"), 2, 2, 10, "RUN")
    assert not free.problems and not free.warnings
    # A run dir written before these keys existed ran as their defaults: nothing to refuse.
    old = {k: v for k, v in base.items() if k != "peft"}
    old["train"] = {k: v for k, v in base["train"].items() if k not in ("strategy", "activation_checkpointing")}
    assert not compare(old, base, 2, 2, 10, "RUN").problems


def test_qlora_trains_a_4bit_base_on_this_cpu_and_checkpoints_only_the_adapters(tmp_path, llama64_dir, pairs_file,
                                                                               in_process):
    pytest.importorskip("bitsandbytes", reason="QLoRA needs the qlora extra: pip install 'hpc_ft[qlora]'")
    from hpc_ft.rundir.spec import write_spec
    from hpc_ft.train.checkpoint import load_latest
    from hpc_ft.train.distributed import Dist
    from hpc_ft.train.loop import Trainer

    spec = resolve(compose_conf([*sft_overrides(llama64_dir, pairs_file, 2), "peft=lora", "peft.quantize=4bit",
                                 "executor=debug"], run_dir=tmp_path / "run"))
    write_spec(spec)
    trainer = Trainer(spec, Dist(0, 0, 1, 0, torch.device("cpu")), time.monotonic())
    trainer.setup()
    q_proj = trainer.model.base_model.model.model.layers[0].self_attn.q_proj.base_layer
    assert type(q_proj).__name__ == "Linear4bit" and q_proj.weight.dtype == torch.uint8
    assert trainer.train() == 0
    state = load_latest(spec.run_dir).state["model"]
    assert state and all("lora_" in k for k in state)  # the 4-bit base is never written
    assert trainer.eval_metrics["eval_loss"] == pytest.approx(trainer.eval_metrics["eval_loss"])  # not NaN


def test_bitsandbytes_kernels_hub_note_is_dropped_and_its_other_warnings_are_kept():
    """peft imports bitsandbytes; on AVX512-BF16 CPUs it warned that `kernels` (a Hub download) is missing."""
    import logging
    import subprocess
    import sys

    import hpc_ft.train.lora  # noqa: F401  (installs the filter)

    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")

    def record(msg: str) -> logging.LogRecord:
        return logger.makeRecord(logger.name, logging.WARNING, __file__, 1, msg, ("No module named 'kernels'",), None)

    assert not logger.filter(record("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make "
                                    "sure you already `pip install kernels` and the kernels >= 0.11.1"))
    assert logger.filter(record("any other warning of bitsandbytes: %s"))
    # and for real, whatever this CPU: a LoRA model built and merged through peft prints nothing
    code = ("import hpc_ft.train.lora, torch\n"
            "from peft import LoraConfig, get_peft_model\n"
            "m = get_peft_model(torch.nn.Sequential(torch.nn.Linear(8, 8)), LoraConfig(target_modules=['0'], r=2))\n"
            "m.merge_and_unload()\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "gemm_4bit" not in res.stderr, res.stderr
