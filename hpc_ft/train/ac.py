"""Activation checkpointing per transformer block (``train.activation_checkpointing=true``).

Each block (``hpc_ft.train.blocks``) is wrapped in PyTorch's non-reentrant ``checkpoint_wrapper``: its forward
keeps only its input, and the backward pass runs the block's forward again to rebuild what it needs. Activation
memory drops from every block's intermediates to one block's (plus each block's input); compute grows by about
one forward pass per step. The RNG state is replayed in the recomputation, so dropout draws the same masks and
the run computes what it would without checkpointing. The wrapper's name is dropped from ``state_dict`` keys:
checkpoints are the same with or without it. Applied after LoRA and before FSDP2 (which shards the wrapped blocks).
"""

from __future__ import annotations

import logging

from torch import nn

from hpc_ft.train.blocks import transformer_blocks

log = logging.getLogger("hpc_ft.train")


def apply_activation_checkpointing(model: nn.Module) -> None:
    """Wrap every transformer block of ``model`` in place for activation checkpointing; a model without blocks
    is left as it is (with a warning). Hugging Face key/value caches are switched off: a cache filled in the
    forward pass and again in the recomputation would not match. Reads no tensor storage (meta models work)."""
    from functools import partial

    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
        CheckpointImpl, apply_activation_checkpointing as wrap, checkpoint_wrapper)

    blocks = transformer_blocks(model)
    if not blocks:
        log.warning("warning: train.activation_checkpointing=true, but %s has no transformer blocks to checkpoint: "
                    "nothing is recomputed", type(model).__name__)
        return
    if hasattr(blocks[0], "_checkpoint_wrapped_module"):
        return  # already wrapped
    for m in model.modules():
        config = getattr(m, "config", None)
        if getattr(config, "use_cache", None):
            config.use_cache = False
    ids = {id(b) for b in blocks}
    wrap(model, checkpoint_wrapper_fn=partial(checkpoint_wrapper, checkpoint_impl=CheckpointImpl.NO_REENTRANT),
         check_fn=lambda m: id(m) in ids)
    log.info("activation checkpointing: %d %s blocks recomputed in backward", len(blocks), type(blocks[0]).__name__)
