"""``model=hf``: any local Hugging Face checkpoint, loaded offline with the Auto class of the task.

The task names the head (``auto_class``: sequence_classification or causal_lm) and what the data decides
(the label count and names); ``conf/model/hf.yaml`` holds the rest (path, dtype, attention implementation,
trust_remote_code).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from hpc_ft.errors import ConfigError, Problem
from hpc_ft.train.tasks.hf_checks import resolve_model_path

log = logging.getLogger("hpc_ft.train")

AUTO_CLASSES = {"sequence_classification": "AutoModelForSequenceClassification", "causal_lm": "AutoModelForCausalLM"}
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "TOKENIZERS_PARALLELISM": "false", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def offline() -> None:
    """Switch Hugging Face libraries offline (unless the user set the variables): a job never downloads."""
    for k, v in OFFLINE_ENV.items():
        os.environ.setdefault(k, v)


def local_dir(path: Any) -> str:
    """The checkpoint directory of ``model.path`` (a cached hub name resolved); ConfigError if there is none."""
    directory, problem = resolve_model_path(path)
    if problem is not None:
        raise ConfigError([problem])
    return directory


def load_model(path: str, auto_class: str, dtype: str = "float32", attn_implementation: str = "sdpa",
               trust_remote_code: bool = False, quantize: str = "none", device: str | None = None,
               **config_kwargs: Any) -> Any:
    """``AutoModelFor<auto_class>.from_pretrained(path)`` offline, in ``dtype`` (the weights' dtype; autocast
    sets the compute dtype). ``config_kwargs`` (num_labels, id2label, ...) override the checkpoint's config; a
    classification head whose size changes is initialised fresh (seeded by the loop). ``quantize="4bit"``: the
    linear layers in 4-bit NF4 through bitsandbytes on ``device`` (QLoRA's frozen base; compute in ``dtype``)."""
    offline()
    import torch
    import transformers

    if auto_class not in AUTO_CLASSES:
        raise ConfigError([Problem("task", auto_class, f"asks for a model head hpc_ft does not know "
                                   f"(known: {', '.join(AUTO_CLASSES)})", "use a built-in task")])
    cls = getattr(transformers, AUTO_CLASSES[auto_class])
    extra = {"ignore_mismatched_sizes": True} if auto_class == "sequence_classification" else {}
    if quantize == "4bit":
        extra["quantization_config"] = transformers.BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=getattr(torch, dtype))
        extra["device_map"] = {"": device or "cpu"}
    model = cls.from_pretrained(local_dir(path), dtype=getattr(torch, dtype), attn_implementation=attn_implementation,
                                trust_remote_code=trust_remote_code, local_files_only=True, **extra,
                                **config_kwargs)
    if getattr(model.config, "pad_token_id", None) is None and "pad_token_id" in config_kwargs:
        model.config.pad_token_id = config_kwargs["pad_token_id"]
    return model


def load_tokenizer(path: str, trust_remote_code: bool = False) -> Any:
    """The checkpoint's tokenizer, offline, right-padded, with a pad token (its EOS when it has none, noted in
    the log). Raises ConfigError when it has neither."""
    offline()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(local_dir(path), local_files_only=True, trust_remote_code=trust_remote_code)
    tok.padding_side = "right"
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ConfigError([Problem("model.path", path, "the tokenizer has neither a pad token nor an EOS token "
                                       "to pad with", "add a pad token to the tokenizer (tokenizer.add_special_"
                                       "tokens({'pad_token': ...}) and save it)")])
        tok.pad_token = tok.eos_token
        log.info("note: the tokenizer of %s has no pad token; its EOS token %r pads batches (masked out)", path,
                 tok.eos_token)
    return tok
