"""The memory figures of a job, and the memory of the GPU it asks for: plain data, no torch.

Peak memory per worker is the largest amount of tensor memory one worker holds at any moment of a training step:
parameters, gradients, optimizer state, the activations kept for the backward pass, and temporaries. It is what
``torch.cuda.max_memory_allocated`` reports on a GPU. A GPU has less than its nominal memory for tensors: the CUDA
context and the caching allocator's fragmentation take their share (``USABLE_FRACTION``, ``CUDA_CONTEXT_GIB``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from hpc_ft.terminal import fmt_bytes  # the one byte formatter (the run report's too); imported from here as well

GIB = 1024 ** 3

# Nominal memory (GiB) by the GPU type names Slurm clusters use in GRES (resources.gpu_type), lower case.
# Ambiguous names take the smaller model (a100: the 40 GB A100); resources.gpu_mem_gb overrides any of them.
GPU_MEMORY_GIB: dict[str, float] = {
    "b200": 180, "gh200": 96, "h200": 141, "h100": 80, "h100_nvl": 94, "h800": 80,
    "a100": 40, "a100_40g": 40, "a100_80g": 80, "a100-80gb": 80, "a100_80gb": 80, "a800": 80,
    "l40s": 48, "l40": 48, "a40": 48, "a6000": 48, "rtx_a6000": 48, "rtx6000": 24, "a30": 24, "a10": 24,
    "a10g": 24, "l4": 24, "rtx4090": 24, "rtx3090": 24, "v100": 16, "v100_32g": 32, "v100-32gb": 32,
    "t4": 16, "p100": 16, "mi300x": 192, "mi250x": 64, "mi250": 64, "mi210": 64,
}
CUDA_CONTEXT_GIB = 1.0  # the CUDA context, cuBLAS/cuDNN workspaces and NCCL buffers: not in the tensor peak
USABLE_FRACTION = 0.92  # of what remains: the caching allocator's fragmentation eats the rest in practice


def gpu_memory_bytes(resources: Any) -> tuple[int | None, str]:
    """Nominal memory of one GPU of the job (bytes) and where the figure comes from.

    ``resources.gpu_mem_gb`` wins; else ``resources.gpu_type`` looked up in ``GPU_MEMORY_GIB``; else (None, why).
    """
    mem_gb = _get(resources, "gpu_mem_gb")
    if mem_gb:
        return int(float(mem_gb) * GIB), f"resources.gpu_mem_gb={mem_gb}"
    gpu_type = _get(resources, "gpu_type")
    if gpu_type:
        gib = GPU_MEMORY_GIB.get(str(gpu_type).lower())
        if gib is not None:
            return int(gib * GIB), f"{gpu_type}: {gib:g} GiB"
        return None, f"resources.gpu_type={gpu_type} is not in hpc_ft's table: set resources.gpu_mem_gb"
    return None, "no resources.gpu_type or resources.gpu_mem_gb: the GPU's memory is unknown"


def usable_bytes(gpu_bytes: int) -> int:
    """What tensors can use of a GPU with ``gpu_bytes`` nominal memory (context and fragmentation taken off)."""
    return int(max(0.0, gpu_bytes - CUDA_CONTEXT_GIB * GIB) * USABLE_FRACTION)


def _get(node: Any, key: str) -> Any:
    if isinstance(node, Mapping):
        return node.get(key)
    return getattr(node, key, None)


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak tensor memory of one worker during a training step, in bytes, by what holds it.

    ``parameters`` .. ``optimizer_state`` are what the worker holds between steps (sharded under FSDP);
    ``activations`` and ``temporaries`` come and go within the step; ``peak`` is the largest sum seen at one
    moment (not the sum of the parts' own peaks). ``method`` says how it was obtained.
    """

    peak: int
    parameters: int = 0
    gradients: int = 0
    optimizer_state: int = 0
    activations: int = 0
    temporaries: int = 0
    trainable_params: int = 0
    total_params: int = 0
    micro_batch_size: int = 0
    seq_len: int | None = None
    method: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "MemoryEstimate":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def lines(self) -> list[str]:
        """The breakdown as text lines, e.g. ``peak 3.21 GiB per worker (parameters 1.02, ...)``."""
        parts = [("parameters", self.parameters), ("gradients", self.gradients),
                 ("optimizer state", self.optimizer_state), ("activations", self.activations),
                 ("temporaries", self.temporaries)]
        # Sequences as long as data.max_length: the job's largest batch. Shorter real examples measure less.
        shape = f"micro-batch {self.micro_batch_size}" + (f" x {self.seq_len} tokens" if self.seq_len else "")
        out = [f"peak {fmt_bytes(self.peak)} per worker ({shape})",
               # What is live at that moment: a forward-pass peak has no gradients and no optimizer state yet.
               "  at the peak: " + ", ".join(f"{name} {fmt_bytes(v)}" for name, v in parts),
               f"  {self.trainable_params:,} of {self.total_params:,} parameters trained; {self.method}"]
        out += [f"  note: {n}" for n in self.notes]
        return out


