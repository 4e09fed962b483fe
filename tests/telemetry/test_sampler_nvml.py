"""NodeSampler against a small fake GPU at the pynvml boundary (pynvml's own NVMLError subclasses)."""

from __future__ import annotations

import json
import logging
import math
import os
import time

import numpy as np
import pynvml
import pytest

from hpc_ft.telemetry import NodeSampler, read_series
from hpc_ft.telemetry.nvml import DeviceSelector, assigned_devices

MIB = 2**20
HOUR = 3600.0  # an interval the thread never reaches: tests step with sample_now()


def _sampler(tmp_path, env=None, **kw) -> NodeSampler:
    kw.setdefault("interval_s", HOUR)
    return NodeSampler(out_dir=tmp_path, env=env if env is not None else {}, **kw)


def test_no_nvml_library_means_host_metrics_and_one_notice(tmp_path, fake_nvml, caplog):
    fake_nvml(2, init_error=pynvml.NVMLError_LibraryNotFound)
    s = _sampler(tmp_path, pids=lambda: [os.getpid()])
    with caplog.at_level(logging.WARNING, logger="hpc_ft.telemetry.sampler"):
        s.start()
        for _ in range(3):
            s.sample_now()
        out = s.stop()
    assert out["nvml"] is False
    assert len(out["notices"]) == 1 and "NVMLError_LibraryNotFound" in out["notices"][0]
    assert len([r for r in caplog.records if "NVML" in r.getMessage()]) == 1
    summ = out["summary"]
    assert summ["gpus"] == [] and summ["samples"] == 5  # start, 3 steps, stop
    assert summ["host"]["mem_used_gb"]["max"] > 0 and summ["host"]["job_rss_gb"]["max"] > 0
    header, rec = read_series(out["series_path"])
    assert header["gpus"] == [] and len(rec) == 5 and not any(c.startswith("g") for c in header["columns"])
    json.dumps(out, allow_nan=False)  # the NodeReport carries it as JSON


def test_driver_not_loaded_also_degrades(tmp_path, fake_nvml):
    fake_nvml(1, init_error=pynvml.NVMLError_DriverNotLoaded)
    out = _sampler(tmp_path).start().stop()
    assert out["nvml"] is False and out["summary"]["samples"] == 2


def test_memory_used_is_nvidia_smis_figure_reserved_memory_left_out(tmp_path, fake_nvml):
    # On an H200 (2026-11-30) NVML's first memory call read 0.6 GiB above nvidia-smi: the driver's reserve.
    fake = fake_nvml(2)
    fake.gpus[1].memory_v2 = False  # an older driver: only the first call exists
    out = _sampler(tmp_path).start().stop()
    g0, g1 = out["summary"]["gpus"]
    assert g0["mem_used_gb"]["max"] == pytest.approx(40.0)
    assert g1["mem_used_gb"]["max"] == pytest.approx(40.0 + 600 / 1024)
    assert out["notices"] == []


def test_samples_only_the_assigned_gpus_with_every_metric(tmp_path, fake_nvml):
    fake = fake_nvml(4)
    fake.gpus[3].util = 0
    fake.gpus[1].procs = [(os.getpid(), 3 * 1024 * MIB), (999_999_999, 20 * 1024 * MIB)]  # ours + a stranger's
    s = _sampler(tmp_path, env={"CUDA_VISIBLE_DEVICES": "1,3"}, pids=lambda: [os.getpid()])
    s.start()
    s.sample_now()
    out = s.stop()
    gpus = out["summary"]["gpus"]
    assert [g["index"] for g in gpus] == [1, 3]
    g1, g3 = gpus
    assert g1["name"] == "NVIDIA H100 80GB HBM3" and g1["mem_total_gb"] == 80.0 and g1["power_limit_w"] == 700.0
    assert g1["util_pct"]["mean"] == 90 and g1["mem_util_pct"]["mean"] == 40
    assert g1["mem_used_gb"]["max"] == pytest.approx(40.0) and g1["power_w"]["mean"] == pytest.approx(500.0)
    assert g1["temp_c"]["max"] == 60 and g1["sm_clock_mhz"]["mean"] == 1980
    assert g1["job_mem_gb"]["max"] == pytest.approx(3.0)  # the stranger's 20 GiB is not the job's
    assert g3["idle_fraction"] == 1.0 and g1["idle_fraction"] == 0.0
    # Energy since the sampler started: 3 readings, 500 J apart in the fake (counter starts at 1e6 J).
    assert g1["energy_kwh"] == pytest.approx(1000 / 3.6e6) and g1["energy_source"] == "counter"
    assert g1["missing"] == [] and g1["gaps"] == []
    header, rec = read_series(out["series_path"])
    assert len(rec) == 3 and header["gpus"][0]["uuid"].startswith("GPU-")
    assert (rec["cost_ms"] > 0).all()
    assert out["summary"]["sampler"]["mean_cost_ms"] > 0


