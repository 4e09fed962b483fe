"""A sweep's records across batches (manifest.json, plan.txt) and what a waited-for sweep shows: fast, no training."""

import io
import json
from types import SimpleNamespace

from rich.console import Console

from hpc_ft.config.compose import compose_conf
from hpc_ft.report import report_sweep
from hpc_ft.rundir.layout import RunDir, SweepDir
from hpc_ft.rundir.records import NodeReport, SweepManifest, TrainResult
from hpc_ft.submit.executors import SweepEntry, resolve
from hpc_ft.sweep.outcome import job_status, results_table
from hpc_ft.sweep.run import set_job_ids, write_manifest, write_plan
from hpc_ft.testing.synthetic import NodeProfile, synthetic_run


def entry(sweep, num, *overrides, reports=(), job_id=None, run_dir=None):
    ov = ["model=mlp", "data=synthetic", *overrides]
    spec = resolve(compose_conf(ov, run_dir=run_dir or sweep / str(num)), ov)
    return SweepEntry(num, spec, 0, job=None if job_id is None else SimpleNamespace(job_id=job_id),
                      reports=list(reports))


def node(rank=0, exit_code=0, **train):
    return NodeReport(host="h", node_rank=rank, job_id="1", exit_code=exit_code, wall_s=1.0,
                      train=TrainResult(**train) if train else None)


def manifest_jobs(sweep):
    return [(j.num, j.job_id, j.ok) for j in SweepManifest.load(SweepDir(sweep).manifest).jobs]


def test_a_later_batch_adds_its_jobs_to_the_manifest_and_keeps_what_was_recorded_of_the_earlier(tmp_path):
    sweep = tmp_path / "sw"
    kw = dict(executor="local", wait=True)
    write_manifest(sweep, {"order": ["0"]}, [entry(sweep, 0, reports=[node()])], state="finished", **kw)
    set_job_ids(sweep, {0: "101"})  # as a detached sweep driver records the id after the batch was written
    later = [entry(sweep, 1, job_id="102"), entry(sweep, 2, job_id="103", reports=[node(exit_code=1)])]
    write_manifest(sweep, {"order": ["1", "2"]}, later, state="running", continues=True, **kw)
    assert manifest_jobs(sweep) == [(0, "101", True), (1, "102", None), (2, "103", False)]
    # The batch's own records are rewritten, not listed twice; the plan is the latest batch's.
    later[0].reports = [node()]
    write_manifest(sweep, {"order": ["1", "2"]}, later, state="finished", continues=True, **kw)
    assert manifest_jobs(sweep) == [(0, "101", True), (1, "102", True), (2, "103", False)]
    assert SweepManifest.load(SweepDir(sweep).manifest).plan == {"order": ["1", "2"]}
    # A new sweep (its first batch) in the same dir starts a new manifest.
    write_manifest(sweep, {"order": ["0"]}, [entry(sweep, 0, job_id="201")], state="running", **kw)
    assert manifest_jobs(sweep) == [(0, "201", None)]


def test_plan_txt_keeps_every_batchs_plan_under_a_line_naming_its_jobs(tmp_path):
    write_plan(tmp_path, "sweep plan: 2 jobs\nfirst", [0, 1])
    write_plan(tmp_path, "sweep plan: 1 jobs\nsecond", [2], continues=True)
    write_plan(tmp_path, "sweep plan: 2 jobs\nthird", [3, 4], continues=True)
    text = SweepDir(tmp_path).plan.read_text()
    later = "a later batch of the sweeper's, planned on its own"
    assert text == ("sweep plan: 2 jobs\nfirst\n"
                    f"\n--- job 2: {later} ---\nsweep plan: 1 jobs\nsecond\n"
                    f"\n--- jobs 3-4: {later} ---\nsweep plan: 2 jobs\nthird\n")
    write_plan(tmp_path, "sweep plan: 1 jobs\nnew", [0])  # a new sweep in the same dir
    assert SweepDir(tmp_path).plan.read_text() == "sweep plan: 1 jobs\nnew\n"


def test_job_status_names_failed_nodes_and_tells_preempted_from_failed():
    assert job_status([node(), node(1)]) == "ok"
    assert job_status([node(), node(1, exit_code=3)]) == "FAILED: node 1 exit 3"
    preempted = NodeReport(host="h", node_rank=0, job_id="1", exit_code=75, wall_s=1.0, preempted=True,
                           train=TrainResult(steps=4, preempted=True))
    assert job_status([preempted]) == "preempted" and job_status([]) == "no report"


def test_results_table_shows_what_sets_each_job_apart_its_status_loss_and_evaluation(tmp_path):
    sweep = tmp_path / "sw"
    entries = [entry(sweep, 1, "optim.lr=0.05", reports=[node(exit_code=1)]),
               entry(sweep, 0, "optim.lr=0.01", reports=[node(steps=30, final_loss=0.0026,
                                                              metrics={"eval_accuracy": 1.0, "eval_loss": 0.0014})])]
    con = Console(file=io.StringIO(), width=400)
    con.print(results_table(entries, sweep, shared={"model=mlp", "data=synthetic"}))
    out = con.file.getvalue()
    assert f"sweep results: 2 job(s), run dirs {sweep}/<job>" in out and "┃ run dir" not in out
    rows = [line for line in out.splitlines() if "optim.lr" in line]
    assert len(rows) == 2 and "model=mlp" not in out  # job 0 first, whatever the order given
    assert rows[0].split()[1:6] == ["0", "│", "optim.lr=0.01", "│", "ok"]
    assert "30" in rows[0] and "0.0026" in rows[0]
    assert "eval accuracy 1.000" in rows[0] and "eval loss 0.0014" in rows[0]
    assert "FAILED: node 0 exit 1" in rows[1]


def test_results_table_shows_run_dirs_that_are_not_the_default(tmp_path):
    sweep = tmp_path / "sw"
    e = entry(sweep, 0, reports=[node()], run_dir=tmp_path / "elsewhere")
    con = Console(file=io.StringIO(), width=400)
    con.print(results_table([e], sweep))
    out = con.file.getvalue()
    assert f"sweep results: 1 job(s), of {sweep}" in out and "┃ run dir" in out and str(tmp_path / "elsewhere") in out


def test_the_sweep_report_is_what_hpc_ft_report_writes_with_only_the_fresh_jobs_reports_rewritten(tmp_path):
    sweep = tmp_path / "sw"
    runs = [synthetic_run(sweep / str(n), [NodeProfile()], seconds=5, overrides=[f"optim.lr=0.0{n + 1}"],
                          train={"steps": 10, "final_loss": 0.5}) for n in range(2)]
    report_sweep(sweep, fresh={runs[1].absolute()})
    path = SweepDir(sweep).sweep_report
    assert [j["sweep_job"] for j in json.loads(path.read_text())] == ["0", "1"]  # every job of the sweep dir
    assert RunDir(runs[1]).run_report.exists() and not RunDir(runs[0]).run_report.exists()
