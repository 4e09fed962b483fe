"""The GPUs the job was given, sampled through NVML (``import pynvml`` from nvidia-ml-py).

Every NVML call goes through the ``pynvml`` module attribute at call time, so tests can replace the
functions there with a small fake that raises pynvml's own NVMLError subclasses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from hpc_ft.telemetry.records import GIB

# Values CUDA treats as "no GPU at all".
_NO_DEVICES = {"", "-1", "none", "nodevfiles"}


@dataclass(frozen=True)
class DeviceSelector:
    """How one assigned GPU is found in NVML: by physical index or by UUID (GPU-... or MIG-...)."""

    index: int | None = None
    uuid: str | None = None

    def __str__(self) -> str:
        return self.uuid if self.uuid else str(self.index)


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _slurm_gpus(env: Mapping[str, str]) -> list[int] | None:
    """Physical GPU indices Slurm bound to this step (or job), when it says so."""
    for key in ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS"):
        raw = env.get(key)
        if raw and all(v.isdigit() for v in _split(raw)):
            return [int(v) for v in _split(raw)]
    return None


def assigned_devices(env: Mapping[str, str] | None = None) -> list[DeviceSelector] | None:
    """The GPUs this job may use, or None for "every GPU NVML sees".

    - CUDA_VISIBLE_DEVICES with UUIDs: exactly those.
    - Slurm's binding (SLURM_STEP_GPUS, else SLURM_JOB_GPUS) holds physical indices; with device cgroups
      Slurm sets CUDA_VISIBLE_DEVICES to 0..n-1 *within* that binding, so integer entries index into it.
    - CUDA_VISIBLE_DEVICES with integers and no Slurm binding: NVML indices (CUDA_DEVICE_ORDER=PCI_BUS_ID
      makes CUDA agree with NVML's PCI order; CUDA's default order can differ on mixed-GPU hosts).
    - An empty or -1 CUDA_VISIBLE_DEVICES: no GPU.
    """
    env = os.environ if env is None else env
    cvd = env.get("CUDA_VISIBLE_DEVICES")
    slurm = _slurm_gpus(env)
    if cvd is not None:
        items = _split(cvd)
        if cvd.strip().lower() in _NO_DEVICES or not items:
            return []
        if all(v.isdigit() for v in items):
            idx = [int(v) for v in items]
            if slurm is not None and all(i < len(slurm) for i in idx):
                return [DeviceSelector(index=slurm[i]) for i in idx]
            return [DeviceSelector(index=i) for i in idx]
        # UUIDs (possibly abbreviated by the user; NVML needs the full form, which Slurm and docker give).
        return [DeviceSelector(index=int(v)) if v.isdigit() else DeviceSelector(uuid=v) for v in items]
    if slurm is not None:
        return [DeviceSelector(index=i) for i in slurm]
    return None


def _text(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


# (column metrics, reader): a reader returns a dict of those metrics from one NVML call.
def _util(nv: Any, h: Any, _pids: set[int]) -> dict[str, float]:
    u = nv.nvmlDeviceGetUtilizationRates(h)
    return {"util_pct": float(u.gpu), "mem_util_pct": float(u.memory)}


def _mem(nv: Any, h: Any, _pids: set[int]) -> dict[str, float]:
    # nvidia-smi's memory.used leaves out what the driver reserves for itself (0.6 GiB on an H200, measured
    # 2026-11-30 by benchmarks/nvml_check.py); NVML's first call counts it as used. Version 2 of the call
    # reports it apart and matches nvidia-smi; drivers without version 2 keep the first call's figure.
    try:
        info = nv.nvmlDeviceGetMemoryInfo(h, version=nv.nvmlMemory_v2)
    except (nv.NVMLError_FunctionNotFound, nv.NVMLError_NotSupported):
        info = nv.nvmlDeviceGetMemoryInfo(h)
    return {"mem_used_gb": info.used / GIB}


def _power(nv: Any, h: Any, _pids: set[int]) -> dict[str, float]:
    return {"power_w": nv.nvmlDeviceGetPowerUsage(h) / 1000.0}  # milliwatts


def _energy(nv: Any, h: Any, _pids: set[int]) -> dict[str, float]:
    return {"energy_j": nv.nvmlDeviceGetTotalEnergyConsumption(h) / 1000.0}  # millijoules since driver load


def _temp(nv: Any, h: Any, _pids: set[int]) -> dict[str, float]:
    return {"temp_c": float(nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU))}


def _clock(nv: Any, h: Any, _pids: set[int]) -> dict[str, float]:
    return {"sm_clock_mhz": float(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM))}


def _job_mem(nv: Any, h: Any, pids: set[int]) -> dict[str, float]:
    # NVML reports host PIDs: inside a container with its own PID namespace nothing matches (0 GiB).
    # usedGpuMemory is None where the driver cannot tell (some vGPU/MIG setups): count nothing for it.
    used = sum(p.usedGpuMemory or 0 for p in nv.nvmlDeviceGetComputeRunningProcesses(h) if p.pid in pids)
    return {"job_mem_gb": used / GIB}


READERS: dict[str, Callable[[Any, Any, set[int]], dict[str, float]]] = {
    "util": _util, "mem": _mem, "power": _power, "energy": _energy, "temp": _temp, "clock": _clock,
    "job_mem": _job_mem,
}


@dataclass
class Gpu:
    """One sampled GPU: its handle, static facts, and the readers still working on it."""

    slot: int
    handle: Any
    info: dict[str, Any]
    readers: dict[str, Callable] = field(default_factory=lambda: dict(READERS))
    energy_base_j: float | None = None  # the counter's first reading: energy is reported since the start
    lost: bool = False


class NvmlGpus:
    """The job's GPUs through NVML. ``open`` returns None (and a notice) when there is nothing to sample."""

    def __init__(self, nv: Any, gpus: list[Gpu], notices: list[str]):
        self.nv = nv
        self.gpus = gpus
        self.notices = notices

    @classmethod
    def open(cls, env: Mapping[str, str] | None = None) -> tuple["NvmlGpus | None", list[str]]:
        """Initialise NVML and find the assigned GPUs; (None, [why]) when none can be sampled."""
        try:
            import pynvml as nv
        except ImportError as exc:
            return None, [f"no GPU telemetry: nvidia-ml-py is not installed ({exc}); sampling host metrics only"]
        wanted = assigned_devices(env)
        if wanted == []:
            return None, ["no GPU telemetry: CUDA_VISIBLE_DEVICES hides every GPU; sampling host metrics only"]
        try:
            nv.nvmlInit()
        except nv.NVMLError as exc:
            return None, [f"no GPU telemetry: NVML unavailable ({type(exc).__name__}: {exc}); "
                          "sampling host metrics only"]
        notices: list[str] = []
        try:
            if wanted is None:
                wanted = [DeviceSelector(index=i) for i in range(nv.nvmlDeviceGetCount())]
        except nv.NVMLError as exc:
            wanted = []
            notices.append(f"NVML could not count GPUs ({exc})")
        gpus: list[Gpu] = []
        for sel in wanted:
            try:
                h = (nv.nvmlDeviceGetHandleByUUID(sel.uuid) if sel.uuid
                     else nv.nvmlDeviceGetHandleByIndex(sel.index))
            except nv.NVMLError as exc:
                notices.append(f"GPU {sel}: not found through NVML ({exc}); not sampled")
                continue
            gpus.append(Gpu(slot=len(gpus), handle=h, info=_static_info(nv, h, sel)))
        if not gpus:
            _shutdown(nv)
            return None, notices + ["no GPU telemetry: no GPU to sample on this node; sampling host metrics only"]
        return cls(nv, gpus, notices), notices

    def sample(self, pids: set[int]) -> tuple[dict[str, float], list[str]]:
        """One reading of every GPU: ({column: value}, new notices). A metric whose NVML call fails is
        dropped from then on (NotSupported, NoPermission, ...); a lost GPU is dropped entirely."""
        nv = self.nv
        out: dict[str, float] = {}
        notices: list[str] = []
        for g in self.gpus:
            if g.lost:
                continue
            for name, reader in list(g.readers.items()):
                try:
                    vals = reader(nv, g.handle, pids)
                except nv.NVMLError_GpuIsLost as exc:
                    g.lost = True
                    g.readers.clear()
                    notices.append(f"GPU {g.slot} ({g.info.get('name')}) lost ({exc}); not sampled from now on")
                    break
                except nv.NVMLError as exc:
                    del g.readers[name]
                    notices.append(f"GPU {g.slot} {name}: {type(exc).__name__} ({exc}); not sampled from now on")
                    continue
                if name == "energy":
                    if g.energy_base_j is None:
                        g.energy_base_j = vals["energy_j"]
                    vals = {"energy_j": vals["energy_j"] - g.energy_base_j}
                for metric, v in vals.items():
                    out[f"g{g.slot}.{metric}"] = v
        return out, notices

    def close(self) -> None:
        _shutdown(self.nv)


def _static_info(nv: Any, h: Any, sel: DeviceSelector) -> dict[str, Any]:
    """Name, UUID, index, memory capacity and power limit; whatever NVML will not say is None."""
    def get(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except nv.NVMLError:
            return None

    total = get(lambda: nv.nvmlDeviceGetMemoryInfo(h).total)
    limit_mw = get(lambda: nv.nvmlDeviceGetEnforcedPowerLimit(h))
    index = get(lambda: nv.nvmlDeviceGetIndex(h))
    return {
        "index": index if index is not None else sel.index,
        "uuid": _text(get(lambda: nv.nvmlDeviceGetUUID(h)) or sel.uuid or ""),
        "name": _text(get(lambda: nv.nvmlDeviceGetName(h)) or "unknown GPU"),
        "mem_total_gb": round(total / GIB, 3) if total else None,
        "power_limit_w": limit_mw / 1000.0 if limit_mw else None,
    }


def _shutdown(nv: Any) -> None:
    try:
        nv.nvmlShutdown()
    except nv.NVMLError:
        pass