def test_uuid_selection(tmp_path, fake_nvml):
    fake = fake_nvml(3)
    out = _sampler(tmp_path, env={"CUDA_VISIBLE_DEVICES": fake.gpus[2].uuid}).start().stop()
    assert [g["index"] for g in out["summary"]["gpus"]] == [2]


def test_unknown_device_is_a_notice_not_a_crash(tmp_path, fake_nvml):
    fake_nvml(2)
    out = _sampler(tmp_path, env={"CUDA_VISIBLE_DEVICES": "1,7"}).start().stop()
    assert [g["index"] for g in out["summary"]["gpus"]] == [1]
    assert any("GPU 7" in n for n in out["notices"])


@pytest.mark.parametrize("env, expected", [
    ({}, None),
    ({"CUDA_VISIBLE_DEVICES": ""}, []),
    ({"CUDA_VISIBLE_DEVICES": "-1"}, []),
    ({"CUDA_VISIBLE_DEVICES": "2,0"}, [DeviceSelector(index=2), DeviceSelector(index=0)]),
    ({"CUDA_VISIBLE_DEVICES": "GPU-abc,MIG-def"}, [DeviceSelector(uuid="GPU-abc"), DeviceSelector(uuid="MIG-def")]),
    # Slurm with device cgroups: CUDA_VISIBLE_DEVICES counts within the binding.
    ({"CUDA_VISIBLE_DEVICES": "0,1", "SLURM_STEP_GPUS": "4,6"}, [DeviceSelector(index=4), DeviceSelector(index=6)]),
    ({"CUDA_VISIBLE_DEVICES": "1", "SLURM_JOB_GPUS": "4,6"}, [DeviceSelector(index=6)]),
    ({"SLURM_JOB_GPUS": "5,7"}, [DeviceSelector(index=5), DeviceSelector(index=7)]),
    ({"SLURM_STEP_GPUS": "1", "SLURM_JOB_GPUS": "0,1,2"}, [DeviceSelector(index=1)]),
])
def test_assigned_devices(env, expected):
    assert assigned_devices(env) == expected


def test_slurm_binding_selects_physical_gpus(tmp_path, fake_nvml):
    fake_nvml(8)
    env = {"SLURM_STEP_GPUS": "4,5", "CUDA_VISIBLE_DEVICES": "0,1"}
    out = _sampler(tmp_path, env=env).start().stop()
    assert [g["index"] for g in out["summary"]["gpus"]] == [4, 5]


def test_gpu_lost_mid_run_stops_that_gpu_only(tmp_path, fake_nvml):
    fake = fake_nvml(2)
    s = _sampler(tmp_path)
    s.start()  # sample 1
    s.sample_now()  # sample 2
    fake.gpus[1].lost = True
    calls_before = dict(fake.calls)
    s.sample_now()  # sample 3: GPU 1 lost
    s.sample_now()  # sample 4
    out = s.stop()  # sample 5
    _, rec = read_series(out["series_path"])
    assert len(rec) == 5
    assert np.isfinite(rec["g0.util_pct"]).all()
    assert np.isfinite(rec["g1.util_pct"][:2]).all() and np.isnan(rec["g1.util_pct"][2:]).all()
    lost = [n for n in out["notices"] if "lost" in n]
    assert len(lost) == 1
    # A lost GPU is not asked again: samples 3-5 ask GPU 0 three times, GPU 1 once (the failing call).
    assert fake.calls["nvmlDeviceGetUtilizationRates"] - calls_before["nvmlDeviceGetUtilizationRates"] == 3 + 1
    g1 = out["summary"]["gpus"][1]
    assert g1["util_pct"]["n"] == 2 and "util_pct" in g1["gaps"]


