"""What the loop does differently to fit a bigger model: LoRA, activation checkpointing, FSDP2 (issue 13).

``Fit`` is read from the job's ``peft`` and ``train`` settings and holds the few decisions the loop asks about:
how to prepare the model (LoRA, then activation checkpointing, then FSDP2 sharding: the order matters, each
wraps what the previous one made), what a checkpoint holds and how it loads, how gradients are synchronised
across micro-batches and clipped. The work itself is in ``lora``, ``ac``, ``fsdp`` and ``dcp_checkpoint``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn

from hpc_ft.train.distributed import Dist

log = logging.getLogger("hpc_ft.train")


@dataclass
class Fit:
    """The fitting options of one worker's run."""

    peft: dict[str, Any] | None  # the peft group when method=lora, else None
    activation_checkpointing: bool
    fsdp: bool  # train.strategy=fsdp: sharded checkpoints; the model sharded when there is a process group
    precision: str  # precision.dtype: FSDP2's mixed-precision policy
    d: Dist
    trainable_keys: set[str] | None = None  # LoRA: the state_dict keys a checkpoint holds (None: all)
    sharded: bool = False  # the model is fully_shard-ed (fsdp with a process group)

    @classmethod
    def of(cls, conf: Any, d: Dist, precision: str) -> "Fit":
        """The job's fitting options on worker ``d``, computing in ``precision`` (the dtype decided for this
        device: ``precision=auto`` resolved)."""
        from hpc_ft.train.lora import _as_dict

        peft = _as_dict(conf.peft)
        t = conf.train
        return cls(peft=peft if peft.get("method") == "lora" else None,
                   activation_checkpointing=bool(t.activation_checkpointing), fsdp=t.strategy == "fsdp",
                   precision=precision, d=d)

    @property
    def quantized(self) -> bool:
        return self.peft is not None and self.peft.get("quantize") == "4bit"

    def load_kwargs(self) -> dict[str, Any]:
        """What ``model=hf`` is loaded with besides the task's kwargs: QLoRA's 4-bit base on this worker's device."""
        return {"quantize": "4bit", "device": str(self.d.device)} if self.quantized else {}

    def prepare(self, model: nn.Module) -> nn.Module:
        """On the device: LoRA adapters, then activation checkpointing, then FSDP2 sharding, as configured; returns
        the model to train (a peft model under LoRA). Raises ConfigError when LoRA's target modules match nothing."""
        if not self.quantized:  # a 4-bit model is loaded onto its device (bitsandbytes refuses .to())
            model.to(self.d.device)
        if self.peft is not None:
            from hpc_ft.train.lora import apply_lora, trainable_keys

            model = apply_lora(model, self.peft)
            self.trainable_keys = trainable_keys(model)
            if self.quantized and self.d.device.type == "cpu":  # exact resume: one weight layout (lora.py)
                from hpc_ft.train.lora import pin_cpu_4bit_layout

                pin_cpu_4bit_layout(model)
        if self.activation_checkpointing:
            from hpc_ft.train.ac import apply_activation_checkpointing

            apply_activation_checkpointing(model)
        if self.fsdp:
            if dist.is_available() and dist.is_initialized() and self.d.world_size > 1:
                from hpc_ft.train.fsdp import shard_model

                model = shard_model(model, self.d.device, self.d.world_size, self.precision)
                self.sharded = True
            else:
                log.info("train.strategy=fsdp with one worker: nothing to shard (checkpoints are still sharded "
                         "ones, loadable at any world size)")
        return model

    def grad_scaler(self, enabled: bool) -> Any:
        """fp16's loss scaler (``enabled``; a disabled one is a no-op): under FSDP2 a ``ShardedGradScaler``, which
        all-reduces its found-inf flag, so an overflow in one worker's gradient shard skips the step on every
        worker (``torch.amp.GradScaler`` would skip it only where the shard overflowed, and the workers' shards
        would drift apart)."""
        if self.sharded and enabled:
            from hpc_ft.train.fsdp import sharded_grad_scaler

            return sharded_grad_scaler(self.d.device.type)
        return torch.amp.GradScaler(self.d.device.type, enabled=enabled)

    # --- checkpoints ------------------------------------------------------------------------------------------

    def model_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The weights an (unsharded) checkpoint holds: every one, or a LoRA job's trainable ones only."""
        if self.trainable_keys is None:
            return model.state_dict()
        from hpc_ft.train.lora import trainable_state_dict

        return trainable_state_dict(model, self.trainable_keys)

    def load_checkpoint(self, ckpt: Any, model: nn.Module, optimizer: torch.optim.Optimizer,
                        fresh_optimizer: bool) -> Callable[[], None] | None:
        """Load ``ckpt``'s weights into ``model`` now, or return the loader of weights and optimizer state that
        ``restore_optimizer`` calls (a sharded checkpoint loads both in one read); None: the optimizer state is
        ``ckpt.state["optimizer"]``. Raises RuntimeError when the weights do not fit the model."""
        if ckpt.sharded:
            from hpc_ft.train.dcp_checkpoint import load_sharded

            if fresh_optimizer:
                load_sharded(ckpt.path, model, None, self.trainable_keys)
                return None
            return lambda: load_sharded(ckpt.path, model, optimizer, self.trainable_keys)
        if self.trainable_keys is None:
            model.load_state_dict(ckpt.state["model"])
        else:
            from hpc_ft.train.lora import load_trainable

            load_trainable(model, ckpt.state["model"], self.trainable_keys)
        return None

    def save_sharded(self, run_dir: Any, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                     meta: dict[str, Any], keep: int, kill_mid_write: bool = False) -> None:
        """Write a sharded checkpoint (every worker; hpc_ft.train.dcp_checkpoint). ``kill_mid_write``: the test
        hook that kills every worker after its shards are written and before the checkpoint counts."""
        from hpc_ft.train.dcp_checkpoint import save_sharded

        def die() -> None:
            import signal

            log.warning("test hook: killed while writing the checkpoint of step %d", step)
            for h in logging.getLogger().handlers:
                h.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        save_sharded(run_dir, step, model, optimizer, {**meta, "sharded": True}, self.d.is_main, keep,
                     self.trainable_keys, before_complete=die if kill_mid_write else None)

    # --- a step -----------------------------------------------------------------------------------------------

    def gradient_sync(self, model: nn.Module, last_micro: bool) -> contextlib.AbstractContextManager:
        """FSDP2: reduce-scatter gradients only after the last micro-batch's backward (accumulate before)."""
        if self.sharded:
            from hpc_ft.train.fsdp import set_gradient_sync

            set_gradient_sync(model, last_micro)
        return contextlib.nullcontext()

    def clip_grad_norm_(self, model: nn.Module, max_norm: float) -> None:
        """Clip the trained parameters' gradients to ``max_norm`` (their norm across shards under FSDP2)."""
        params = [p for p in model.parameters() if p.requires_grad]
        if self.sharded:
            from hpc_ft.train.fsdp import clip_grad_norm_

            clip_grad_norm_(params, max_norm)
        else:
            torch.nn.utils.clip_grad_norm_(params, max_norm)
