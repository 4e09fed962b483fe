"""LoRA through ``peft``: low-rank adapters on the target modules, every base weight frozen.

``apply_lora`` wraps the task's model in a ``peft`` model (``peft.get_peft_model``); the loop then gives the
optimizer only the trainable parameters (the adapters, and a classification head trained in full), and
checkpoints hold only those (``trainable_state_dict``): the frozen base is rebuilt from ``model.path`` on resume
and on export. Target modules default per architecture (``default_target_modules``); targets that match nothing
are refused naming the model's own module names. Nothing here reads a tensor's storage before
``get_peft_model``, so the memory estimate can call these functions on a meta-device model.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import torch
from torch import nn

from hpc_ft.errors import ConfigError, Problem
from hpc_ft.train.blocks import transformer_blocks

log = logging.getLogger("hpc_ft.train")


class _NoKernelsHubNote(logging.Filter):
    """Drops bitsandbytes' "Failed to load CPU gemm_4bit_forward from kernels-community" warning.

    peft imports bitsandbytes when it is installed (hpc_ft[qlora]); on a CPU with AVX512-BF16, bitsandbytes then
    tries the optional ``kernels`` package, which would fetch a kernel from the Hugging Face Hub, and logs a
    warning when it is absent before using its own CPU kernel. hpc_ft fetches nothing at run time, so on every LoRA
    run and export that line was noise, and it suggested installing a package that reaches the network."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to load CPU gemm_4bit_forward from kernels-community")


# Before any peft import below (they are all inside functions): bitsandbytes logs it once, on its import.
logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_NoKernelsHubNote())

HEAD_NAMES = ("classifier", "score", "head")  # task heads, initialised fresh: trained in full, not adapted


def _adaptable(m: nn.Module) -> bool:
    """A layer peft's LoRA can adapt (bitsandbytes' 4-bit Linear4bit is an nn.Linear; transformers' Conv1D is
    GPT-2's linear layer)."""
    return isinstance(m, (nn.Linear, nn.Embedding, nn.Conv2d)) or type(m).__name__ == "Conv1D"


def _linear(m: nn.Module) -> bool:
    return isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D"
_WRAPPER_PREFIX = "_checkpoint_wrapped_module."  # activation checkpointing's wrapper; state_dict keys drop it


def _model_type(model: nn.Module) -> str | None:
    """The Hugging Face ``config.model_type`` of the model or of the first submodule that has one."""
    for m in model.modules():
        mt = getattr(getattr(m, "config", None), "model_type", None)
        if isinstance(mt, str):
            return mt
    return None


def _adaptable_names(model: nn.Module) -> list[str]:
    """The last name component of every layer LoRA can adapt, unique, in model order."""
    names: dict[str, None] = {}
    for name, m in model.named_modules():
        if name and _adaptable(m):
            names.setdefault(name.rpartition(".")[2], None)
    return list(names)


