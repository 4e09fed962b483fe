"""Which autocast precision a worker trains in: ``precision=auto`` asks the device, an explicit one is checked.

``auto`` (the default) picks what the device computes natively:

| device | auto picks | why |
| --- | --- | --- |
| CUDA, compute capability >= 8.0 (Ampere and later) | bf16 | tensor cores compute bf16 |
| CUDA, compute capability < 8.0 | fp16 (+ GradScaler) | no bf16 tensor cores; fp16 has them from 7.0 |
| CPU with AVX512-BF16 or AMX (x86), or BF16 (Arm) | bf16 | bf16 dot products in hardware |
| any other CPU | fp32 | bf16 and fp16 are emulated there: slower than fp32 (2.2x on a Xeon without them) |

Each node decides at start from its own device (``device_caps``) and the job's ranks then agree on the weakest
choice (``weakest``), so a mixed allocation never runs DDP with a GradScaler on some ranks only. An explicit
``precision=bf16|fp16|fp32`` is always used as given, with a warning when the device lacks native support.

The decision (``decide``) is pure: tests hand it faked capabilities. Reading them (``device_caps``) is the only
part that asks torch and ``/proc/cpuinfo``.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path

AUTO = "auto"
DTYPES = ("fp32", "bf16", "fp16")
# x86 /proc/cpuinfo flags (and Arm "Features") that mean bf16 or fp16 arithmetic in hardware.
CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
CPU_FP16_FLAGS = frozenset({"avx512_fp16", "amx_fp16", "fphp"})
CUDA_BF16_CC = (8, 0)  # Ampere: bf16 tensor cores
CUDA_FP16_CC = (5, 3)  # half-precision arithmetic (tensor cores from 7.0)


@dataclass(frozen=True)
class DeviceCaps:
    """What a worker's device can compute, as far as the precision choice needs it."""

    kind: str  # "cuda" | "cpu"
    name: str = ""  # the GPU's name, or the CPU's model name
    cuda_capability: tuple[int, int] | None = None  # (major, minor) of a CUDA device
    cpu_flags: frozenset[str] = field(default_factory=frozenset)  # /proc/cpuinfo flags (x86) or Features (Arm)
    cpu_capability: str | None = None  # torch.backends.cpu.get_cpu_capability(): "AVX512", "AVX2", ...

    def describe(self) -> str:
        if self.kind == "cuda":
            cc = ".".join(map(str, self.cuda_capability)) if self.cuda_capability else "?"
            return f"CUDA {self.name or 'GPU'} (compute capability {cc})"
        return f"CPU {self.name or platform.machine()}" + (f" ({self.cpu_capability})" if self.cpu_capability
                                                          else "")


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a worker trains in, and why."""

    dtype: str  # fp32 | bf16 | fp16: the autocast dtype (fp16 adds a GradScaler)
    requested: str  # precision.dtype as configured (auto | fp32 | bf16 | fp16)
    reason: str  # one sentence: what was decided from what
    native: bool  # the device computes ``dtype`` in hardware (fp32: always)
    warning: str | None = None  # an explicit precision the device lacks native support for


def native_dtypes(caps: DeviceCaps) -> tuple[set[str], str]:
    """The dtypes ``caps`` computes natively (fp32 always), and the evidence in words."""
    out = {"fp32"}
    if caps.kind == "cuda":
        cc = caps.cuda_capability or (0, 0)
        if cc >= CUDA_BF16_CC:
            out.add("bf16")
        if cc >= CUDA_FP16_CC:
            out.add("fp16")
        return out, f"compute capability {cc[0]}.{cc[1]}"
    bf16 = sorted(caps.cpu_flags & CPU_BF16_FLAGS)
    fp16 = sorted(caps.cpu_flags & CPU_FP16_FLAGS)
    if bf16:
        out.add("bf16")
    if fp16:
        out.add("fp16")
    found = bf16 + fp16
    return out, (f"CPU flags {', '.join(found)}" if found else "no AVX512-BF16, AMX or BF16 in the CPU flags")


def decide(requested: str, caps: DeviceCaps) -> PrecisionChoice:
    """The precision to train in for ``requested`` (auto | fp32 | bf16 | fp16) on a device with ``caps``.

    Raises ValueError for another ``requested`` (validation refuses it before anything is submitted).
    """
    if requested not in (AUTO, *DTYPES):
        raise ValueError(f"precision {requested!r}: one of {AUTO}, {', '.join(DTYPES)}")
    native, evidence = native_dtypes(caps)
    where = caps.describe()
    if requested != AUTO:
        ok = requested in native
        warning = None if ok else (
            f"precision={requested} on {where}: not native ({evidence}), so it is emulated and likely slower "
            f"than {'fp32' if caps.kind == 'cpu' else 'fp16'}; precision=auto picks {decide(AUTO, caps).dtype} "
            "here")
        return PrecisionChoice(requested, requested, f"precision={requested} as configured", ok, warning)
    if caps.kind == "cuda":
        dtype = "bf16" if "bf16" in native else "fp16" if "fp16" in native else "fp32"
        why = {"bf16": "bf16 is native from compute capability 8.0",
               "fp16": "no native bf16 below compute capability 8.0: fp16 with the loss scaler",
               "fp32": "neither bf16 nor fp16 is native"}[dtype]
    else:
        dtype = "bf16" if "bf16" in native else "fp32"
        why = "bf16 is native" if dtype == "bf16" else "bf16 would be emulated (slower than fp32)"
    return PrecisionChoice(dtype, AUTO, f"auto: {dtype} on {where}, {evidence}; {why}", True)


# Weakest first: a job whose ranks decided differently trains in the first of these any rank chose.
_STRENGTH = ("fp32", "fp16", "bf16")


def weakest(choices: list[PrecisionChoice]) -> PrecisionChoice:
    """The one choice every rank of a job follows: the same on every rank by construction; with ``auto`` on a
    mixed allocation the weakest dtype any rank decided (fp32 < fp16 < bf16), its reason naming the mix."""
    if not choices:
        raise ValueError("no precision choices")
    pick = min(choices, key=lambda c: _STRENGTH.index(c.dtype))
    dtypes = sorted({c.dtype for c in choices})
    if len(dtypes) == 1:
        return pick
    return PrecisionChoice(pick.dtype, pick.requested,
                           f"{pick.reason} (ranks decided {', '.join(dtypes)}: all train in {pick.dtype})",
                           pick.native, pick.warning)


def read_cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> tuple[frozenset[str], str]:
    """The CPU's feature flags and model name from ``cpuinfo`` (x86 ``flags``, Arm ``Features``); empty when
    the file is missing (not Linux)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return frozenset(), ""
    flags: set[str] = set()
    name = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features") and not flags:
            flags = set(value.split())
        elif key == "model name" and not name:
            name = value.strip()
    return frozenset(flags), name


def device_caps(device) -> DeviceCaps:
    """The capabilities of ``device`` (a torch.device) on this machine."""
    import torch

    if device.type == "cuda":
        return DeviceCaps("cuda", torch.cuda.get_device_name(device),
                          tuple(torch.cuda.get_device_capability(device)))
    flags, name = read_cpu_flags()
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # pragma: no cover - torch before 2.1
        capability = None
    if capability and "AMX" in capability.upper():  # torch reports AMX where /proc/cpuinfo may hide it (VMs)
        flags = flags | {"amx_bf16"}
    return DeviceCaps("cpu", name, None, flags, capability)


def for_worker(requested: str, d) -> PrecisionChoice:
    """Decide on this worker's device, then agree with every rank (``weakest``); logs the decision on rank 0.

    ``d``: the worker's ``hpc_ft.train.distributed.Dist``. Called once at setup (one all-gather of a few bytes).
    """
    import logging

    from hpc_ft.train.distributed import all_gather_objects

    choice = weakest(all_gather_objects(decide(requested, device_caps(d.device)), d))
    if d.is_main:
        logging.getLogger("hpc_ft.train").info("precision %s: %s", choice.dtype, choice.reason)
    return choice
