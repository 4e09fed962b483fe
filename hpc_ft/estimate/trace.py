"""Peak memory of one training step, traced on fake tensors with PyTorch's own memory tracker.

The job's model is built from its config under ``FakeTensorMode`` (tensors with shapes, dtypes and devices but no
storage: a 70B model costs nothing to build), with the job's LoRA and activation checkpointing applied, and one
optimizer step (forward, loss, backward, ``optimizer.step``) runs at the worker's micro-batch and the data's
sequence length under the job's autocast. ``torch.distributed._tools.mem_tracker.MemTracker`` follows every tensor
that lives during the step and reports the peak, split into parameters, gradients, optimizer state, activations
and temporaries. Two effects of more than one worker are added by rule, because the trace runs in one process:
DDP's gradient buckets (one more copy of the trainable parameters' gradients, allocated when DDP wraps the model
and held all run long: torch's DistributedDataParallel default, ``gradient_as_bucket_view=False``) and FSDP2's
sharding (parameters, gradients and optimizer state divided by the world size, plus the all-gathered parameters
of the root and of two transformer blocks: the current one and the prefetched next one).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import torch

from hpc_ft.estimate.model import MemoryEstimate
from hpc_ft.job import JobSpec
from hpc_ft.train.tasks.base import instantiate, is_hf_model, plain

AMP = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
TOKEN_LABEL_TASKS = ("causal_lm",)  # tasks whose labels are per token (AUTO_CLASS), not per sequence


def trace_memory(spec: JobSpec) -> MemoryEstimate:
    """Peak tensor memory per worker of ``spec``'s training step (bytes), without allocating it.

    Raises ConfigError (hpc_ft.errors) when the model config cannot be read, like the job itself would.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode
    from hpc_ft.train.memory import memory_tracker

    from hpc_ft.train.tasks.hf import offline

    offline()
    t0 = time.monotonic()
    c = spec.conf
    objective = instantiate(c.task)
    micro = max(1, c.train.global_batch_size // (spec.world_size * c.train.grad_accum_steps))
    notes: list[str] = []
    amp_dtype = _amp_dtype(c.precision.dtype, notes)
    # Built on the meta device (LoRA's adapters too: peft moves them beside their base layer), then given fake
    # CPU storage: FakeTensorMode alone cannot take peft's module surgery (it swaps parameters by .to()).
    with torch.device("meta"):
        model = _build_model(objective, c, notes)
    model = _apply_fitting(model, c)
    with FakeTensorMode(allow_non_fake_inputs=True):  # the meta parameters are its only non-fake inputs
        _to_empty_keeping_shared(model)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = instantiate(c.optim, params=params)
        batch, seq_len = _batch(objective, c, micro)
        tracker = memory_tracker(model, optimizer)  # the tool the run measures with (frozen parameters allowed)
        with tracker:
            accum = min(2, c.train.grad_accum_steps)  # a second micro-batch adds to existing gradients: no new peak
            for i in range(accum):
                if i:
                    tracker.reset_mod_stats()
                amp = torch.autocast("cpu", dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
                with amp:
                    loss = objective.loss(objective.forward(model, batch), batch)
                loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        peak = tracker.get_tracker_snapshot("peak")
        blocks = _block_param_bytes(model)
        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in params)
        bucket_bytes = sum(p.numel() * p.element_size() for p in params)  # gradients have their parameter's dtype
    by = _categories(peak)
    est = MemoryEstimate(peak=by.pop("Total"), parameters=by["Parameter"] + by["Buffer"], gradients=by["Gradient"],
                         optimizer_state=by["Optstate"], activations=by["Activation"],
                         temporaries=by["Temp"] + by["Other"], trainable_params=trainable, total_params=total,
                         micro_batch_size=micro, seq_len=seq_len, notes=notes,
                         method=f"traced on fake tensors (torch MemTracker, {time.monotonic() - t0:.1f} s)")
    return _distributed(est, spec, blocks, bucket_bytes)


def _to_empty_keeping_shared(model: torch.nn.Module) -> None:
    """``model.to_empty(device="cpu")`` with shared parameters still shared afterwards.

    ``to_empty`` gives every parameter slot its own new tensor, so a parameter held by two modules (tied input and
    output embeddings, as most small causal LMs have) would become two and count twice: parameters, gradients and
    optimizer state all overestimated by the embedding's size. The slots that held one parameter before are
    pointed at one tensor again.
    """
    slots: dict[int, list[tuple[torch.nn.Module, str]]] = {}
    for module in model.modules():
        for name, p in module._parameters.items():
            if p is not None:
                slots.setdefault(id(p), []).append((module, name))
    model.to_empty(device="cpu")
    for shared in (s for s in slots.values() if len(s) > 1):
        first_module, first_name = shared[0]
        for module, name in shared[1:]:
            module._parameters[name] = first_module._parameters[first_name]


def _amp_dtype(precision: str, notes: list[str]) -> torch.dtype | None:
    if precision not in AMP:  # precision=auto: decided on the node; a GPU from A100 on computes bf16
        notes.append(f"precision={precision}: estimated as bf16 (what auto picks on A100 and newer)")
        return torch.bfloat16
    return AMP[precision]


def _model_kwargs(objective: Any, c: Any) -> dict[str, Any]:
    """What the model needs from the data (the class count), without reading the data: the head's size barely
    matters to memory, so an unknown count is taken as 2."""
    custom = getattr(objective, "estimate_model_kwargs", None)
    if callable(custom):
        return dict(custom(c))
    if getattr(objective, "AUTO_CLASS", None) == "sequence_classification":
        labels = (plain(c.task) or {}).get("labels")
        data = plain(c.data) or {}
        n = len(labels) if labels else data.get("num_classes") or data.get("num_labels") or 21
        return {"num_labels": int(n)}
    return {}


def _build_model(objective: Any, c: Any, notes: list[str]) -> torch.nn.Module:
    """The job's model with fresh (fake) weights: ``model=hf`` through its config, others with pretrained=False."""
    kwargs = _model_kwargs(objective, c)
    if is_hf_model(c.model):
        import transformers

        from hpc_ft.train.tasks.hf import AUTO_CLASSES, local_dir

        m = plain(c.model)
        path = local_dir(m["path"])
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True,
                                                         trust_remote_code=bool(m.get("trust_remote_code")), **kwargs)
        cls = getattr(transformers, AUTO_CLASSES[objective.AUTO_CLASS])
        return cls.from_config(config, dtype=getattr(torch, m.get("dtype") or "float32"),
                               attn_implementation=m.get("attn_implementation") or "sdpa",
                               trust_remote_code=bool(m.get("trust_remote_code")))
    m = plain(c.model) or {}
    if "pretrained" in m:  # weights do not change the memory; reading them into fake tensors is not possible
        kwargs["pretrained"] = False
    return instantiate(c.model, **kwargs)


