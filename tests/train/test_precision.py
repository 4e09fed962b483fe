"""precision=auto: the decision table against faked device capabilities, the real decision on this machine, and
the decision recorded with its reason in train.json and the report of a real run."""

from __future__ import annotations

import json

import pytest
import torch

from hpc_ft.train.precision import (DeviceCaps, PrecisionChoice, decide, device_caps, read_cpu_flags,
                                    weakest)

A100 = DeviceCaps("cuda", "NVIDIA A100-SXM4-80GB", (8, 0))
H100 = DeviceCaps("cuda", "NVIDIA H100", (9, 0))
V100 = DeviceCaps("cuda", "Tesla V100-SXM2-16GB", (7, 0))
T4 = DeviceCaps("cuda", "Tesla T4", (7, 5))
K80 = DeviceCaps("cuda", "Tesla K80", (3, 7))
XEON_AVX512 = DeviceCaps("cpu", "Intel Xeon (Cascade Lake)", None, frozenset({"avx2", "avx512f"}), "AVX512")
XEON_AMX = DeviceCaps("cpu", "Intel Xeon (Sapphire Rapids)", None,
                      frozenset({"avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "avx512_fp16"}), "AVX512")
EPYC_ZEN4 = DeviceCaps("cpu", "AMD EPYC 9654", None, frozenset({"avx512f", "avx512_bf16"}), "AVX512")
GRAVITON3 = DeviceCaps("cpu", "", None, frozenset({"fp", "asimd", "bf16", "fphp"}), "SVE256")
OLD_CPU = DeviceCaps("cpu", "Intel Core i5", None, frozenset({"avx2"}), "AVX2")


@pytest.mark.parametrize("caps, dtype", [
    (A100, "bf16"), (H100, "bf16"), (V100, "fp16"), (T4, "fp16"), (K80, "fp32"),
    (XEON_AVX512, "fp32"), (XEON_AMX, "bf16"), (EPYC_ZEN4, "bf16"), (GRAVITON3, "bf16"), (OLD_CPU, "fp32"),
])
def test_auto_picks_what_the_device_computes_natively(caps, dtype):
    choice = decide("auto", caps)
    assert (choice.dtype, choice.requested, choice.native, choice.warning) == (dtype, "auto", True, None)
    assert choice.reason.startswith(f"auto: {dtype} on ") and caps.name in choice.reason


def test_auto_names_its_evidence():
    assert "compute capability 7.0" in decide("auto", V100).reason and "loss scaler" in decide("auto", V100).reason
    assert "avx512_bf16" in decide("auto", EPYC_ZEN4).reason
    assert "no AVX512-BF16, AMX or BF16" in decide("auto", XEON_AVX512).reason


@pytest.mark.parametrize("caps, requested, warned", [
    (A100, "bf16", False), (A100, "fp16", False), (A100, "fp32", False),
    (V100, "bf16", True), (V100, "fp16", False),
    (XEON_AVX512, "bf16", True), (XEON_AVX512, "fp16", True), (XEON_AVX512, "fp32", False),
    (XEON_AMX, "bf16", False), (EPYC_ZEN4, "fp16", True),
])
def test_an_explicit_precision_wins_with_a_warning_when_not_native(caps, requested, warned):
    choice = decide(requested, caps)
    assert choice.dtype == requested and choice.requested == requested
    assert (choice.warning is not None) == warned and choice.native == (not warned)
    if warned:
        assert f"precision={requested}" in choice.warning and "not native" in choice.warning
        assert f"precision=auto picks {decide('auto', caps).dtype}" in choice.warning


def test_ranks_that_decided_differently_all_take_the_weakest():
    bf16, fp16 = decide("auto", A100), decide("auto", V100)
    assert weakest([bf16, bf16]) == bf16
    mixed = weakest([bf16, fp16, bf16])
    assert mixed.dtype == "fp16" and "ranks decided bf16, fp16" in mixed.reason
    assert weakest([bf16, decide("auto", OLD_CPU)]).dtype == "fp32"


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="fp8"):
        decide("fp8", A100)


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some Xeon\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n\n"
                    "processor\t: 1\nmodel name\t: Some Xeon\nflags\t\t: fpu avx2\n")
    flags, name = read_cpu_flags(info)
    assert name == "Some Xeon" and {"amx_bf16", "avx512f"} <= flags
    assert read_cpu_flags(tmp_path / "missing") == (frozenset(), "")


def test_the_real_decision_on_this_machine(capsys):
    caps = device_caps(torch.device("cpu"))
    choice = decide("auto", caps)
    with capsys.disabled():  # recorded in the test output on purpose: what auto decides on the CI machine
        print(f"\nprecision=auto on this machine: {choice.dtype} ({choice.reason})")
    native_bf16 = bool(caps.cpu_flags & {"avx512_bf16", "amx_bf16", "bf16"})
    assert choice.dtype == ("bf16" if native_bf16 else "fp32")
    assert isinstance(choice, PrecisionChoice) and choice.native


@pytest.mark.slow
def test_a_run_records_the_auto_decision_and_its_reason(tmp_path, run_cli, synth):
    """A real run with precision=auto (now the default) trains in the decided dtype and says why in train.json,
    the results table and the run report."""
    overrides = [o for o in synth if not o.startswith(("precision=", "telemetry="))]
    run = tmp_path / "run"
    res = run_cli("submit", *overrides, "train.max_steps=4", "resources.nodes=1", f"hydra.run.dir={run}")
    assert res.returncode == 0, res.stdout + res.stderr
    expected = decide("auto", device_caps(torch.device("cpu")))
    train = json.loads((run / "nodes" / "node0" / "train.json").read_text())
    assert train["precision"] == expected.dtype and train["precision_reason"] == expected.reason
    assert f"precision: {expected.reason}" in res.stdout.replace("\n", " ") or expected.reason[:40] in res.stdout
    report = json.loads((run / "report" / "report.json").read_text())
    assert report["throughput"]["precision"] == expected.dtype
    assert report["throughput"]["precision_reason"] == expected.reason
