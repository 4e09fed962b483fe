"""model=hf's checks before dispatch (no torch) and its tokenizer at run time: a tokenizer without a pad token
pads with its EOS token, noted before dispatch."""

from __future__ import annotations

import json
import shutil

from hpc_ft.train.tasks.hf_checks import model_problems


def _without_pad(tmp_path, llama_dir):
    d = tmp_path / "no_pad"
    shutil.copytree(llama_dir, d)
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        f = d / name
        if f.is_file():
            cfg = json.loads(f.read_text())
            cfg["pad_token"] = None  # (absent, the tokenizer class's own default would apply)
            f.write_text(json.dumps(cfg))
    tok = json.loads((d / "tokenizer.json").read_text())
    tok["padding"] = None
    (d / "tokenizer.json").write_text(json.dumps(tok))
    return d


def test_a_tokenizer_without_a_pad_token_is_noted_and_pads_with_eos(tmp_path, llama_dir):
    from hpc_ft.train.tasks.hf import load_tokenizer

    conf = {"path": str(llama_dir), "dtype": "float32", "attn_implementation": "sdpa", "trust_remote_code": False}
    assert model_problems(conf) == ([], [])
    no_pad = _without_pad(tmp_path, llama_dir)
    problems, notes = model_problems({**conf, "path": str(no_pad)})
    assert problems == [] and len(notes) == 1 and "no pad token" in notes[0] and "EOS" in notes[0]
    tok = load_tokenizer(str(no_pad))
    assert tok.pad_token is not None and tok.pad_token_id == tok.eos_token_id


def test_bad_settings_each_name_their_key(tmp_path, llama_dir):
    problems, _ = model_problems({"path": str(llama_dir), "dtype": "float64", "attn_implementation": "magic",
                                  "trust_remote_code": "yes"})
    assert [p.key for p in problems] == ["model.dtype", "model.attn_implementation", "model.trust_remote_code"]
    (missing,), _ = model_problems({"path": None})
    assert missing.key == "model.path" and "needs the checkpoint directory" in missing.rule


def test_model_hf_on_the_bundled_intents_uses_its_own_tokenizer(tmp_path, bert_dir, run_cli):
    """data=chatterbot tokenizes with the model's tokenizer: under model=hf that is the checkpoint's; without
    model.path the refusal names model.path (not an interpolation error about model.model_dir)."""
    missing = run_cli("submit", "dry_run=true", "model=hf", f"hydra.run.dir={tmp_path / 'a'}")
    assert missing.returncode == 2, missing.stderr
    assert "model.path=None" in missing.stderr and "model_dir" not in missing.stderr
    ok = run_cli("submit", "dry_run=true", "model=hf", f"model.path={bert_dir}", f"hydra.run.dir={tmp_path / 'b'}")
    assert ok.returncode == 0, ok.stderr

    from hydra import compose, initialize_config_dir

    from hpc_ft import CONF_DIR
    from hpc_ft.config import register_configs

    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        assert compose("config").data.model_dir is None  # the bundled MiniLM's own copy
        assert compose("config", overrides=["model=hf", f"model.path={bert_dir}"]).data.model_dir == str(bert_dir)


def test_the_position_limit_is_read_where_transformers_configs_keep_it():
    from hpc_ft.train.tasks.hf_checks import position_limit

    assert position_limit({"model_type": "bert", "max_position_embeddings": 64}) == (64, "max_position_embeddings")
    assert position_limit({"model_type": "gpt2", "n_positions": 1024, "n_ctx": 1024}) == (1024, "n_positions")
    assert position_limit({"model_type": "t5", "d_model": 512}) is None  # relative positions: no limit
    # RoBERTa's positions start after the padding index: 514 embeddings hold 512 tokens.
    assert position_limit({"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1})[0] == 512
    # A RoPE scaling factor stretches the trained length (written out already, or not).
    assert position_limit({"max_position_embeddings": 4096, "rope_scaling": {"type": "linear", "factor": 4.0}})[0] \
        == 16384
    assert position_limit({"max_position_embeddings": 131072, "rope_scaling": {
        "rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192}})[0] == 131072
    assert position_limit({"model_type": "llava", "text_config": {"max_position_embeddings": 4096}}) == \
        (4096, "text_config.max_position_embeddings")


def test_a_max_length_over_the_checkpoints_positions_is_refused_with_the_limit(tmp_path, bert_dir):
    """The tiny BERT (128 positions): data.max_length=512 would stop the workers at step 1 (a position embedding
    table of 128 rows); refused from config.json alone, naming the limit to pass."""
    from hpc_ft.train.tasks.hf_checks import max_length_problems

    conf = {"path": str(bert_dir)}
    assert max_length_problems(conf, 128) == []
    (problem,) = max_length_problems(conf, 512)
    assert problem.key == "data.max_length" and problem.value == 512 and "128" in problem.rule
    assert problem.fix == "pass data.max_length=128"