def default_target_modules(model: nn.Module) -> list[str]:
    """The modules LoRA adapts when ``peft.target_modules`` is null: peft's table for the model's architecture
    (attention projections: ``q_proj``/``v_proj`` for Llama-style models, ``query``/``value`` for BERT), else every
    linear layer inside the transformer blocks, else every linear layer but the head. [] if the model has none."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as TABLE

    mt = _model_type(model)
    if mt in TABLE:
        return list(TABLE[mt])
    inside: dict[str, None] = {}
    for block in transformer_blocks(model):
        for name, m in block.named_modules():
            if name and _linear(m):
                inside.setdefault(name.rpartition(".")[2], None)
    if inside:
        return list(inside)
    return [n for n, m in ((n.rpartition(".")[2], m) for n, m in model.named_modules() if n)
            if _linear(m) and n not in HEAD_NAMES]


def _heads(model: nn.Module) -> list[str]:
    """Names of task heads (``classifier``, ``score``, ``head``) directly under the model: trained in full."""
    return [n for n, _ in model.named_children() if n in HEAD_NAMES]


def _task_type(model: nn.Module) -> Any:
    from peft import TaskType

    name = type(model).__name__
    if name.endswith("ForCausalLM"):
        return TaskType.CAUSAL_LM
    if name.endswith("ForSequenceClassification"):
        return TaskType.SEQ_CLS
    return None  # a model of hpc_ft's own (MiniLM with a head, a user's module): a plain PeftModel


def _as_dict(conf: Any) -> dict[str, Any]:
    """The peft group as a dict, from a PeftConf dataclass, a DictConfig or a mapping."""
    from dataclasses import asdict, is_dataclass

    if is_dataclass(conf):
        return asdict(conf)
    from omegaconf import DictConfig, OmegaConf

    return OmegaConf.to_container(conf, resolve=True) if isinstance(conf, DictConfig) else dict(conf)


def apply_lora(model: nn.Module, peft_conf: Any) -> nn.Module:
    """The model wrapped by ``peft.get_peft_model`` (``peft_conf``: the ``peft`` group, a PeftConf, DictConfig or
    mapping) with LoRA adapters (rank ``r``, scaling ``alpha / r``,
    ``dropout`` on their input) on ``target_modules`` (None: ``default_target_modules``); a causal LM's head
    stays frozen, a classification head is trained in full.

    Raises ConfigError naming ``peft.target_modules`` and the model's adaptable module names when the targets
    match none of them (or the model has none to adapt).
    """
    from peft import LoraConfig, get_peft_model

    peft_conf = _as_dict(peft_conf)
    targets = peft_conf.get("target_modules")
    targets = list(targets) if targets else default_target_modules(model)
    names = _adaptable_names(model)
    if not targets or not set(targets) & set(names):
        shown = ", ".join(names[:30]) + (" ..." if len(names) > 30 else "") or "none"
        raise ConfigError([Problem(
            "peft.target_modules", targets or None,
            f"matches no module of the model (its adaptable modules, by name: {shown})",
            f"pass peft.target_modules=[{','.join(n for n in names if n not in HEAD_NAMES)[:120]}] or a subset"
            if names else "use peft=none: this model has no linear layer LoRA could adapt")])
    task_type = _task_type(model)
    heads = [] if task_type is not None and task_type.value == "CAUSAL_LM" else _heads(model)
    config = LoraConfig(r=int(peft_conf.get("r", 8)), lora_alpha=float(peft_conf.get("alpha", 16)),
                        lora_dropout=float(peft_conf.get("dropout", 0.0)), target_modules=targets,
                        modules_to_save=heads or None, task_type=task_type)
    if getattr(model, "is_loaded_in_4bit", False):  # QLoRA: norms and head in fp32, inputs made to need grads
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    wrapped = get_peft_model(model, config)
    trainable, total = count_parameters(wrapped)
    log.info("LoRA r=%d on %s: %d of %d parameters trainable (%.2f%%)", config.r, ",".join(sorted(targets)),
             trainable, total, 100.0 * trainable / max(total, 1))
    return wrapped


def pin_cpu_4bit_layout(model: nn.Module) -> int:
    """Keep bitsandbytes' 4-bit CPU weights in one layout for the whole run; returns the layers pinned.

    On a CPU with AVX512-BF16, bitsandbytes' ``Linear4bit`` repacks its weight into a faster inference layout on
    its first eval-mode forward whose input needs no gradient (an evaluation, or DDP's bucket settling on resume),
    and from then on computes with another kernel, rounding differently. A run that evaluated (or resumed) would
    then train on other numerics than one that did not, and a resumed run would not repeat the uninterrupted one.
    Pinned, every forward uses the training layout.
    """
    pinned = 0
    for m in model.modules():
        if getattr(m, "support_avx512bf16_for_cpu", False):
            m.support_avx512bf16_for_cpu = False
            pinned += 1
    return pinned


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts (elements)."""
    trainable = total = 0
    for p in model.parameters():
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


def trainable_keys(model: nn.Module) -> set[str]:
    """The state_dict keys of the trainable parameters (activation checkpointing's wrapper name removed, as
    ``state_dict`` removes it)."""
    return {n.replace(_WRAPPER_PREFIX, "") for n, p in model.named_parameters() if p.requires_grad}


def trainable_state_dict(model: nn.Module, keys: set[str]) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` restricted to ``keys`` (the adapters and trained heads of a LoRA model)."""
    return {k: v for k, v in model.state_dict().items() if k in keys}


def load_trainable(model: nn.Module, state: Mapping[str, torch.Tensor], keys: set[str]) -> None:
    """Load a checkpoint's trainable weights into a freshly built LoRA model (its frozen base is the base model's
    own). Raises RuntimeError if the checkpoint misses a trainable weight or holds one the model does not have."""
    missing = keys - set(state)
    result = model.load_state_dict(dict(state), strict=False)
    if missing or result.unexpected_keys:
        raise RuntimeError(f"the LoRA checkpoint does not fit the model: missing {sorted(missing)[:5]}, "
                           f"unexpected {sorted(result.unexpected_keys)[:5]}")
