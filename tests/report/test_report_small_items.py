"""Trial 4's smaller report items: near-full host memory gets advice, percentages are plotted on 0-100%, tiny
byte counts show a unit that shows them."""

from __future__ import annotations

import pytest

from hpc_ft import report
from hpc_ft.config.compose import compose_conf
from hpc_ft.report.advice import HOST_MEM_FULL
from hpc_ft.report.plots import gpu_figure, host_figure
from hpc_ft.submit.executors import validate
from hpc_ft.terminal import fmt_bytes
from hpc_ft.testing.synthetic import GpuProfile, NodeProfile, synthetic_run

CPU_JOB = ["resources.gpus_per_node=0", "resources.mem_gb=1", "resources.timeout_min=5"]


def _build(run_dir):
    return report.build_report(*report.load_run(run_dir))


def _text(rr) -> str:
    from rich.console import Console

    con = Console(width=200, record=True, file=open("/dev/null", "w"))
    con.print(report.render_text(rr))
    return con.export_text()


def test_host_memory_at_87_percent_of_mem_gb_gets_a_larger_request(tmp_path):
    """The sbatch run of trial 4: RSS/mem 0.9/1.0 GiB in the node table and no word about memory."""
    run = synthetic_run(tmp_path / "run", [NodeProfile(gpus=[], job_rss_gb=0.87)], seconds=120, overrides=CPU_JOB,
                        train={"samples_per_s": 50.0})
    rr = _build(run)
    assert rr.nodes[0].job_rss_peak_gb == pytest.approx(0.87, rel=1e-3)
    adv = {a.key: a for a in rr.advice}
    assert adv["resources.mem_gb"].value == 2
    assert ("peaked at 0.9 GiB of the 1 GiB requested per node (87%, at least 85%): too close to the limit"
            in adv["resources.mem_gb"].reason)
    assert "resources.mem_gb=2" in rr.command
    spec = report.load_run(run)[1]
    validate(compose_conf(report.next_overrides(spec, rr.advice), run_dir=tmp_path / "next"))  # submit accepts it


def test_host_memory_below_the_threshold_gets_no_memory_advice(tmp_path):
    assert HOST_MEM_FULL == 0.85
    run = synthetic_run(tmp_path / "run", [NodeProfile(gpus=[], job_rss_gb=0.8)], seconds=120, overrides=CPU_JOB,
                        train={"samples_per_s": 50.0})
    assert "resources.mem_gb" not in {a.key for a in _build(run).advice}


def test_cpu_and_gpu_utilization_are_drawn_on_0_to_100_percent(tmp_path):
    """A busy host's CPU at 97.5-100% was auto-scaled to fill the panel, so noise looked large."""
    busy = NodeProfile(gpus=[GpuProfile(util_pct=99.0)], cpu_util_pct=99.0)
    run = synthetic_run(tmp_path / "run", [busy], seconds=120,
                        overrides=["resources=gpu", "executor=slurm", "train.global_batch_size=16"],
                        train={"samples_per_s": 50.0})
    rr = _build(run)
    ax_cpu, ax_mem = host_figure(rr).axes
    assert ax_cpu.get_ylim() == (0.0, 100.0)
    assert ax_mem.get_ylim() != (0.0, 100.0)  # GiB: scaled to the data
    assert all(ax.get_ylim() == (0.0, 100.0) for ax in gpu_figure(rr, "util_pct", "GPU utilization (%)").axes)
    assert gpu_figure(rr, "power_w", "GPU power (W)").axes[0].get_ylim() != (0.0, 100.0)


@pytest.mark.parametrize("n, text", [
    (40_000, "39.1 KiB"), (1024, "1.0 KiB"), (512, "512 B"), (0, "0.0 MiB"), (2_579_052, "2.5 MiB"),
    (1.5 * 1024 ** 3, "1.50 GiB"),
])
def test_fmt_bytes_shows_small_sizes_in_a_unit_that_shows_them(n, text):
    assert fmt_bytes(n) == text


def test_a_tiny_models_measured_memory_is_not_zero_mib(tmp_path):
    train = {"samples_per_s": 50.0, "peak_memory_bytes": 40_000, "peak_memory_source": "MemTracker"}
    run = synthetic_run(tmp_path / "run", [NodeProfile(gpus=[], job_rss_gb=0.1)], seconds=5,
                        overrides=["resources.gpus_per_node=0", "telemetry=off"], train=train)
    text = _text(_build(run))
    assert "measured 39.1 KiB (MemTracker)" in text and "0.0 MiB" not in text