def test_not_supported_metric_is_dropped_and_sampling_goes_on(tmp_path, fake_nvml):
    fake = fake_nvml(1)
    fake.gpus[0].fail["nvmlDeviceGetTotalEnergyConsumption"] = pynvml.NVMLError_NotSupported  # e.g. pre-Volta
    s = _sampler(tmp_path)
    s.start()
    s.sample_now()
    fake.gpus[0].fail["nvmlDeviceGetPowerUsage"] = pynvml.NVMLError_NotSupported  # fails mid-run
    s.sample_now()
    s.sample_now()
    out = s.stop()
    g = out["summary"]["gpus"][0]
    assert g["util_pct"]["n"] == 5  # the rest goes on
    assert g["power_w"]["n"] == 2 and "power_w" in g["gaps"]
    assert "energy_j" in g["missing"]
    # No counter: the energy comes from the sampled power (2 samples x 500 W x 1 h interval).
    assert g["energy_source"] == "power" and g["energy_kwh"] == pytest.approx(2 * 500 * HOUR / 3.6e6)
    assert fake.calls["nvmlDeviceGetTotalEnergyConsumption"] == 1  # never asked again
    assert fake.calls["nvmlDeviceGetPowerUsage"] == 3
    assert len([n for n in out["notices"] if "NotSupported" in n]) == 2


def test_thread_samples_on_its_own_and_stops_at_once(tmp_path, fake_nvml):
    fake_nvml(1)
    s = NodeSampler(out_dir=tmp_path, interval_s=0.02, env={})
    s.start()
    deadline = time.monotonic() + 30
    while s.summary.samples < 5:  # wait on the condition (the thread's own samples), bounded
        assert time.monotonic() < deadline, "sampler thread took no samples"
        time.sleep(0.01)
    out = s.stop()
    assert not s._thread.is_alive()
    assert out["summary"]["samples"] >= 6
    # An hour-long interval still stops at once: the thread waits on an Event, not in a sleep.
    s2 = NodeSampler(out_dir=tmp_path / "b", interval_s=HOUR, env={}).start()
    s2.stop(timeout_s=20)
    assert not s2._thread.is_alive() and not any("did not stop" in n for n in s2.notices)


def test_report_series_is_bounded(tmp_path, fake_nvml):
    fake_nvml(8)
    s = _sampler(tmp_path, max_report_points=16)
    s.start()
    for _ in range(500):
        s.sample_now()
    out = s.stop()
    assert out["summary"]["samples"] == 502
    assert all(len(v) <= 16 for v in out["series"].values())
    assert {"t", "g7.util_pct", "g7.power_w", "cpu_util_pct"} <= set(out["series"])
    assert len(json.dumps(out)) < 60_000
    _, rec = read_series(out["series_path"])
    assert len(rec) == 502  # the file keeps every sample


def test_a_failing_pid_callback_does_not_stop_sampling(tmp_path, fake_nvml):
    fake_nvml(1)

    def broken():
        raise RuntimeError("process table unreadable")

    out = _sampler(tmp_path, pids=broken).start().stop()
    assert out["summary"]["samples"] == 2 and out["sample_errors"] == 0
    assert out["summary"]["host"]["job_rss_gb"]["max"] == 0.0
    assert math.isfinite(out["summary"]["gpus"][0]["util_pct"]["mean"])


def test_unwritable_run_dir_keeps_the_summary(tmp_path, fake_nvml):
    fake_nvml(1)
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    out = _sampler(blocked / "node0").start().stop()  # the series cannot be created under a file
    assert out["series_path"] is None and out["summary"]["samples"] == 2
    assert any("cannot write the telemetry series" in n for n in out["notices"])
