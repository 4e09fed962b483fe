"""model=hf and data=files through the real hpc-ft command: bad data and bad checkpoints refused before dispatch
(exit 2, one message naming the key, no traceback); real runs on 2 gloo workers through the local executor that
resume bitwise after a stop, for both tasks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hpc_ft.testing.hf_models import write_jsonl
from hpc_ft.train.checkpoint import load_latest


def sft(model_dir, data_file, *extra):
    return ["task=causal_lm_sft", "model=hf", f"model.path={model_dir}", "data=files", f"data.path={data_file}",
            "data.prompt_field=prompt", "data.response_field=response", "data.max_length=32", "precision=fp32",
            "optim.lr=0.01", "train.global_batch_size=8", "train.warmup_steps=1", "train.eval_every_steps=0",
            "telemetry=off", *extra]


def cls(model_dir, data_file, *extra):
    return ["task=sequence_classification", "model=hf", f"model.path={model_dir}", "data=files",
            f"data.path={data_file}", "data.text_field=text", "data.label_field=label", "data.max_length=24",
            "precision=fp32", "optim.lr=0.001", "train.global_batch_size=8", "train.warmup_steps=1",
            "train.eval_every_steps=0", "telemetry=off", *extra]


def _no_weights(tmp_path, llama_dir):
    d = tmp_path / "no_weights"
    d.mkdir()
    for f in Path(llama_dir).iterdir():
        if not f.name.endswith(".safetensors"):
            (d / f.name).write_bytes(f.read_bytes())
    return d


BAD = {
    # case: (overrides builder, the key named, words of the rule)
    "missing file": (lambda t, m, b, p, c: sft(m, t / "nope.jsonl"), "data.path", "no such file"),
    "unreadable format": (lambda t, m, b, p, c: sft(m, _garbage(t)), "data.path", "parquet"),
    "missing field": (lambda t, m, b, p, c: sft(m, p, "data.prompt_field=question"), "data.prompt_field",
                      "missing field"),
    "empty dataset": (lambda t, m, b, p, c: sft(m, _empty(t)), "data.path", "empty"),
    "fewer than one global batch": (lambda t, m, b, p, c: sft(m, _rows(t, 4)), "data.path", "global batch"),
    "labels not in the label set": (lambda t, m, b, p, c: cls(b, c, "+task.labels=[a,b]"), "data.label_field",
                                    "not in the label set"),
    "eval labels the train split lacks": (lambda t, m, b, p, c: cls(b, c, f"data.eval_path={_odd_label(t)}"),
                                          "data.label_field", "not in the label set"),
    "hub name not cached": (lambda t, m, b, p, c: sft("someorg/not-downloaded", p), "model.path",
                            "not in the local Hugging Face cache"),
    "checkpoint without weights": (lambda t, m, b, p, c: sft(_no_weights(t, m), p), "model.path", "no weights"),
    "classification packing": (lambda t, m, b, p, c: cls(b, c, "data.packing=true"), "data.packing", "whole"),
    # The tiny BERT has 128 positions, the tiny Llama 256: the fix names the limit.
    "max_length over the encoder's positions": (lambda t, m, b, p, c: cls(b, c, "data.max_length=512"),
                                                "data.max_length", "pass data.max_length=128"),
    "packed blocks over the LM's positions": (lambda t, m, b, p, c: _packed(m, p, "data.max_length=300"),
                                              "data.max_length", "pass data.max_length=256"),
}


def _packed(model_dir, data_file, *extra):
    """Plain causal-LM training on the prompts, packed into data.max_length blocks."""
    return ["task=causal_lm", "model=hf", f"model.path={model_dir}", "data=files", f"data.path={data_file}",
            "data.text_field=prompt", "data.packing=true", "train.global_batch_size=8", "telemetry=off", *extra]


def _odd_label(t):
    return write_jsonl(t / "dev.jsonl", [{"text": "hello", "label": "a topic never trained"}])


def _garbage(t):
    f = t / "broken.parquet"
    f.write_bytes(b"not a parquet file")
    return f


def _empty(t):
    f = t / "empty.jsonl"
    f.write_text("")
    return f


def _rows(t, n):
    return write_jsonl(t / "few.jsonl", [{"prompt": f"p{i}", "response": f"r{i}"} for i in range(n)])


@pytest.mark.parametrize("case", list(BAD))
def test_bad_data_and_checkpoints_are_refused_before_dispatch(case, tmp_path, run_cli, llama_dir, bert_dir,
                                                              pairs_file, topics_file):
    build, key, words = BAD[case]
    run = tmp_path / "run"
    done = run_cli("submit", *build(tmp_path, llama_dir, bert_dir, pairs_file, topics_file), "executor=local",
                   f"hydra.run.dir={run}")
    assert done.returncode == 2, done.stdout + done.stderr
    assert key in done.stderr and words in done.stderr, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert not (run / "nodes").exists() and not (run / "submitit").exists()  # nothing dispatched


def _weights(run_dir):
    return load_latest(run_dir).state["model"]


@pytest.mark.slow
@pytest.mark.parametrize("task", ["causal_lm_sft", "sequence_classification"])
def test_two_gloo_workers_train_and_resume_bitwise_after_a_stop(task, tmp_path, run_cli, llama_dir, bert_dir,
                                                                pairs_file, topics_file, data_cache):
    overrides = (sft(llama_dir, pairs_file) if task == "causal_lm_sft" else cls(bert_dir, topics_file))
    overrides += ["executor=local", "train.max_steps=6", "train.ckpt_every_steps=3", "train.log_every_steps=3"]
    env = {"HPC_FT_DATA_CACHE": str(data_cache)}
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    first = run_cli("submit", *overrides, f"hydra.run.dir={ref}", env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    stopped = run_cli("submit", *overrides, f"hydra.run.dir={cut}", env={**env, "HPC_FT_STOP_AFTER_STEP": "3"})
    assert stopped.returncode != 0 and load_latest(cut).step == 3
    again = run_cli("submit", *overrides, f"hydra.run.dir={cut}", env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    a, b = _weights(ref), _weights(cut)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    (node,) = json.loads((cut / "results.json").read_text())
    assert node["train"]["start_step"] == 3 and node["train"]["world_size"] == 2
    metric = "eval_perplexity" if task == "causal_lm_sft" else "eval_accuracy"
    assert node["train"][metric] is not None and node["train"]["truncated_examples"] is not None


@pytest.mark.slow
def test_sft_on_two_emulated_nodes_reports_from_both(tmp_path, run_cli, llama_dir, pairs_file, data_cache):
    """Two node tasks (one worker each) rendezvous, both read the one tokenization cache, and both report."""
    run = tmp_path / "run"
    done = run_cli("submit", *sft(llama_dir, pairs_file), "executor=local", "resources.nodes=2",
                   "resources.workers_per_node=1", "train.max_steps=4", f"hydra.run.dir={run}",
                   env={"HPC_FT_DATA_CACHE": str(data_cache)})
    assert done.returncode == 0, done.stdout + done.stderr
    nodes = json.loads((run / "results.json").read_text())
    assert [n["node_rank"] for n in nodes] == [0, 1] and all(n["train"]["world_size"] == 2 for n in nodes)
    assert "perplexity" in done.stdout  # the results and the report show the task's metrics
    assert len([p for p in data_cache.rglob("*-train") if p.is_dir()]) == 1  # one cache entry, written once


def _relative_to(tmp_path, llama_dir, pairs_file) -> list[str]:
    """``sft`` overrides naming the model and data relative to ``tmp_path`` (links to the session's files)."""
    (tmp_path / "scratch").mkdir()
    (tmp_path / "scratch" / "tiny_llm").symlink_to(llama_dir)
    (tmp_path / "scratch" / "sft.jsonl").symlink_to(pairs_file)
    return sft("scratch/tiny_llm", "scratch/sft.jsonl")


def test_the_dry_run_shows_the_local_paths_absolute(tmp_path, monkeypatch, capsys, llama_dir, pairs_file):
    # job.yaml held model.path=scratch/tiny_llm: `cd scratch && hpc-ft export ../outputs/rel` found no model.
    from hpc_ft import cli

    overrides = _relative_to(tmp_path, llama_dir, pairs_file)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["submit", "dry_run=true", *overrides, f"hydra.run.dir={tmp_path / 'run'}"]) == 0
    paths = json.loads(capsys.readouterr().out)["paths"]
    assert paths == {"model.path": str(tmp_path / "scratch" / "tiny_llm"),
                     "data.path": str(tmp_path / "scratch" / "sft.jsonl")}


