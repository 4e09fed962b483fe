"""The run report and its right-sizing advice on crafted records (real series files, NodeReports, job.yaml)."""

from __future__ import annotations

import json
import logging
import math
import re

import pytest

from hpc_ft import report
from hpc_ft.cli import main as cli_main
from hpc_ft.submit.executors import validate
from hpc_ft.config.compose import compose_conf
from hpc_ft.testing.synthetic import GpuProfile, NodeProfile, remove_series, synthetic_run

GPU_JOB = ["resources=gpu", "executor=slurm", "train.global_batch_size=16", "resources.cpus_per_task=4"]
TRAIN = {"samples_per_s": 100.0, "tokens_per_s": 12800.0, "flops_per_sample": 6e12, "final_loss": 0.25,
         "steps": 200, "max_steps": 200}
IDLE = GpuProfile(util_pct=0.0, mem_used_gb=0.5, power_w=70.0)


def _busy(**kw) -> GpuProfile:
    return GpuProfile(**kw)


def _build(run_dir):
    return report.build_report(*report.load_run(run_dir))


def _accepted(rr, tmp_path):
    """The advised command's overrides compose and validate (what `hpc-ft submit` does with them)."""
    spec = report.load_run(rr.run_dir)[1]
    overrides = report.next_overrides(spec, rr.advice)
    conf = compose_conf(overrides, run_dir=tmp_path / "next")
    validate(conf, gpu_count=lambda: 8)
    return conf


def test_idle_gpus_give_fewer_gpus(tmp_path):
    run = synthetic_run(tmp_path / "run", [NodeProfile(gpus=[_busy(), _busy(), IDLE, IDLE])], seconds=3600,
                        overrides=[*GPU_JOB, "resources.gpus_per_node=4", "resources.timeout_min=90",
                                   "resources.mem_gb=8"], train=TRAIN)
    rr = _build(run)
    assert [g.idle for g in rr.gpus] == [False, False, True, True]
    assert rr.nodes[0].idle_gpus == 2 and rr.totals["idle_gpus"] == 2
    assert {a.key: a.value for a in rr.advice} == {"resources.gpus_per_node": 2}
    assert "2 of 4 GPUs" in rr.advice[0].reason and "GPU 2" in rr.advice[0].reason
    # GPU-hours: 4 GPUs x 1 h requested, 4 x 1.5 h reserved, 2 x 1 h busy.
    t = rr.totals
    assert t["gpu_hours_requested"] == pytest.approx(4.0) and t["gpu_hours_reserved"] == pytest.approx(6.0)
    assert t["gpu_hours_busy"] == pytest.approx(2.0, rel=1e-3)
    # Energy: the counters integrate 500 W and 70 W over 3599 s (first sample at 0 J).
    kwh = 3599 * (2 * 500 + 2 * 70) / 3.6e6
    assert t["energy_kwh"] == pytest.approx(kwh, rel=1e-6)
    assert t["cost_gpu_hours"] == pytest.approx(4 * 2.0) and t["cost_energy"] == pytest.approx(kwh * 0.25, rel=1e-6)
    assert t["cost_total"] == pytest.approx(8.0 + kwh * 0.25, rel=1e-6)
    tp = rr.throughput
    assert tp["samples_per_s"] == 100.0 and tp["tokens_per_s"] == 12800.0
    assert tp["mfu"] == pytest.approx(6e12 * 100 / (4 * 989.4e12))  # H100 SXM dense bf16
    conf = _accepted(rr, tmp_path)
    assert conf.resources.gpus_per_node == 2


