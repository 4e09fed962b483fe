"""Checks before dispatch of QLoRA (``peft.quantize=4bit``) against the model and the installed libraries.

bitsandbytes' 4-bit layers run on CUDA GPUs and, since its CPU backend, on CPUs; its CPU kernels pack weights in
blocks of 64 input features, so on CPU every linear layer's width must be a multiple of 64. Reads files and asks
whether bitsandbytes is installed (without importing it, nor torch).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from hpc_ft.errors import Problem

CPU_BLOCK = 64  # bitsandbytes' 4-bit block size: the CPU kernel needs in_features % 64 == 0
_WIDTH_KEYS = ("hidden_size", "intermediate_size")


def qlora_problems(spec: Any) -> list[Problem]:
    """Why ``peft.quantize=4bit`` cannot run as configured (none when it can, or when it is not asked for)."""
    conf = spec.conf
    if conf.peft.quantize != "4bit":
        return []
    from hpc_ft.train.tasks.base import is_hf_model
    from hpc_ft.train.tasks.hf_checks import resolve_model_path

    if not is_hf_model(conf.model):
        return [Problem("peft.quantize", "4bit", "QLoRA loads a Hugging Face checkpoint in 4 bits "
                        f"(model._target_={conf.model.get('_target_')} is not one)",
                        "pass model=hf model.path=DIR, or peft.quantize=none")]
    if importlib.util.find_spec("bitsandbytes") is None:
        return [Problem("peft.quantize", "4bit", "needs bitsandbytes, which is not installed",
                        "pip install 'hpc_ft[qlora]' (bitsandbytes), or pass peft.quantize=none")]
    if conf.resources.gpus_per_node > 0:
        return []
    directory, bad = resolve_model_path(conf.model.get("path"))
    if bad is not None:
        return []  # model.path's own problem is reported by the model checks
    try:
        config = json.loads((Path(directory) / "config.json").read_text())
    except (OSError, ValueError):
        return []
    odd = {k: config[k] for k in _WIDTH_KEYS if isinstance(config.get(k), int) and config[k] % CPU_BLOCK}
    if odd:
        shown = ", ".join(f"{k}={v}" for k, v in odd.items())
        return [Problem("peft.quantize", "4bit", f"bitsandbytes' CPU kernels pack 4-bit weights in blocks of "
                        f"{CPU_BLOCK} features, and this model's layers are not multiples of it ({shown})",
                        "train on GPUs (resources=gpu), pick a model whose widths are multiples of 64, or pass "
                        "peft.quantize=none")]
    return []
