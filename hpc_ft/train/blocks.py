"""The repeated transformer blocks of a model: what activation checkpointing and FSDP2 wrap one by one.

Hugging Face models keep their blocks in one ``nn.ModuleList`` (``model.layers`` for Llama-style decoders,
``encoder.layer`` for BERT-style encoders, ``transformer.h`` for GPT-2-style ones), under whatever wrappers sit
on top (a task head, a ``peft`` model). The search reads only the module tree, never a tensor's storage, so it
works on a model built on the meta device (the memory estimate calls it so).
"""

from __future__ import annotations

from torch import nn

BLOCK_LIST_NAMES = ("layers", "layer", "h", "blocks")  # the ModuleList names of common architectures


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The model's repeated blocks, in order: the children of the first ``nn.ModuleList`` named one of
    ``BLOCK_LIST_NAMES`` whose children are all of one class; [] for a model without such a list (an MLP)."""
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or name.rpartition(".")[2] not in BLOCK_LIST_NAMES:
            continue
        children = list(module)
        if children and len({_block_class(c) for c in children}) == 1:
            return children
    return []


def _block_class(module: nn.Module) -> type:
    """The class of a block, seen through activation checkpointing's wrapper (blocks may be wrapped already)."""
    inner = getattr(module, "_checkpoint_wrapped_module", None)
    return type(inner) if inner is not None else type(module)