def test_batch_size_kept_valid_when_gpus_shrink(tmp_path):
    # 3 of 4 GPUs busy: 3 does not divide batch 16, so 4 stays... unless the batch moves; 1 busy of 4 -> 1.
    run = synthetic_run(tmp_path / "run", [NodeProfile(gpus=[_busy(), IDLE, IDLE, IDLE])], seconds=600,
                        overrides=[*GPU_JOB, "resources.gpus_per_node=4", "train.global_batch_size=12",
                                   "resources.timeout_min=20", "resources.mem_gb=8"], train=TRAIN)
    rr = _build(run)
    assert {a.key: a.value for a in rr.advice} == {"resources.gpus_per_node": 1}
    _accepted(rr, tmp_path)
    run2 = synthetic_run(tmp_path / "run2", [NodeProfile(gpus=[_busy(), _busy(), _busy(), IDLE, IDLE, IDLE, IDLE,
                                                                IDLE])], seconds=600,
                         overrides=[*GPU_JOB, "resources.gpus_per_node=8", "train.global_batch_size=16",
                                    "resources.timeout_min=20", "resources.mem_gb=8"], train=TRAIN)
    rr2 = _build(run2)
    adv = {a.key: a.value for a in rr2.advice}
    assert adv == {"resources.gpus_per_node": 4}  # 3 busy, 4 divides the batch of 16
    assert _accepted(rr2, tmp_path).resources.gpus_per_node == 4



def test_run_dir_of_the_previous_version_is_reported_and_its_advice_composes(tmp_path, capsys):
    # issue 11.5: its job.yaml says train.batch_size (now train.global_batch_size), in the conf and the overrides.
    from hpc_ft.job import JobSpec
    from hpc_ft.testing.previous import write_previous_job_yaml

    run = synthetic_run(tmp_path / "run", [NodeProfile(gpus=[_busy(), IDLE, IDLE, IDLE])], seconds=600,
                        overrides=[*GPU_JOB, "resources.gpus_per_node=4", "train.global_batch_size=12",
                                   "resources.timeout_min=20", "resources.mem_gb=8"], train=TRAIN)
    write_previous_job_yaml(JobSpec.load(run / "job.yaml"))
    assert "train.batch_size=12" in (run / "job.yaml").read_text()
    assert cli_main(["report", str(run)]) == 0
    assert "resources.gpus_per_node=1" in capsys.readouterr().out
    rr = _build(run)
    assert {a.key: a.value for a in rr.advice} == {"resources.gpus_per_node": 1}
    assert "train.global_batch_size=12" in report.next_overrides(report.load_run(run)[1], rr.advice)
    assert _accepted(rr, tmp_path).train.global_batch_size == 12

def test_memory_bound_job(tmp_path):
    full = _busy(mem_used_gb=78.0)
    prof = NodeProfile(gpus=[full, full], job_rss_gb=60.0)
    run = synthetic_run(tmp_path / "run", [prof], seconds=600,
                        overrides=[*GPU_JOB, "resources.gpus_per_node=2", "resources.mem_gb=64",
                                   "resources.timeout_min=20"], train=TRAIN)
    rr = _build(run)
    adv = {a.key: a for a in rr.advice}
    assert set(adv) == {"train.grad_accum_steps", "resources.mem_gb"}
    assert adv["train.grad_accum_steps"].value == 2 and "78.0 of 80.0 GiB" in adv["train.grad_accum_steps"].reason
    assert adv["resources.mem_gb"].value == 90 and "60.0 GiB" in adv["resources.mem_gb"].reason
    assert rr.gpus[0].mem_peak_pct == pytest.approx(97.5)
    conf = _accepted(rr, tmp_path)
    assert conf.train.grad_accum_steps == 2 and conf.resources.mem_gb == 90


def test_far_too_long_time_limit_and_oversized_memory(tmp_path):
    run = synthetic_run(tmp_path / "run", [NodeProfile(gpus=[_busy()], job_rss_gb=5.0)], seconds=600,
                        overrides=[*GPU_JOB, "resources.gpus_per_node=1", "resources.timeout_min=1440",
                                   "resources.mem_gb=128"], train=TRAIN)
    rr = _build(run)
    adv = {a.key: a for a in rr.advice}
    assert set(adv) == {"resources.timeout_min", "resources.mem_gb"}
    assert adv["resources.timeout_min"].value == 20  # 10 min x 1.5 + 5
    assert "10.0 min of its 1440 min" in adv["resources.timeout_min"].reason
    assert adv["resources.mem_gb"].value == 8  # 5 GiB x 1.25 + 1, rounded up to even
    assert "8 GiB: the peak x 1.25 + 1 GiB, rounded up to an even number of GiB" in adv["resources.mem_gb"].reason
    assert rr.command.startswith("hpc-ft submit ") and "resources.timeout_min=20" in rr.command
    assert "run.dir" not in rr.command
    conf = _accepted(rr, tmp_path)
    assert (conf.resources.timeout_min, conf.resources.mem_gb) == (20, 8)