def test_export_of_a_run_recorded_with_relative_paths(tmp_path, monkeypatch, capsys, llama_dir, pairs_file):
    """A run dir written before paths were recorded absolute: its model is found from the submitting directory
    Hydra recorded (.hydra/hydra.yaml); without that record, from elsewhere, one error says the path was relative."""
    from omegaconf import OmegaConf

    from hpc_ft.commands.export import export_main
    from hpc_ft.config.compose import compose_conf
    from hpc_ft.job import JobSpec
    from hpc_ft.rundir.spec import write_spec

    overrides = _relative_to(tmp_path, llama_dir, pairs_file)
    run = tmp_path / "outputs" / "rel"
    old = JobSpec(conf=compose_conf(overrides, run_dir=run), overrides=overrides)  # not resolved: paths relative
    write_spec(old)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert export_main([str(run)]) == 2
    err = capsys.readouterr().err
    assert "model.path='scratch/tiny_llm'" in err and "relative to the directory the run was submitted from" in err
    assert "run hpc-ft export from the directory you submitted from" in err and "Traceback" not in err
    (run / ".hydra").mkdir()
    OmegaConf.save({"hydra": {"runtime": {"cwd": str(tmp_path)}}}, run / ".hydra" / "hydra.yaml")
    assert export_main([str(run)]) == 2  # the model found: on to the checkpoints, of which there is none
    err = capsys.readouterr().err
    assert "holds no checkpoint" in err and "model.path" not in err
