"""How each micro-batch's loss is scaled so that one optimizer step follows the global batch's objective.

A task whose loss is a mean over samples (sequence classification: every sample weighs the same) gets the
classic scaling: each micro-batch's mean loss divided by the accumulation steps, and the data-parallel gradient
average across ranks does the rest.

A task whose loss is a mean over tokens (causal LM, SFT: only response tokens count, and micro-batches hold very
different numbers of them) must not average per micro-batch: that weighs a token of a short response more than a
token of a long one, and the result changes with how the global batch is cut into micro-batches and ranks. Such a
task says so by defining ``loss_sum(outputs, batch)`` (the summed token loss) and ``loss_count(batch)`` (the
tokens it sums over); the step then optimises sum of token losses / number of counted tokens over the whole
global batch, across accumulation steps and ranks (the fix Hugging Face transformers made in 2024,
``num_items_in_batch``). The count is summed on the host copies of this rank's micro-batches before the step,
then all-reduced: one small collective per optimizer step, no device-to-host sync.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from hpc_ft.train.distributed import Dist


def per_token(task: Any) -> bool:
    """Whether ``task`` normalises its loss by a token count of the global batch (defines loss_sum/loss_count)."""
    return callable(getattr(task, "loss_sum", None)) and callable(getattr(task, "loss_count", None))


class LossScale:
    """The scaled loss of each micro-batch of one optimizer step; ``begin`` is called once per step with this rank's
    micro-batches (host copies), then ``loss`` once per micro-batch."""

    def __init__(self, task: Any, d: Dist, grad_accum_steps: int) -> None:
        self.task, self.d, self.grad_accum_steps = task, d, grad_accum_steps
        self.per_token = per_token(task)
        self._factor: torch.Tensor | None = None  # world size / global token count, on the device

    def begin(self, batches: list[dict[str, torch.Tensor]]) -> None:
        """Count the tokens the loss sums over in the global batch (all ranks' micro-batches); a no-op for a task
        averaging per sample."""
        if not self.per_token:
            return
        local = sum(int(self.task.loss_count(b)) for b in batches)
        count = torch.tensor(float(local), dtype=torch.float64, device=self.d.device)
        if self.d.world_size > 1:
            dist.all_reduce(count)
        # x world size: data-parallel gradient reduction (DDP's all-reduce, FSDP2's reduce-scatter) averages over
        # ranks, so each rank's sum / (global count / world size) averages to the global sum / global count.
        # A global batch without any counted token gives a zero loss (not NaN).
        self._factor = (self.d.world_size / count.clamp(min=1.0)).float()

    def loss(self, outputs: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """This micro-batch's share of the step's loss: its gradient, accumulated over the step's micro-batches
        and averaged over ranks, is the gradient of the global batch's loss."""
        if not self.per_token:
            loss = self.task.loss(outputs, batch)
            return loss if self.grad_accum_steps == 1 else loss / self.grad_accum_steps  # one op less a step
        if self._factor is None:
            raise RuntimeError("LossScale.begin() was not called for this optimizer step")
        return self.task.loss_sum(outputs, batch) * self._factor