@dataclass(frozen=True)
class FitReport:
    """The estimate against the GPU: whether it fits, and the overrides that make it fit when it does not."""

    estimate: MemoryEstimate
    gpu_bytes: int | None  # nominal memory of one GPU; None: unknown (CPU job or unknown type)
    gpu_source: str
    fits: bool | None  # None: nothing to compare with
    fixes: list[list[str]] = field(default_factory=list)  # each: Hydra overrides that together make it fit
    fix_peaks: list[int] = field(default_factory=list)  # the estimated peak with each fix

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["estimate"] = self.estimate.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FitReport":
        return cls(estimate=MemoryEstimate.from_dict(d["estimate"]), gpu_bytes=d.get("gpu_bytes"),
                   gpu_source=d.get("gpu_source", ""), fits=d.get("fits"), fixes=[list(f) for f in d.get("fixes", [])],
                   fix_peaks=list(d.get("fix_peaks", [])))

    @property
    def usable(self) -> int | None:
        return None if self.gpu_bytes is None else usable_bytes(self.gpu_bytes)

    def lines(self) -> list[str]:
        out = ["memory estimate: " + self.estimate.lines()[0], *self.estimate.lines()[1:]]
        if self.gpu_bytes is None:
            out.append(f"  GPU: {self.gpu_source}")
            return out
        verdict = "fits" if self.fits else "does NOT fit"
        out.append(f"  {verdict}: {fmt_bytes(self.estimate.peak)} against {fmt_bytes(self.usable or 0)} usable "
                   f"of one GPU ({self.gpu_source}; {CUDA_CONTEXT_GIB:g} GiB context, "
                   f"{USABLE_FRACTION:.0%} of the rest)")
        for fix, peak in zip(self.fixes, self.fix_peaks):
            out.append(f"  fits with: {' '.join(fix)}   (peak {fmt_bytes(peak)})")
        if self.fits is False and not self.fixes:
            out.append(f"  no change it tried makes it fit ({TRIED_FIXES}): it needs a GPU with more memory "
                       "(resources.gpu_type, resources.gpu_mem_gb) or a smaller model")
        return out


# What hpc_ft.estimate.fixes.candidates tries, in its order, for a job that does not fit (where each applies).
TRIED_FIXES = ("more accumulation steps, activation checkpointing, FSDP2, twice the GPUs with FSDP2, LoRA, "
               "and pairs of these")


def fit_problem(report: FitReport) -> "Problem | None":
    """The refusal of a job the estimate says will not fit one GPU (None when it fits or cannot be compared)."""
    from hpc_ft.errors import Problem

    if report.fits is not False:
        return None
    fixes = " | ".join(" ".join(f) for f in report.fixes) or \
        "no single change found: a GPU type with more memory (resources.gpu_type), or a smaller model"
    by_mem = report.gpu_source.startswith("resources.gpu_mem_gb")
    key = "resources.gpu_mem_gb" if by_mem else "resources.gpu_type"
    value = report.gpu_source.split("=", 1)[1] if by_mem else report.gpu_source.split(":")[0]
    return Problem(key, value,
                   f"the job needs an estimated {fmt_bytes(report.estimate.peak)} per worker and one GPU has "
                   f"{fmt_bytes(report.usable or 0)} for tensors (`hpc-ft estimate` shows the breakdown)",
                   f"add one of these override sets: {fixes}")
