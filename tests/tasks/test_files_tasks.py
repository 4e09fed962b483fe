"""data=files for the other built-in tasks, in process: plain causal-LM training on packed text, and sequence
classification from CSV train/eval files on a tiny BERT, exported and reloaded with its label names."""

from __future__ import annotations

import csv
import json

import torch

from hpc_ft.testing.hf_models import corpus_pairs, write_jsonl
from hpc_ft.train.tasks.base import IGNORE_INDEX

from .test_causal_lm import run_in_process  # helper shared; the in_process fixture is in tests/conftest.py


def common(steps=3):
    return ["precision=fp32", "optim.lr=0.001", f"train.max_steps={steps}", "train.global_batch_size=4",
            "train.warmup_steps=1", "train.log_every_steps=1", "train.eval_every_steps=0", "train.num_threads=1",
            "telemetry=off"]


def test_plain_causal_lm_trains_on_packed_blocks_of_every_token(tmp_path, llama_dir, in_process):  # noqa: F811
    text = write_jsonl(tmp_path / "text.jsonl", [{"text": f"{r['prompt']} {r['response']}"}
                                                 for r in corpus_pairs(120)])
    spec, trainer = run_in_process(["task=causal_lm", "model=hf", f"model.path={llama_dir}", "data=files",
                                    f"data.path={text}", "data.text_field=text", "data.max_length=16",
                                    "data.packing=true", *common()], tmp_path / "run")
    batch = trainer.data.train.take(torch.arange(4))
    assert batch["input_ids"].shape == (4, 16) and bool(batch["attention_mask"].all())
    assert torch.equal(batch["labels"], batch["input_ids"])  # every token is predicted; nothing masked
    evalb = trainer.data.test.take(torch.arange(2))  # eval examples stay whole (padded, padding masked)
    assert bool((evalb["labels"][evalb["attention_mask"] == 0] == IGNORE_INDEX).all())
    result = json.loads((spec.run_dir / "nodes" / "node0" / "train.json").read_text())
    assert result["steps"] == 3 and result["eval_perplexity"] > 1 and result["flops_per_sample"] > 0


def test_classification_from_csv_files_exports_with_its_label_names(tmp_path, bert_dir, in_process, run_cli):  # noqa: F811
    from transformers import AutoModelForSequenceClassification

    rows = [{"text": r["prompt"], "label": r["topic"]} for r in corpus_pairs()]
    topics = sorted({r["label"] for r in rows})[:3]
    rows = [r for r in rows if r["label"] in topics]
    for name, part in (("train.csv", rows[:-30]), ("dev.csv", rows[-30:])):
        with open(tmp_path / name, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["text", "label"])
            w.writeheader()
            w.writerows(part)
    spec, trainer = run_in_process(["task=sequence_classification", "model=hf", f"model.path={bert_dir}",
                                    "data=files", f"data.path={tmp_path / 'train.csv'}",
                                    f"data.eval_path={tmp_path / 'dev.csv'}", "data.text_field=text",
                                    "data.label_field=label", "data.max_length=24", *common()], tmp_path / "run")
    assert trainer.data.num_labels == 3 and trainer.data.num_test == 30
    result = json.loads((spec.run_dir / "nodes" / "node0" / "train.json").read_text())
    assert 0 <= result["eval_accuracy"] <= 1 and result["majority_accuracy"] > 0
    out = tmp_path / "exported"
    assert run_cli("export", str(spec.run_dir), "--out", str(out)).returncode == 0
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert [model.config.id2label[i] for i in range(3)] == topics  # label ids are the sorted label names
    batch = trainer.data.test.take(torch.arange(5))
    trainer.model.eval()
    with torch.no_grad():
        assert torch.equal(trainer.objective.forward(model, batch), trainer.objective.forward(trainer.model, batch))
