"""The measured peak tensor memory of one worker, set beside the estimate made before submission.

On a GPU it is the CUDA caching allocator's own peak over the whole run (``torch.cuda.max_memory_allocated``). A
CPU has no allocator statistics, so the first optimizer step of the attempt runs under PyTorch's memory tracker
(``torch.distributed._tools.mem_tracker.MemTracker``), which follows every tensor of the step: the same tool the
estimate uses on fake tensors (hpc_ft.estimate.trace), here on the real ones, plus DDP's gradient buckets, which
were allocated before the step and which the tracker cannot see. One step costs a little more under the tracker;
later steps are not tracked.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

import torch

log = logging.getLogger("hpc_ft.train")


class StepPeak:
    """Peak tensor memory of this worker: ``bytes`` (None until measured) and ``source`` (how)."""

    def __init__(self, device: torch.device, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 enabled: bool = True) -> None:
        self.device, self.model, self.optimizer, self.enabled = device, model, optimizer, enabled
        self._bytes: int | None = None
        self._tracker = None
        self.source = "cuda max_memory_allocated" if device.type == "cuda" else "MemTracker, first step"
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    @contextlib.contextmanager
    def around_step(self, first: bool) -> Iterator[None]:
        """Track the step run inside on a CPU when it is the attempt's first; otherwise do nothing."""
        if self.device.type == "cuda" or not first or not self.enabled or self._bytes is not None:
            yield
            return
        tracker = memory_tracker(self.model, self.optimizer)
        self._tracker = tracker
        try:
            with tracker:
                yield
            self._bytes = int(sum(d.get("Total", 0) for d in _by_name(tracker.get_tracker_snapshot("peak"))))
            self._bytes += ddp_bucket_bytes(self.model)
        finally:
            self._tracker = None

    def next_micro_batch(self, index: int) -> None:
        """Between micro-batches of a tracked step: the tracker follows one forward per module at a time."""
        if index and self._tracker is not None:
            self._tracker.reset_mod_stats()

    @property
    def bytes(self) -> int | None:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        return self._bytes


def ddp_bucket_bytes(model: torch.nn.Module) -> int:
    """Bytes of DDP's gradient buckets, as DDP itself reports them (0 for a model DDP does not wrap).

    DDP allocates them when it wraps the model, before the tracker starts, so the tracker never sees them; on a GPU
    the allocator's peak includes them. With ``gradient_as_bucket_view`` the gradients live in the buckets and the
    tracker counts them already. The sizes come from DDP's own logging data (a private API in torch 2.13: an
    unreadable answer counts 0, as before).
    """
    from torch.nn.parallel import DistributedDataParallel

    if not isinstance(model, DistributedDataParallel):
        return 0
    try:
        data = model._get_ddp_logging_data()
        if data.get("gradient_as_bucket_view"):
            return 0
        return sum(int(size) for size in str(data.get("bucket_sizes") or "").split(",") if size.strip())
    except Exception:  # a torch whose logging data differs: measure what the tracker sees
        return 0


class _NoHook:
    def remove(self) -> None:
        pass


def memory_tracker(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None):
    """A ``MemTracker`` following ``model`` and ``optimizer`` that also works on a model with frozen parameters.

    MemTracker (torch 2.13) registers a gradient hook on every parameter of a module it enters, and
    ``register_hook`` refuses a tensor that does not require grad: the frozen base of a LoRA model. Frozen
    parameters get no gradient, so there is nothing to follow: each is marked as hooked already (a no-op handle)
    when a module is entered, and MemTracker counts its memory as parameters as usual. Marked on entry, not once
    up front: FSDP2 swaps a module's sharded parameters for new unsharded ones in its pre-forward hook.
    """
    from torch.distributed._tools.mem_tracker import MemTracker

    class _FrozenAwareTracker(MemTracker):
        def _track_module_params_and_buffers(self, module: torch.nn.Module,
                                             install_grad_hooks: bool = True) -> tuple[int, int]:
            handles = getattr(self, "_param_to_grad_hook_handles", None)
            if install_grad_hooks and handles is not None and hasattr(handles, "get"):
                for p in module.parameters():
                    if not p.requires_grad and handles.get(p) is None:
                        handles[p] = (_NoHook(), _NoHook())
            return super()._track_module_params_and_buffers(module, install_grad_hooks)

    tracker = _FrozenAwareTracker()
    tracker.track_external(model, *([optimizer] if optimizer is not None else []))
    return tracker


def _by_name(peak: dict) -> list[dict[str, int]]:
    """MemTracker's per-device snapshot with its category keys as plain names ("Total", "Parameter", ...)."""
    out = []
    for per_device in peak.values():
        out.append({(k if isinstance(k, str) else str(getattr(k, "value", k))): int(v) for k, v in per_device.items()})
    return out
