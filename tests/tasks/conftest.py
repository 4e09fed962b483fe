"""Tiny Hugging Face checkpoints and data files, made once per test session (hpc_ft.testing.hf_models)."""

from __future__ import annotations

import pytest

from hpc_ft.testing.hf_models import CHAT_TEMPLATE, corpus_pairs, tiny_bert, tiny_llama, write_jsonl


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory):
    return tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="session")
def chat_llama_dir(tmp_path_factory):
    return tiny_llama(tmp_path_factory.mktemp("tiny_llama_chat"), chat_template=CHAT_TEMPLATE)


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory):
    return tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def pairs_file(tmp_path_factory):
    """Chatterbot-corpus prompt/response pairs (the first 240) as JSONL."""
    return write_jsonl(tmp_path_factory.mktemp("sft") / "pairs.jsonl", corpus_pairs(240))


@pytest.fixture(scope="session")
def topics_file(tmp_path_factory):
    """Utterances labelled by their corpus topic (3 topics) as JSONL, for classification."""
    rows = [{"text": r["prompt"], "label": r["topic"]} for r in corpus_pairs()]
    topics = sorted({r["label"] for r in rows})[:3]
    picked = [r for r in rows if r["label"] in topics][:200]
    return write_jsonl(tmp_path_factory.mktemp("cls") / "topics.jsonl", picked)


@pytest.fixture(autouse=True)
def data_cache(tmp_path, monkeypatch):
    """Each test its own tokenization cache (the cache is shared across runs by design)."""
    monkeypatch.setenv("HPC_FT_DATA_CACHE", str(tmp_path / "data_cache"))
    return tmp_path / "data_cache"