def test_well_sized_job_gets_no_advice(tmp_path):
    run = synthetic_run(tmp_path / "run", [NodeProfile(gpus=[_busy(), _busy()], job_rss_gb=5.0)], seconds=2400,
                        overrides=[*GPU_JOB, "resources.gpus_per_node=2", "resources.timeout_min=60",
                                   "resources.mem_gb=8"], train=TRAIN)
    rr = _build(run)
    assert rr.advice == [] and rr.command is None
    assert "no change advised" in _text(rr)


def test_oversized_cpu_request(tmp_path):
    run = synthetic_run(tmp_path / "run", [NodeProfile(gpus=[_busy()], job_cpu_cores=2.0, job_rss_gb=5.0)],
                        seconds=600, overrides=["resources=gpu", "executor=slurm", "resources.gpus_per_node=1",
                                                "resources.cpus_per_task=32", "resources.timeout_min=20",
                                                "resources.mem_gb=8"], train=TRAIN)
    rr = _build(run)
    assert {a.key: a.value for a in rr.advice} == {"resources.cpus_per_task": 6}  # p95 ~2.2 cores x 2, even
    assert _accepted(rr, tmp_path).resources.cpus_per_task == 6


def test_unfinished_run_keeps_its_time_limit(tmp_path):
    run = synthetic_run(tmp_path / "run", [NodeProfile(gpus=[_busy()], job_rss_gb=5.0)], seconds=600,
                        overrides=[*GPU_JOB, "resources.gpus_per_node=1", "resources.timeout_min=1440",
                                   "resources.mem_gb=8"], train=TRAIN, exit_codes=[1])
    assert "resources.timeout_min" not in {a.key for a in _build(run).advice}


def _text(rr) -> str:
    from rich.console import Console

    con = Console(width=200, record=True, file=open("/dev/null", "w"))
    con.print(report.render_text(rr))
    return con.export_text()


def test_outputs_json_plots_and_terminal(tmp_path):
    run = synthetic_run(tmp_path / "run", [NodeProfile(gpus=[_busy(), IDLE]), NodeProfile(gpus=[_busy(), IDLE])],
                        seconds=900, overrides=[*GPU_JOB, "resources.nodes=2", "resources.gpus_per_node=2"],
                        train=TRAIN)
    rr = _build(run)
    out = report.write_report(rr, run)
    data = json.loads((out / "report.json").read_text())
    assert [n["node"] for n in data["nodes"]] == [0, 1] and len(data["gpus"]) == 4
    assert data["advice"][0]["key"] == "resources.gpus_per_node" and "series" not in data
    for name in ("utilization.png", "memory.png", "power.png", "host.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*tmp*"))  # atomic writes leave no temporaries
    text = _text(rr)
    assert "per node" in text and "per GPU" in text and "MFU" in text and "kWh" in text
    assert "resources.gpus_per_node=1" in text


def test_cpu_only_run_shows_host_metrics(tmp_path):
    run = synthetic_run(tmp_path / "run", [NodeProfile(gpus=[], job_rss_gb=1.0)], seconds=120,
                        overrides=["resources.gpus_per_node=0"], train={"samples_per_s": 50.0})
    rr = _build(run)
    assert rr.gpus == [] and rr.totals["gpus_requested"] == 0
    assert any("no GPU was sampled" in n for n in rr.notes)
    assert rr.nodes[0].job_rss_peak_gb == pytest.approx(1.0, rel=1e-3)
    assert rr.throughput["mfu"] is None and rr.throughput["mfu_unavailable"] == "flops_per_sample unknown"
    out = report.write_report(rr, run)
    assert sorted(p.name for p in out.glob("*.png")) == ["host.png"]
    text = _text(rr)
    assert "no GPU was sampled" in text and "per GPU" not in text


