"""Checks of ``model=hf`` before dispatch, without torch: the checkpoint directory, offline hub names, settings.

Runs are offline (HF_HUB_OFFLINE=1): a model is a local directory, or a hub name already in the local Hugging
Face cache (resolved to its snapshot directory). Everything else is refused here, before anything is submitted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hpc_ft.errors import Problem

DTYPES = ("float32", "bfloat16", "float16")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2", "flex_attention")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "tokenizer.model", "vocab.json")
PATH_FIX = "pass model.path=/path/to/checkpoint (a directory written by save_pretrained)"


def _looks_like_hub_name(path: str) -> bool:
    return path.count("/") == 1 and not path.startswith((".", "/", "~")) and all(path.split("/"))


def resolve_model_path(path: Any) -> tuple[str | None, Problem | None]:
    """The local directory of ``model.path``: the directory itself, or a cached hub name's snapshot.

    Returns (directory, None), or (None, the problem naming model.path). Never touches the network.
    """
    if not isinstance(path, str) or not path.strip():
        return None, Problem("model.path", path, "model=hf needs the checkpoint directory", PATH_FIX)
    local = Path(path).expanduser()
    if local.exists():
        if not local.is_dir():
            return None, Problem("model.path", path, "is a file, not a checkpoint directory", PATH_FIX)
        return str(local.resolve()), None
    if _looks_like_hub_name(path):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from huggingface_hub import snapshot_download

        try:
            return snapshot_download(path, local_files_only=True), None
        except Exception:  # noqa: BLE001 - LocalEntryNotFoundError and friends: not in the cache
            return None, Problem("model.path", path,
                                 "is not a local directory, and this hub name is not in the local Hugging Face "
                                 "cache (runs are offline: HF_HUB_OFFLINE=1, nothing is downloaded)",
                                 f"download it where there is network (huggingface-cli download {path} "
                                 f"--local-dir DIR) and pass model.path=DIR")
    return None, Problem("model.path", path, "does not exist", PATH_FIX)


def _pad_token_set(directory: Path) -> bool:
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        f = directory / name
        if f.is_file():
            try:
                if json.loads(f.read_text()).get("pad_token"):
                    return True
            except ValueError:
                pass
    return False


def model_problems(model_conf: Any) -> tuple[list[Problem], list[str]]:
    """Problems and notes of a ``model=hf`` group: the directory holds a config, weights and a tokenizer; the
    dtype, attention implementation and trust_remote_code are ones hpc_ft passes on. Reads files only."""
    problems: list[Problem] = []
    notes: list[str] = []
    dtype = model_conf.get("dtype", "float32")
    if dtype not in DTYPES:
        problems.append(Problem("model.dtype", dtype, f"must be one of {', '.join(DTYPES)}",
                                "pass model.dtype=float32 (weights; precision=bf16 sets the compute dtype)"))
    attn = model_conf.get("attn_implementation", "sdpa")
    if attn not in ATTN_IMPLEMENTATIONS:
        problems.append(Problem("model.attn_implementation", attn, f"must be one of {', '.join(ATTN_IMPLEMENTATIONS)}",
                                "pass model.attn_implementation=sdpa"))
    trust = model_conf.get("trust_remote_code", False)
    if not isinstance(trust, bool):
        problems.append(Problem("model.trust_remote_code", trust, "must be true or false",
                                "pass model.trust_remote_code=false"))
    directory, bad = resolve_model_path(model_conf.get("path"))
    if bad is not None:
        return problems + [bad], notes
    d = Path(directory)
    path = model_conf.get("path")
    if not (d / "config.json").is_file():
        problems.append(Problem("model.path", path, f"holds no config.json ({d})", PATH_FIX))
    if not any((d / w).is_file() for w in WEIGHT_FILES):
        problems.append(Problem("model.path", path, f"holds no weights ({' or '.join(WEIGHT_FILES[::2])}) in {d}",
                                PATH_FIX))
    if not any((d / t).is_file() for t in TOKENIZER_FILES):
        problems.append(Problem("model.path", path, f"holds no tokenizer ({', '.join(TOKENIZER_FILES[:2])}) in {d}",
                                "save the tokenizer beside the model (tokenizer.save_pretrained(DIR))"))
    elif not _pad_token_set(d):
        notes.append(f"model.path={path}: the tokenizer declares no pad token; unless its class has one, its EOS "
                     f"token pads batches (padding is masked out of attention and loss)")
    return problems, notes


# Where transformers' configs keep a model's position limit in config.json, in the order asked: most models'
# max_position_embeddings, then the names their attribute_map turns into it (GPT-2's n_positions, DBRX's max_seq_len,
# RWKV's context_length, ...) and a few remote-code names (max_sequence_length, seq_length).
POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "max_seq_len", "seq_length",
                 "context_length", "model_max_length")
# Encoders whose learned positions start after the padding index (RoBERTa's create_position_ids_from_input_ids):
# a sequence may hold max_position_embeddings - pad_token_id - 1 tokens (514 - 1 - 1 = 512).
PADDING_OFFSET_TYPES = ("roberta", "xlm-roberta", "xlm-roberta-xl", "roberta-prelayernorm", "camembert", "longformer",
                        "data2vec-text", "xmod", "mpnet", "ibert", "luke")


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def position_limit(config: dict) -> tuple[int, str] | None:
    """The most tokens one sequence may hold for a model of this config.json (a dict), and the key it is read from;
    None when it names none (relative or no positions: T5, Mamba). A multimodal config's ``text_config`` counts
    when the top level names none. A RoPE scaling factor (``rope_scaling`` / ``rope_parameters``) stretches the
    limit to ``factor x original_max_position_embeddings`` when that is longer."""
    for where, cfg in (("", config), ("text_config.", config.get("text_config"))):
        if not isinstance(cfg, dict):
            continue
        for key in POSITION_KEYS:
            limit = _int(cfg.get(key))
            if limit is None:
                continue
            if cfg.get("model_type") in PADDING_OFFSET_TYPES and _int(cfg.get("pad_token_id")) is not None:
                limit -= cfg["pad_token_id"] + 1
            rope = cfg.get("rope_scaling") or cfg.get("rope_parameters")
            if isinstance(rope, dict) and isinstance(rope.get("factor"), (int, float)) and rope["factor"] > 1:
                base = _int(rope.get("original_max_position_embeddings")) or limit
                limit = max(limit, int(base * rope["factor"]))
            return limit, where + key
    return None


def max_length_problems(model_conf: Any, max_length: Any) -> list[Problem]:
    """``data.max_length`` longer than the checkpoint's position limit (config.json, read as JSON: no torch): every
    example or packed block longer than the limit would stop the workers at their first step (a position embedding
    table too short). [] when it fits, or when the limit or the value cannot be read (other checks report those)."""
    max_length = _int(max_length)
    directory, bad = resolve_model_path(model_conf.get("path"))
    if max_length is None or bad is not None:
        return []
    try:
        found = position_limit(json.loads((Path(directory) / "config.json").read_text()))
    except (OSError, ValueError, AttributeError):  # no or bad config.json: model_problems reports it
        return []
    if found is None or max_length <= found[0]:
        return []
    limit, key = found
    return [Problem("data.max_length", max_length,
                    f"is longer than the model's position limit: {limit} tokens ({key} in the config.json of "
                    f"model.path={model_conf.get('path')}); longer examples (or packed blocks) would stop every worker "
                    f"at its first step", f"pass data.max_length={limit}")]
