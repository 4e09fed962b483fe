"""FSDP2 (``train.strategy=fsdp``): parameters, gradients and optimizer state sharded over the workers.

``shard_model`` applies ``torch.distributed.fsdp.fully_shard`` to each transformer block (``hpc_ft.train.blocks``)
and then to the root, so a block's full parameters exist only while it runs: one block's all-gather overlaps the
previous block's compute, and gradients are reduce-scattered block by block. Each worker keeps 1/world-size of
the parameters, gradients and optimizer state. The mixed-precision policy follows ``precision``: bf16/fp16
gather and compute in that dtype and reduce gradients in fp32; fp32 changes nothing.

Gradient accumulation turns the reduce-scatter off for all but the last micro-batch
(``set_requires_gradient_sync``); clipping computes the norm over the sharded gradients (a DTensor, reduced
across workers) and scales every shard by the same factor.
"""

from __future__ import annotations

import logging
from typing import Iterable

import torch
from torch import nn

from hpc_ft.train.blocks import transformer_blocks

log = logging.getLogger("hpc_ft.train")

PARAM_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def mixed_precision_policy(precision: str):
    """The FSDP2 MixedPrecisionPolicy of a job's ``precision.dtype``: parameters gathered (and the forward run)
    in bf16/fp16 with gradients reduced in fp32; fp32: parameters and reductions in their own dtype."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    dtype = PARAM_DTYPES[precision]
    if dtype is None:
        return MixedPrecisionPolicy()
    return MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)


def shard_model(model: nn.Module, device: torch.device, world_size: int, precision: str) -> nn.Module:
    """``fully_shard`` each transformer block and the root of ``model`` over a 1-D mesh of ``world_size`` workers
    on ``device``'s kind (gloo on CPU, NCCL on GPU); returns the model (the same object, now sharded). Needs the
    process group. Call after LoRA and activation checkpointing, before building the optimizer on its parameters.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (world_size,))
    mp = mixed_precision_policy(precision)
    blocks = transformer_blocks(model)
    for block in blocks:
        fully_shard(block, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)
    log.info("FSDP2: %d blocks and the root sharded over %d workers (parameters in %s)", len(blocks), world_size,
             mp.param_dtype or "their own dtype")
    return model


def set_gradient_sync(model: nn.Module, sync: bool) -> None:
    """Reduce-scatter gradients after this backward (``sync``) or keep accumulating them unsharded-locally."""
    model.set_requires_gradient_sync(sync)


def clip_grad_norm_(parameters: Iterable[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Clip the gradients of (sharded) ``parameters`` to a total 2-norm of ``max_norm``; returns the norm before
    clipping (a plain tensor, the same on every worker). The norm of DTensor gradients is reduced across workers
    (``full_tensor``) before the one clip coefficient is applied to every shard."""
    from torch.distributed.tensor import DTensor

    params = [p for p in parameters if p.grad is not None]
    total = torch.nn.utils.get_total_norm([p.grad for p in params], norm_type=2.0)
    if isinstance(total, DTensor):
        total = total.full_tensor()
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return total


def sharded_grad_scaler(device_type: str):
    """fp16's loss scaler under FSDP2: torch's ``ShardedGradScaler`` (it all-reduces the found-inf flag, so an
    overflow in any worker's gradient shard skips the step on every worker), with two fixes for fused optimizers
    (``optim.fused=true``, the default AdamW) as of torch 2.13:

    - ``step`` unscales first (through ``unscale_``, which all-reduces the flag) when the loop has not: for a
      fused optimizer ``GradScaler.step`` would otherwise check the local shards only and workers could diverge;
    - the found-inf flag is a 0-dim tensor, as a fused optimizer subtracts it from its 0-dim step counters
      (ShardedGradScaler makes it shape [1]: "output with shape [] doesn't match the broadcast shape [1]").
    """
    from torch.amp.grad_scaler import OptState
    from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

    class _Scaler(ShardedGradScaler):
        def _unscale_grads_(self, optimizer, inv_scale, found_inf, allow_fp16=True):
            out = super()._unscale_grads_(optimizer, inv_scale, found_inf, allow_fp16)
            return {dev: flag.reshape(()) for dev, flag in out.items()}

        def step(self, optimizer, *args, **kwargs):
            if self._enabled and self._per_optimizer_states[id(optimizer)]["stage"] is OptState.READY:
                self.unscale_(optimizer)
            return super().step(optimizer, *args, **kwargs)

    return _Scaler(device=device_type)
