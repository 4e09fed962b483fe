"""Causal-LM tasks on a tiny Llama-style checkpoint: the masked SFT loss by hand, chat templates, a real
in-process run on chatterbot-corpus pairs (the loss goes down), and the export's round trip."""

from __future__ import annotations

import json
import time

import pytest
import torch

from hpc_ft.data import FileDataSpec, RawSplits
from hpc_ft.testing.hf_models import minilm_tokenizer, CHAT_TEMPLATE
from hpc_ft.train.tasks.base import IGNORE_INDEX
from hpc_ft.train.tasks.causal_lm import CausalLMSFT, sft_tokens


def _encode(task, tok, rows, **spec_kw):
    import datasets

    ds = datasets.Dataset.from_list(rows)
    spec = FileDataSpec(path="unused.jsonl", **spec_kw)
    enc = task.encoder(RawSplits(ds, ds), tok, spec)
    out = enc.encode({k: [r[k] for r in rows] for k in rows[0]})
    return out, spec


def test_sft_loss_equals_a_hand_computed_loss_on_response_tokens_only(llama_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(llama_dir)
    assert tok.eos_token_id is not None
    rows = [{"prompt": "how are you", "response": "i am fine thanks"},
            {"prompt": "what is your name please", "response": "bot"}]
    task = CausalLMSFT()
    out, _ = _encode(task, tok, rows, prompt_field="prompt", response_field="response", max_length=64)
    batch = task.collate({"input_ids": out["input_ids"], "labels": out["labels"]}, tok.pad_token_id)
    # Prompt and padding are masked: the labelled tokens are exactly each response (+ its end token).
    for i, r in enumerate(rows):
        kept = [t for t in batch["labels"][i].tolist() if t != IGNORE_INDEX]
        assert kept == tok(r["response"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()
    model = AutoModelForCausalLM.from_pretrained(llama_dir).eval()
    with torch.no_grad():
        logits = task.forward(model, batch)
        loss = task.loss(logits, batch)
    # By hand: -log p(next token) at every position whose next token is a response token, averaged.
    logp = torch.log_softmax(logits.float(), -1)
    terms = [-logp[b, t, batch["labels"][b, t + 1]] for b in range(2) for t in range(logits.shape[1] - 1)
             if batch["labels"][b, t + 1] != IGNORE_INDEX]
    assert len(terms) == sum(len(tok(r["response"], add_special_tokens=False)["input_ids"]) + 1 for r in rows)
    torch.testing.assert_close(loss, torch.stack(terms).mean(), rtol=1e-6, atol=1e-6)


def test_chat_messages_train_only_the_assistant_turns_through_the_chat_template():
    tok = minilm_tokenizer(CHAT_TEMPLATE)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"},
                {"role": "assistant", "content": "hi"}, {"role": "user", "content": "how are you"},
                {"role": "assistant", "content": "very well"}]
    ids, labels = sft_tokens(tok, messages)
    assert ids == tok(tok.apply_chat_template(messages, tokenize=False), add_special_tokens=False)["input_ids"] \
        or len(ids) == len(labels)
    trained = tok.decode([t for t in labels if t != IGNORE_INDEX])
    assert trained.split() == ["hi", "very", "well"]  # both assistant turns, nothing of the user's or the markup


def test_truncated_examples_are_cut_and_flagged():
    tok = minilm_tokenizer()
    out, _ = _encode(CausalLMSFT(), tok, [{"p": "a " * 30, "r": "b"}, {"p": "x", "r": "y"}],
                     prompt_field="p", response_field="r", max_length=8)
    assert out["truncated"] == [True, False] and max(len(x) for x in out["input_ids"]) == 8


def sft_overrides(model_dir, data_file, steps=30):
    return ["task=causal_lm_sft", "model=hf", f"model.path={model_dir}", "data=files", f"data.path={data_file}",
            "data.prompt_field=prompt", "data.response_field=response", "data.max_length=48",
            "precision=fp32", "optim.lr=0.02", f"train.max_steps={steps}", "train.global_batch_size=8",
            "train.warmup_steps=2", "train.log_every_steps=5", "train.eval_every_steps=0", "train.num_threads=1",
            "telemetry=off"]


def run_in_process(overrides, run_dir):
    from hpc_ft.config.compose import compose_conf
    from hpc_ft.job import resolve
    from hpc_ft.rundir.spec import write_spec
    from hpc_ft.train.distributed import Dist
    from hpc_ft.train.loop import Trainer

    spec = resolve(compose_conf([*overrides, "executor=debug"], run_dir=run_dir))
    write_spec(spec)
    trainer = Trainer(spec, Dist(0, 0, 1, 0, torch.device("cpu")), time.monotonic())
    trainer.setup()
    assert trainer.train() == 0
    return spec, trainer


def test_sft_on_chatterbot_pairs_lowers_the_loss(tmp_path, llama_dir, pairs_file,
                                                                               in_process):
    spec, trainer = run_in_process(sft_overrides(llama_dir, pairs_file), tmp_path / "run")
    records = [json.loads(line) for line in (spec.run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]  # logging windows; evaluations are lines of their own
    assert losses[-1] < losses[0] - 2.0, losses  # nats per response token
    result = json.loads((spec.run_dir / "nodes" / "node0" / "train.json").read_text())
    assert result["eval_perplexity"] == pytest.approx(torch.tensor(result["eval_loss"]).exp().item(), rel=1e-6)
    assert 0 < result["eval_token_accuracy"] <= 1 and result["unigram_perplexity"] > 1  # the baseline is recorded
    assert result["truncated_examples"] == trainer.data.info["truncated_examples"] > 0  # logged and recorded
    assert trainer.data.info["cache_hit"] is False
    again = trainer.objective.build_data(spec.conf)  # a second run of the same files and tokenizer: no tokenizing
    assert again.info["cache_hit"] is True and again.num_train == trainer.data.num_train


def test_export_round_trips_to_the_final_evaluation(tmp_path, llama_dir, pairs_file, in_process, run_cli):
    from transformers import AutoModelForCausalLM

    from hpc_ft.train.distributed import Dist
    from hpc_ft.train.loop import evaluate

    spec, trainer = run_in_process(sft_overrides(llama_dir, pairs_file, steps=4), tmp_path / "run")
    out = tmp_path / "exported"
    done = run_cli("export", str(spec.run_dir), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert f"AutoModelForCausalLM.from_pretrained('{out}')" in done.stdout  # the class to load it with, by name
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert "eval_perplexity" in (out / "README.md").read_text()
    model = AutoModelForCausalLM.from_pretrained(out)
    # The exported model's logits on an eval micro-batch are the trained model's, bit for bit...
    batch = trainer.data.test.take(torch.arange(4))
    trainer.model.eval()
    with torch.no_grad():
        assert torch.equal(trainer.objective.forward(model.eval(), batch),
                           trainer.objective.forward(trainer.model, batch))
    # ... so its evaluation is exactly the run's final one (train.json).
    import contextlib

    metrics = evaluate(model, trainer.objective, trainer.data, spec.conf.train.eval_micro_batch_size,
                       Dist(0, 0, 1, 0, torch.device("cpu")), contextlib.nullcontext)
    result = json.loads((spec.run_dir / "nodes" / "node0" / "train.json").read_text())
    assert metrics["eval_loss"] == result["eval_loss"]
    again = run_cli("export", str(spec.run_dir), "--out", str(out))
    assert again.returncode == 2 and "exists" in again.stderr and "Traceback" not in again.stderr


def test_accumulated_sft_gradient_is_the_global_batchs_per_token_mean(tmp_path, llama_dir, in_process):
    """2 micro-batches of one example each, responses 2 and ~30 tokens long: the step's gradient is that of
    sum of token losses / all response tokens of the global batch (one big batch, computed here by hand), not the
    mean of the two micro-batch means (which weighs each token of the short response ~15 times more)."""
    import torch.nn.functional as F

    from hpc_ft.config.compose import compose_conf
    from hpc_ft.job import resolve
    from hpc_ft.rundir.spec import write_spec
    from hpc_ft.testing.hf_models import write_jsonl
    from hpc_ft.train.data import global_batch, take
    from hpc_ft.train.distributed import Dist
    from hpc_ft.train.loop import Trainer
    from hpc_ft.train.meter import Meter

    # The training set is one global batch: a one-word response and a 30-word one.
    rows = [{"prompt": "say it", "response": " ".join(["yes"] * k)} for k in (1, 30)]
    data_file = write_jsonl(tmp_path / "uneven.jsonl", rows)
    eval_file = write_jsonl(tmp_path / "eval.jsonl", rows)
    overrides = [*sft_overrides(llama_dir, data_file, steps=1), "data.max_length=48", f"data.eval_path={eval_file}",
                 "train.global_batch_size=2", "train.grad_accum_steps=2", "train.grad_clip_norm=0"]
    spec = resolve(compose_conf([*overrides, "executor=debug"], run_dir=tmp_path / "run"))
    write_spec(spec)
    trainer = Trainer(spec, Dist(0, 0, 1, 0, torch.device("cpu")), time.monotonic())
    trainer.setup()
    grads: dict[str, torch.Tensor] = {}
    trainer.optimizer_step = lambda: grads.update(  # the accumulated gradient, read where the optimizer would step
        {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None})
    trainer.meter, trainer.loss_sum, trainer.loss_steps = Meter(), torch.zeros(()), 0  # what train() starts with
    trainer.train_step()

    idx = global_batch(trainer.data.num_train, spec.conf.train.seed, 0, 2)
    counts = [int((take(trainer.data.train, idx[i:i + 1])["labels"][:, 1:] != IGNORE_INDEX).sum()) for i in range(2)]
    assert max(counts) >= 4 * min(counts), counts  # very different response lengths
    big = take(trainer.data.train, idx)  # both examples in one batch, padded
    model = trainer.model
    model.zero_grad(set_to_none=True)
    logits = model(input_ids=big["input_ids"], attention_mask=big["attention_mask"]).logits
    target = big["labels"][:, 1:]
    by_hand = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), target.reshape(-1),
                              ignore_index=-100, reduction="sum") / (target != -100).sum()
    by_hand.backward()
    assert grads.keys() == {n for n, p in model.named_parameters() if p.grad is not None}
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)
    assert float(trainer.loss_sum) == pytest.approx(float(by_hand), rel=1e-5)  # the logged step loss: the same mean
