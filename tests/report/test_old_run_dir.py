"""A run dir written by the hpc_ft before the run-dir contract still reads.

``data/run_e5bbae0`` was written by hpc_ft at commit e5bbae0 (unversioned records, each node's report in
``nodes/node_{r}.json`` beside ``nodes/node{r}/``, the field ``requeued``) with::

    HPC_FT_STOP_AFTER_STEP=2 hpc-ft submit executor=local model=mlp data=synthetic precision=fp32 \\
        train.max_steps=4 train.log_every_steps=1 telemetry.interval_s=0.2 resources.nodes=2

(a 2-node run stopped for preemption at step 2: torchrun exit 1, ``requeued: true``), keeping job.yaml,
metrics.jsonl, results.json and the nodes' files; ``expected_report.json`` is the report.json that
``hpc-ft report`` wrote for it at commit c8778ce, the last version before the run-dir contract.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from hpc_ft.cli import main as cli_main
from hpc_ft.rundir.layout import RunDir
from hpc_ft.rundir.records import NODE_REPORT_VERSION, NodeReport, load_results
from hpc_ft.sweep.history import run_record

OLD_RUN = Path(__file__).parent / "data" / "run_e5bbae0"


def _old_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(OLD_RUN, run)
    (run / "expected_report.json").unlink()
    return run


def test_hpc_ft_report_reads_a_run_dir_of_the_previous_version(tmp_path, capsys):
    run = _old_run(tmp_path)
    assert cli_main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert "preempted" in out and "cannot read" not in out and "unreadable" not in out
    new = json.loads(RunDir(run).run_report.read_text())
    old = json.loads((OLD_RUN / "expected_report.json").read_text())
    # The same rows, totals, throughput and advice as the version before the run-dir contract reported.
    # A node stopped for preemption was "requeued" in the report then; it is "preempted" now, as in the results table.
    for n in old["nodes"]:
        n["status"] = {"requeued": "preempted"}.get(n["status"], n["status"])
    # The memory advice now says how its figure is made (the same figure).
    for a in old["advice"]:
        a["reason"] = re.sub(r"(\d+) GiB keeps 1\.25x headroom",
                             r"\1 GiB: the peak x 1.25 + 1 GiB, rounded up to an even number of GiB", a["reason"])
    for key in ("job", "nodes", "gpus", "totals", "throughput", "advice", "command", "notes"):
        assert new[key] == old[key], key
    assert [n["status"] for n in new["nodes"]] == ["preempted", "preempted"]
    assert [n["source"] for n in new["nodes"]] == ["series", "series"]  # its telemetry series were found
    assert not RunDir(run).node(0).report.exists()  # reading wrote no record in the new layout


def test_old_records_read_as_the_current_types(tmp_path):
    run = _old_run(tmp_path)
    rd = RunDir(run)
    assert rd.node_ranks() == {0, 1}
    assert rd.node_report(0) == rd.nodes / "node_0.json"  # the earlier version's place
    rep = NodeReport.load(rd.node_report(0))
    assert rep.version == NODE_REPORT_VERSION and rep.preempted and rep.resumable and rep.exit_code == 1
    assert rep.train is not None and rep.train.preempted and rep.train.steps == 2 and rep.train.warnings == []
    assert [r.node_rank for r in load_results(rd.results)] == [0, 1]
    rec = run_record(run)  # sweep history (sched.history=[...]) reads it too
    assert rec is not None and rec["ok"] is False and rec["wall_s"] == max(
        NodeReport.load(rd.node_report(r)).wall_s for r in (0, 1))


def test_new_layout_wins_over_the_old_report(tmp_path):
    run = _old_run(tmp_path)
    rd = RunDir(run)
    rep = NodeReport.load(rd.node_report(0))
    rep.exit_code = 0
    rep.save(rd.node(0).report)  # what a resumed run of this version writes
    assert rd.node_report(0) == rd.node(0).report and NodeReport.load(rd.node_report(0)).ok