@pytest.mark.parametrize("user_level", [logging.NOTSET, logging.DEBUG])
def test_matplotlibs_info_records_stay_off_the_console_unless_the_user_asks(tmp_path, caplog, monkeypatch,
                                                                           user_level):
    """Under Hydra's job logging (root at INFO) a machine's first plot printed matplotlib's "generated new
    fontManager" after the run report; its warnings, and a level the user set, still count."""
    monkeypatch.setattr(logging.getLogger("matplotlib"), "level", user_level)
    run = synthetic_run(tmp_path / "run", [NodeProfile(gpus=[], job_rss_gb=1.0)], seconds=60,
                        overrides=["resources.gpus_per_node=0"], train={"samples_per_s": 50.0})
    with caplog.at_level(logging.INFO):
        report.write_report(_build(run), run)
        logging.getLogger("matplotlib.font_manager").info("generated new fontManager")
        logging.getLogger("matplotlib").warning("a real warning")
    seen = [r.getMessage() for r in caplog.records if r.name.startswith("matplotlib")]
    expected = ["a real warning"] if user_level == logging.NOTSET else ["generated new fontManager", "a real warning"]
    assert seen == expected


def test_without_shared_filesystem_the_node_reports_suffice(tmp_path):
    profiles = [NodeProfile(gpus=[_busy(), IDLE])]
    run = synthetic_run(tmp_path / "run", profiles, seconds=1200,
                        overrides=[*GPU_JOB, "resources.gpus_per_node=2"], train=TRAIN)
    from_files = _build(run)
    remove_series(run)
    from_reports = _build(run)
    assert from_files.nodes[0].source == "series" and from_reports.nodes[0].source == "node report"
    for a, b in zip(from_files.gpus, from_reports.gpus):
        assert a.util_mean_pct == pytest.approx(b.util_mean_pct) and a.idle == b.idle
    assert [x.override for x in from_files.advice] == [x.override for x in from_reports.advice]
    report.write_report(from_reports, run)  # plots from the bounded series


def test_missing_node_and_requeued_segments(tmp_path):
    run = synthetic_run(tmp_path / "run", [NodeProfile(gpus=[_busy()])], seconds=100,
                        overrides=[*GPU_JOB, "resources.nodes=2", "resources.gpus_per_node=1"], train=TRAIN)
    # Node 0 was requeued once: a second segment whose counter starts again.
    from hpc_ft.testing.synthetic import write_node_series

    write_node_series(run / "nodes" / "node0" / "telemetry.1.bin", NodeProfile(gpus=[_busy()]), rows=100,
                      t0=1.7e9 + 500)
    rr = _build(run)
    assert [n.status for n in rr.nodes] == ["ok", "missing"]
    assert any("node(s) [1] sent no report" in n for n in rr.notes)
    assert rr.nodes[0].sampled_s == pytest.approx(200.0)
    assert rr.gpus[0].energy_kwh == pytest.approx(2 * 99 * 500 / 3.6e6)


def test_cli_report_command_and_bad_dir(tmp_path, capsys):
    run = synthetic_run(tmp_path / "run", [NodeProfile(gpus=[_busy()])], seconds=60,
                        overrides=[*GPU_JOB, "resources.gpus_per_node=1"], train=TRAIN)
    assert cli_main(["report", str(run)]) == 0
    assert (run / "report" / "report.json").exists()
    assert cli_main(["report", str(tmp_path / "nope")]) == 2
    (tmp_path / "empty").mkdir()
    assert cli_main(["report", str(tmp_path / "empty")]) == 2
    assert "not an hpc_ft run" in capsys.readouterr().out


