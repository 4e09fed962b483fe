"""SFT on chat messages with a tokenizer that has no chat template: the run says so once, on rank 0, naming the
fallback format and how to give the tokenizer a template (it used to fall back to 'role: content' lines silently)."""

from __future__ import annotations

import logging

from hpc_ft.data import FileDataSpec
from hpc_ft.testing.hf_models import CHAT_TEMPLATE, minilm_tokenizer, write_jsonl
from hpc_ft.train.tasks.causal_lm import CausalLMSFT

CHATS = [{"messages": [{"role": "user", "content": f"hello {i}"}, {"role": "assistant", "content": f"hi {i}"}]}
         for i in range(20)]


def _notices(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "no chat template" in r.getMessage()]


def _messages_spec(**kw) -> FileDataSpec:
    return FileDataSpec(path="unused.jsonl", messages_field="messages", max_length=32, **kw)


def test_a_run_on_chat_data_without_a_chat_template_says_so_once(tmp_path, llama_dir, caplog):
    """The whole data build of a run (train and eval splits tokenized through the cache), on the tiny Llama whose
    tokenizer has no template: one notice naming the fallback format and the way to a template."""
    from omegaconf import OmegaConf

    from hpc_ft.train.tasks.files import build_file_data

    data = OmegaConf.create({"_target_": "hpc_ft.data.files", "path": str(write_jsonl(tmp_path / "chats.jsonl", CHATS)),
                             "messages_field": "messages", "max_length": 32, "eval_fraction": 0.2})
    model = OmegaConf.create({"_target_": "hpc_ft.train.tasks.hf.load_model", "path": str(llama_dir)})
    with caplog.at_level(logging.INFO, logger="hpc_ft"):
        built = build_file_data(CausalLMSFT(), data, model)
    assert len(built.train) > 0
    (notice,) = _notices(caplog)
    assert "data.messages_field=messages" in notice and f"model.path={llama_dir}" in notice
    assert "'role: content' lines" in notice and "'user: ...\\nassistant: ...'" in notice  # the fallback format
    assert "tokenizer.chat_template" in notice and "chat_template entry in its tokenizer_config.json" in notice
    assert [r.levelno for r in caplog.records if "no chat template" in r.getMessage()] == [logging.WARNING]


def test_a_tokenizer_with_a_chat_template_and_prompt_response_pairs_get_no_notice(caplog):
    with caplog.at_level(logging.INFO, logger="hpc_ft"):
        CausalLMSFT().encoder(None, minilm_tokenizer(CHAT_TEMPLATE), _messages_spec())
        CausalLMSFT().encoder(None, minilm_tokenizer(), FileDataSpec(path="unused.jsonl", prompt_field="p",
                                                                     response_field="r", max_length=32))
    assert _notices(caplog) == []


def test_only_rank_0_gives_the_notice(caplog, monkeypatch):
    import torch.distributed as dist

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    for rank, expected in ((1, 0), (0, 1)):
        monkeypatch.setattr(dist, "get_rank", lambda group=None, r=rank: r)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="hpc_ft"):
            CausalLMSFT().encoder(None, minilm_tokenizer(), _messages_spec())
        assert len(_notices(caplog)) == expected, rank


def test_the_notice_does_not_change_what_is_trained():
    """The fallback itself is as before: 'role: content' lines, the assistant's text trained."""
    from hpc_ft.train.tasks.base import IGNORE_INDEX

    tok = minilm_tokenizer()
    enc = CausalLMSFT().encoder(None, tok, _messages_spec())
    out = enc.encode({"messages": [CHATS[0]["messages"]]})
    trained = tok.decode([t for t in out["labels"][0] if t != IGNORE_INDEX])
    assert trained.split() == ["hi", "0"]
    assert tok.decode(out["input_ids"][0]).split()[:4] == ["user", ":", "hello", "0"]
