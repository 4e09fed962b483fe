"""A small fake GPU behind the real ``pynvml`` module: the same function names are replaced on the module,
and failures are pynvml's own NVMLError subclasses."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

MIB = 2**20


@dataclass
class FakeGpu:
    index: int
    name: str = "NVIDIA H100 80GB HBM3"
    util: int = 90
    mem_util: int = 40
    mem_used: int = 40 * 1024 * MIB  # what nvidia-smi shows: the driver's reserved memory left out
    mem_reserved: int = 600 * MIB  # counted as used by NVML's first memory call, reported apart by version 2
    memory_v2: bool = True  # the driver has nvmlDeviceGetMemoryInfo_v2
    mem_total: int = 80 * 1024 * MIB
    power_mw: int = 500_000
    limit_mw: int = 700_000
    energy_mj: int = 1_000_000_000  # the counter runs since the driver loaded: never starts at 0
    temp_c: int = 60
    sm_mhz: int = 1980
    procs: list[tuple[int, int]] = field(default_factory=list)  # (pid, bytes)
    fail: dict[str, type] = field(default_factory=dict)  # NVML function name -> NVMLError subclass to raise
    lost: bool = False

    @property
    def uuid(self) -> str:
        return f"GPU-00000000-0000-0000-0000-{self.index:012d}"


class FakeNvml:
    """Install with ``FakeNvml(n).install(monkeypatch)``; change ``gpus[i]`` between samples."""

    def __init__(self, n: int = 2, init_error: type | None = None):
        self.gpus = [FakeGpu(i) for i in range(n)]
        self.init_error = init_error
        self.calls: dict[str, int] = {}

    def _gpu(self, fn: str, h: Any) -> FakeGpu:
        self.calls[fn] = self.calls.get(fn, 0) + 1
        g = self.gpus[h]
        if g.lost:
            raise pynvml.NVMLError_GpuIsLost()
        if fn in g.fail:
            raise g.fail[fn]()
        return g

    def install(self, mp: Any) -> "FakeNvml":
        def init() -> None:
            if self.init_error is not None:
                raise self.init_error()

        def by_index(i: int) -> int:
            if not 0 <= i < len(self.gpus):
                raise pynvml.NVMLError_InvalidArgument()
            return i

        def by_uuid(u: Any) -> int:
            u = u.decode() if isinstance(u, bytes) else u
            for g in self.gpus:
                if g.uuid == u:
                    return g.index
            raise pynvml.NVMLError_NotFound()

        def energy(h: int) -> int:
            g = self._gpu("nvmlDeviceGetTotalEnergyConsumption", h)
            g.energy_mj += g.power_mw  # one second at the current power, per reading
            return g.energy_mj

        def memory_info(h: int, version: int | None = None) -> SimpleNamespace:
            g = self._gpu("nvmlDeviceGetMemoryInfo", h)
            free = g.mem_total - g.mem_used - g.mem_reserved
            if not version:  # v1: used = total - free, the reserved memory included
                return SimpleNamespace(used=g.mem_used + g.mem_reserved, total=g.mem_total, free=free)
            if not g.memory_v2:  # pynvml looks up nvmlDeviceGetMemoryInfo_v2 in the driver and does not find it
                raise pynvml.NVMLError_FunctionNotFound()
            return SimpleNamespace(version=version, used=g.mem_used, reserved=g.mem_reserved, total=g.mem_total,
                                   free=free)

        fns = {
            "nvmlInit": init,
            "nvmlShutdown": lambda: None,
            "nvmlDeviceGetCount": lambda: len(self.gpus),
            "nvmlDeviceGetHandleByIndex": by_index,
            "nvmlDeviceGetHandleByUUID": by_uuid,
            "nvmlDeviceGetName": lambda h: self._gpu("nvmlDeviceGetName", h).name,
            "nvmlDeviceGetUUID": lambda h: self._gpu("nvmlDeviceGetUUID", h).uuid,
            "nvmlDeviceGetIndex": lambda h: self._gpu("nvmlDeviceGetIndex", h).index,
            "nvmlDeviceGetMemoryInfo": memory_info,
            "nvmlDeviceGetEnforcedPowerLimit": lambda h: self._gpu("nvmlDeviceGetEnforcedPowerLimit", h).limit_mw,
            "nvmlDeviceGetUtilizationRates": lambda h: (lambda g: SimpleNamespace(gpu=g.util, memory=g.mem_util))(
                self._gpu("nvmlDeviceGetUtilizationRates", h)),
            "nvmlDeviceGetPowerUsage": lambda h: self._gpu("nvmlDeviceGetPowerUsage", h).power_mw,
            "nvmlDeviceGetTotalEnergyConsumption": energy,
            "nvmlDeviceGetTemperature": lambda h, sensor: self._gpu("nvmlDeviceGetTemperature", h).temp_c,
            "nvmlDeviceGetClockInfo": lambda h, clock: self._gpu("nvmlDeviceGetClockInfo", h).sm_mhz,
            "nvmlDeviceGetComputeRunningProcesses": lambda h: [
                SimpleNamespace(pid=pid, usedGpuMemory=used)
                for pid, used in self._gpu("nvmlDeviceGetComputeRunningProcesses", h).procs],
        }
        for name, fn in fns.items():
            assert hasattr(pynvml, name), name  # the fake only replaces functions the real module has
            mp.setattr(pynvml, name, fn)
        return self


@pytest.fixture
def fake_nvml(monkeypatch):
    """``fake_nvml(n, init_error=None)`` installs a FakeNvml with ``n`` GPUs and returns it."""
    def make(n: int = 2, init_error: type | None = None) -> FakeNvml:
        return FakeNvml(n, init_error=init_error).install(monkeypatch)

    return make