def test_sweep_dir_renders_every_job(tmp_path, capsys):
    sweep = tmp_path / "multirun" / "2026-01-01" / "00-00-00"
    for i, gpus in enumerate(([_busy(), _busy()], [_busy(), IDLE])):
        synthetic_run(sweep / str(i), [NodeProfile(gpus=gpus)], seconds=300,
                      overrides=[*GPU_JOB, "resources.gpus_per_node=2", "resources.mem_gb=8",
                                 "resources.timeout_min=20", f"optim.lr={i + 1}e-4"],
                      train={**TRAIN, "final_loss": 0.1 * (i + 1)})
    assert report.main(sweep) == 0
    out = capsys.readouterr().out
    assert "sweep: 2 job(s)" in out and "job 0" in out and "job 1" in out and "optim.lr=2e-4" in out
    data = json.loads((sweep / "report" / "sweep.json").read_text())
    assert [d["sweep_job"] for d in data] == ["0", "1"]
    assert data[0]["advice"] == [] and data[1]["advice"][0]["value"] == 1
    assert (sweep / "1" / "report" / "report.json").exists()
    assert report.find_sweep_jobs(tmp_path / "multirun") == [sweep / "0", sweep / "1"]


def test_report_json_has_no_nan(tmp_path):
    run = synthetic_run(tmp_path / "run", [NodeProfile(gpus=[_busy()])], seconds=60,
                        overrides=[*GPU_JOB, "resources.gpus_per_node=1"], train={**TRAIN, "final_loss": math.nan})
    out = report.write_report(_build(run), run)
    assert json.loads((out / "report.json").read_text())["throughput"]["final_loss"] is None


def test_peak_table():
    from hpc_ft.report.peaks import peak_tflops

    assert peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == 989.4
    assert peak_tflops("NVIDIA H100 PCIe", "bf16") == 756.5
    assert peak_tflops("NVIDIA A100-SXM4-80GB", "bf16") == 312.0
    assert peak_tflops("NVIDIA L40S", "fp32") == 91.6 and peak_tflops("NVIDIA L4", "bf16") == 121.0
    assert peak_tflops("Tesla V100-SXM2-16GB", "bf16") is None and peak_tflops("Mystery GPU", "bf16") is None


# --- issue 10.12: a lost GPU or dropped metric is visible next to its numbers; no negative zero ------------

def test_lost_gpu_is_marked_on_its_row_even_after_many_notices(tmp_path):
    run = synthetic_run(tmp_path / "run", [NodeProfile(gpus=[_busy(), _busy()])], seconds=600,
                        overrides=[*GPU_JOB, "resources.gpus_per_node=2", "resources.timeout_min=20"], train=TRAIN)
    run_dir, spec, nodes = report.load_run(run)
    # What the sampler says (hpc_ft.telemetry.nvml): three other notices first, then the loss and a dropped metric.
    nodes[0].notes += [f"harmless notice {i}" for i in range(3)] + [
        "GPU 1 (NVIDIA H100 80GB HBM3) lost (GPU is lost); not sampled from now on",
        "GPU 0 power: NVMLError_NotSupported (Not Supported); not sampled from now on"]
    rr = report.build_report(run_dir, spec, nodes)
    assert [g.lost for g in rr.gpus] == [False, True] and rr.gpus[0].dropped == ["power"]
    text = _text(rr)
    gpu1 = next(line for line in text.splitlines() if "LOST" in line)
    assert "│   1 │" in gpu1 and "cover only the time before" in gpu1  # on the row whose utilization it qualifies
    assert "(GPU 1 lost)" in text  # and on its node's row
    assert "not sampled after NVML refused: power" in text
    assert "node 0 GPU 1 lost mid-run" in text and "GPU 1 (NVIDIA H100 80GB HBM3) lost" in text


