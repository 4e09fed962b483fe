"""The run-dir records: JSON round-trip, versions, and a record this hpc_ft cannot read refused by name."""

from __future__ import annotations

import json
import math

import pytest

from hpc_ft.cli import main as cli_main
from hpc_ft.rundir.layout import RunDir, SweepDir
from hpc_ft.rundir.records import (ManifestJob, NodeReport, RecordError, SweepManifest, TrainResult, load_results,
                                   save_results)
from hpc_ft.testing.synthetic import NodeProfile, synthetic_run


def _report(**kw) -> NodeReport:
    train = TrainResult(steps=7, max_steps=10, samples_per_s=12.5, final_loss=math.nan, preempted=True,
                        warnings=["resumed with changes"], metrics={"eval_accuracy": 0.5, "eval_loss": None})
    return NodeReport(host="n0", node_rank=0, job_id="42", exit_code=75, wall_s=3.5, train=train,
                      telemetry={"summary": {"samples": 3}}, preempted=True, **kw)


def test_records_round_trip_through_json(tmp_path):
    rep = _report()
    rep.save(tmp_path / "r.json")
    back = NodeReport.load(tmp_path / "r.json")
    assert math.isnan(back.train.final_loss)  # train.json may carry a NaN loss; it survives the trip
    back.train.final_loss = rep.train.final_loss = 0.0
    assert back == rep and isinstance(back.train, TrainResult)
    save_results(tmp_path / "results.json", [rep, back])
    assert load_results(tmp_path / "results.json") == [rep, rep]
    rep.train.save(tmp_path / "train.json")
    assert TrainResult.load(tmp_path / "train.json") == rep.train
    # The objective's metrics sit beside the fields, as train.json always had them.
    flat = json.loads((tmp_path / "train.json").read_text())
    assert flat["eval_accuracy"] == 0.5 and "metrics" not in flat and rep.train.metric("eval_accuracy") == 0.5


def test_a_renamed_field_is_an_error_not_a_silent_none():
    with pytest.raises(TypeError):
        NodeReport(host="n", node_rank=0, job_id="1", exit_code=0, wall_s=1.0, requeued=True)  # the old name
    with pytest.raises(AttributeError):
        _report().requeued  # noqa: B018


@pytest.mark.parametrize("change, words", [
    ({"version": 99}, ["NodeReport version 99", "not one this hpc_ft reads"]),
    ({"wall_time_s": 1.0}, ["has no field(s) ['wall_time_s']"]),
    ({"train": {"steps": 1, "warnings": [], "stepz": [2]}}, ["TrainResult", "['stepz']"]),
])
def test_a_record_this_version_cannot_read_is_refused_by_name(tmp_path, change, words):
    d = {**_report().to_dict(), **change}
    with pytest.raises(RecordError) as exc:
        NodeReport.from_dict(d, "nodes/node0/node_report.json")
    assert all(w in str(exc.value) for w in ["nodes/node0/node_report.json", *words]), str(exc.value)


def test_hpc_ft_report_names_a_node_report_of_a_newer_version(tmp_path, capsys):
    run = synthetic_run(tmp_path / "run", [NodeProfile(gpus=[])], seconds=5, overrides=["resources.gpus_per_node=0"],
                        train={"samples_per_s": 5.0})
    path = RunDir(run).node(0).report
    path.write_text(json.dumps({**json.loads(path.read_text()), "version": 99}))
    assert cli_main(["report", str(run)]) == 0  # the job and the telemetry series still report
    out = " ".join(capsys.readouterr().out.split())
    assert "unreadable node report nodes/node0/node_report.json" in out and "version 99" in out, out


def test_sweep_manifest_round_trips_and_reads_the_unversioned_one(tmp_path):
    job = ManifestJob(num=0, run_dir=str(tmp_path / "0"), overrides=["optim.lr=1e-4"], order_index=0, nodes=2,
                      gpus_per_node=0, job_id="12", node_reports=["nodes/node0/node_report.json"], ok=None)
    manifest = SweepManifest(executor="local", wait=False, state="submitted", plan={"order": ["0"]}, jobs=[job])
    path = SweepDir(tmp_path).manifest
    manifest.save(path)
    assert SweepManifest.load(path) == manifest
    old = json.loads(path.read_text())
    del old["version"]  # as written before the run-dir contract
    path.write_text(json.dumps(old))
    assert SweepManifest.load(path) == manifest
    old["jobs"][0]["jobid"] = "12"
    path.write_text(json.dumps(old))
    with pytest.raises(RecordError, match=r"jobs\[0\]: ManifestJob has no field\(s\) \['jobid'\]"):
        SweepManifest.load(path)


def test_run_report_rows_are_typed_and_round_trip_through_report_json(tmp_path, capsys):
    from hpc_ft.report.build import RunReport
    from hpc_ft.report.rows import GpuRow, NodeRow
    from hpc_ft.testing.synthetic import GpuProfile

    busy = GpuProfile(util_pct=90.0, mem_used_gb=30.0)
    run = synthetic_run(tmp_path / "run", [NodeProfile(gpus=[busy])], seconds=60,
                        overrides=["resources=gpu", "resources.gpus_per_node=1"], train={"samples_per_s": 5.0})
    assert cli_main(["report", str(run)]) == 0
    data = json.loads(RunDir(run).run_report.read_text())
    rr = RunReport.from_dict(data)
    assert isinstance(rr.nodes[0], NodeRow) and isinstance(rr.gpus[0], GpuRow) and rr.nodes[0].samples_per_s == 5.0
    assert json.loads(json.dumps(rr.to_dict())) == data
    with pytest.raises(TypeError):
        RunReport.from_dict({**data, "nodes": [{**data["nodes"][0], "node_rank": 0}]})  # a field no row has