def _apply_fitting(model: torch.nn.Module, c: Any) -> torch.nn.Module:
    """LoRA, then activation checkpointing, as the job applies them (hpc_ft.train.fit); returns the model to train."""
    from hpc_ft.train.lora import _as_dict

    peft = _as_dict(c.peft)
    if peft.get("method", "none") not in ("none", None):
        from hpc_ft.train.lora import apply_lora

        model = apply_lora(model, peft)
    if getattr(c.train, "activation_checkpointing", False):
        from hpc_ft.train.ac import apply_activation_checkpointing

        apply_activation_checkpointing(model)
    return model


def _batch(objective: Any, c: Any, micro: int) -> tuple[dict[str, torch.Tensor], int | None]:
    """A micro-batch of the largest shape the job feeds: ``micro`` examples of data.max_length tokens."""
    data = plain(c.data) or {}
    if "num_features" in data:  # the synthetic task
        n = int(data.get("num_classes") or 2)
        return {"features": torch.randn(micro, int(data["num_features"])), "labels": torch.randint(0, n, (micro,))}, None
    seq = int(data.get("max_length") or 512)
    ids = torch.randint(0, 100, (micro, seq))
    batch = {"input_ids": ids, "attention_mask": torch.ones(micro, seq, dtype=torch.long)}
    if getattr(objective, "AUTO_CLASS", None) in TOKEN_LABEL_TASKS:
        batch["labels"] = ids.clone()
    else:
        batch["labels"] = torch.zeros(micro, dtype=torch.long)
    return batch, seq


def _categories(peak: dict) -> dict[str, int]:
    """MemTracker's peak snapshot summed over devices, by its category names (Parameter, Gradient, ...)."""
    out = {k: 0 for k in ("Parameter", "Buffer", "Gradient", "Activation", "Temp", "Optstate", "Other", "Total")}
    for per_device in peak.values():
        for k, v in per_device.items():
            name = getattr(k, "value", str(k)).split(".")[-1].capitalize() if not isinstance(k, str) else k
            for known in out:
                if name.lower() == known.lower():
                    out[known] += int(v)
    return out


def _block_param_bytes(model: torch.nn.Module) -> tuple[int, int]:
    """(bytes of the largest transformer block's parameters, bytes of the parameters outside every block)."""
    from hpc_ft.train.blocks import transformer_blocks

    blocks = transformer_blocks(model)
    inside = {id(p) for b in blocks for p in b.parameters()}
    largest = max((sum(p.numel() * p.element_size() for p in b.parameters()) for b in blocks), default=0)
    outside = sum(p.numel() * p.element_size() for p in model.parameters() if id(p) not in inside)
    return largest, outside


def _distributed(est: MemoryEstimate, spec: JobSpec, blocks: tuple[int, int], bucket_bytes: int) -> MemoryEstimate:
    """The one-process trace turned into one worker's figure in a job of ``spec.world_size`` workers.

    ``bucket_bytes``: DDP's gradient buckets, the trainable parameters' size; they live beside whatever the step's
    peak holds, so they add to it whether the peak falls in the forward pass or in the optimizer step.
    """
    from dataclasses import replace

    w = spec.world_size
    strategy = getattr(spec.conf.train, "strategy", "ddp")
    if w <= 1:
        return est
    if strategy == "fsdp":
        held = est.parameters + est.gradients + est.optimizer_state
        largest, outside = blocks
        gathered = outside + 2 * largest  # the root's parameters stay gathered; a block and the prefetched next
        sharded = held // w
        return replace(est, peak=est.peak - held + sharded + gathered, parameters=est.parameters // w + gathered,
                       gradients=est.gradients // w, optimizer_state=est.optimizer_state // w,
                       notes=[*est.notes, f"FSDP2 over {w} workers: parameters, gradients and optimizer state "
                                          "sharded; the root and two blocks gathered at a time"])
    return replace(est, peak=est.peak + bucket_bytes, temporaries=est.temporaries + bucket_bytes,
                   notes=[*est.notes, "DDP: one more copy of the gradients in its all-reduce buckets"])