def test_no_negative_zero_in_a_fully_busy_run(tmp_path):
    run = synthetic_run(tmp_path / "run", [NodeProfile(gpus=[_busy(), _busy(), _busy()])], seconds=1234,
                        overrides=[*GPU_JOB, "resources.gpus_per_node=3", "train.global_batch_size=18",
                                   "resources.timeout_min=30"], train=TRAIN)
    run_dir, spec, nodes = report.load_run(run)
    nodes[0].report.wall_s -= 0.5  # the sampler's last interval ends after the node's clock stopped
    rr = report.build_report(run_dir, spec, nodes)
    text = _text(rr)
    assert not re.search(r"(?<!\w)-0(\.0*)?\b", text), text  # (?<!\w): a path such as pytest-0/ is no number
    assert rr.totals["cost_idle"] >= 0
    assert report.build.fmt_num(-0.0004, ".2f") == "0.00" and report.build.fmt_num(-0.004, ".2f") == "-0.00"[1:] \
        and report.build.fmt_num(-0.006, ".2f") == "-0.01"


def test_cpu_run_is_costed_in_node_hours(tmp_path):
    run = synthetic_run(tmp_path / "run", [NodeProfile(), NodeProfile()], seconds=1800,
                        overrides=["resources.nodes=2", "resources.timeout_min=60",
                                   "telemetry.price_per_node_hour=0.4"], train=TRAIN)
    rr = _build(run)
    t = rr.totals
    assert t["cpu_only"] and t["node_hours_requested"] == pytest.approx(1.0) and t["node_hours_reserved"] == 2.0
    assert t["cost_total"] == pytest.approx(0.4)
    text = _text(rr)
    assert "cost: 0.40 = 1.00 node-hours at 0.4/node-hour" in text
    assert "GPU-hours" not in text


@pytest.mark.parametrize("text", ["conf: [1\n", "conf:\n  train:\n    max_stepz: 3\noverrides: []\n"],
                         ids=["broken yaml", "unknown key"])
def test_unreadable_job_yaml_is_one_error_not_a_traceback(tmp_path, capsys, text):
    run = tmp_path / "run"
    run.mkdir()
    (run / "job.yaml").write_text(text)
    assert cli_main(["report", str(run)]) == 2
    out = capsys.readouterr()
    assert "cannot read the records in" in out.out + out.err and "Fix:" in out.out + out.err
    assert list(run.iterdir()) == [run / "job.yaml"]  # nothing written


def test_the_advised_command_names_the_script_the_run_ran_wherever_it_is_pasted(tmp_path, monkeypatch):
    """script.path=train.py, given relative in the submitting directory, is the absolute path the job ran."""
    proj = tmp_path / "my proj"
    proj.mkdir()
    (proj / "train.py").write_text("print('hi')\n")
    monkeypatch.chdir(proj)
    run = synthetic_run(tmp_path / "run", [NodeProfile(gpus=[_busy()])], seconds=60,
                        overrides=[*GPU_JOB, "script.path=train.py", "++script.args=[--lr,1]"])
    spec = report.load_run(run)[1]
    assert report.next_overrides(spec, []) == [*GPU_JOB, f'script.path="{proj / "train.py"}"', "++script.args=[--lr,1]"]
    monkeypatch.chdir(tmp_path)
    conf = compose_conf(report.next_overrides(spec, []), run_dir=tmp_path / "next")  # from another directory
    assert conf.script.path == str(proj / "train.py")


def test_the_sweep_tables_overrides_column_shows_what_sets_each_job_apart(tmp_path):
    from hpc_ft.report.render import sweep_table

    jobs = []
    for n, lr in enumerate(("0.1", "0.01")):
        run = synthetic_run(tmp_path / str(n), [NodeProfile(gpus=[_busy()])], seconds=60,
                            overrides=[*GPU_JOB, f"optim.lr={lr}"], train=TRAIN)
        jobs.append((str(n), _build(run)))
    table = sweep_table(jobs)
    overrides = [c for c in table.columns if c.header == "overrides"][0]
    assert list(overrides._cells) == ["optim.lr=0.1", "optim.lr=0.01"]  # not resources=gpu executor=slurm ...


# --- what a new user found in the printed lines: commands to paste are never broken, figures read ------------------

def test_the_advised_command_is_one_unbroken_line_on_a_narrow_terminal(tmp_path, capsys, monkeypatch):
    """A 60-column terminal wraps the prose but not the advised `hpc-ft submit ...` line: broken without a `\\`,
    pasting it ran its first line alone (itself a valid job). Both places print it: `hpc-ft report` and the report
    at the end of `hpc-ft submit`."""
    import io
    import sys

    from rich.console import Console

    from hpc_ft.cli import _show_run_report

    run = synthetic_run(tmp_path / "run", [NodeProfile(gpus=[_busy()], job_rss_gb=5.0)], seconds=600,
                        overrides=[*GPU_JOB, "resources.gpus_per_node=1", "resources.timeout_min=1440",
                                   "resources.mem_gb=128"], train=TRAIN)
    command = _build(run).command
    assert command is not None and len(command) > 100
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)  # a terminal 60 columns wide, as rich reads it
    monkeypatch.setenv("COLUMNS", "60")
    assert report.main(run) == 0
    lines = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out).splitlines()  # without its colours
    assert f"  {command}" in lines
    assert max(len(line) for line in lines if command not in line) <= 60  # the rest still fits the terminal
    con = Console(width=60, record=True, file=io.StringIO())
    _show_run_report(report.load_run(run)[1], con)
    assert f"  {command}" in con.export_text().splitlines()


def test_the_results_line_keeps_each_label_with_its_value_on_a_narrow_terminal(tmp_path):
    """`precision:` at the end of a line and `bf16` at the start of the next: the results line breaks between
    its fields only."""
    import io

    from rich.console import Console

    from hpc_ft.submit.summary import render_results

    from hpc_ft.rundir.records import TrainResult

    train = TrainResult(**TRAIN, precision="bf16", world_size=2,
                        metrics={"eval_accuracy": 0.8125, "majority_accuracy": 0.5})
    run = synthetic_run(tmp_path / "run", [NodeProfile()], seconds=5, train=train, overrides=["telemetry=off"])
    _, spec, nodes = report.load_run(run)
    fields = ["final train loss: 0.2500", "eval accuracy: 0.812 (majority baseline 0.500)", "precision: bf16",
              "world size: 2"]
    for width in (60, 80, 100, 200):
        con = Console(width=width, record=True, file=io.StringIO())
        con.print(render_results(spec, [nd.report for nd in nodes]))
        lines = con.export_text().splitlines()
        for field in fields:
            assert any(field in line for line in lines), (width, field, lines)
    assert "   ".join(fields) in lines  # one line where it fits, as before


def test_memory_per_worker_shows_mib_below_a_gib_and_a_job_without_tokens_no_token_rate(tmp_path):
    from hpc_ft.estimate.model import FitReport, MemoryEstimate
    from hpc_ft.rundir.layout import RunDir
    from hpc_ft.terminal import fmt_bytes

    train = {**TRAIN, "tokens_per_s": 0.0, "peak_memory_bytes": 2_579_052, "peak_memory_source": "MemTracker"}
    run = synthetic_run(tmp_path / "run", [NodeProfile()], seconds=5, train=train, overrides=["telemetry=off"])
    est = FitReport(estimate=MemoryEstimate(peak=3 * 1024 ** 2), gpu_bytes=None, gpu_source="", fits=None)
    RunDir(run).memory_estimate.write_text(json.dumps(est.to_dict()))
    text = _text(_build(run))
    assert "memory per worker: estimated 3.0 MiB, measured 2.5 MiB (MemTracker); estimate +22%" in text
    assert "100.0 samples/s, - tokens/s" in text
    assert fmt_bytes(1.5 * 1024 ** 3) == "1.50 GiB"
    assert "12800 tokens/s" in _text(_build(synthetic_run(tmp_path / "tok", [NodeProfile()], seconds=5, train=TRAIN,
                                                          overrides=["telemetry=off"])))
