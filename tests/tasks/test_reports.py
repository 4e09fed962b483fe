"""Reports and sweep tables show the task's evaluation metrics (causal LM: eval loss, perplexity, token accuracy)."""

from __future__ import annotations

import json

from hpc_ft.rundir.records import TrainResult
from hpc_ft.testing.synthetic import NodeProfile, synthetic_run


def test_the_run_report_shows_a_causal_lm_runs_perplexity_and_token_accuracy(tmp_path, capsys):
    from hpc_ft.cli import main as cli_main

    train = TrainResult(steps=10, max_steps=10, final_loss=1.5, samples_per_s=3.0,
                        metrics={"eval_loss": 0.7, "eval_perplexity": 2.0137527, "eval_token_accuracy": 0.8125,
                                 "unigram_perplexity": 95.5})
    run = synthetic_run(tmp_path / "run", [NodeProfile()], seconds=5, train=train, overrides=["telemetry=off"])
    assert cli_main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert "eval loss 0.7000, perplexity 2.01, token accuracy 0.812, unigram baseline 95.50" in out
    import json

    report = json.loads((run / "report" / "report.json").read_text())
    assert report["evaluation"] == {"eval_loss": 0.7, "eval_perplexity": 2.0137527, "eval_token_accuracy": 0.8125,
                                    "unigram_perplexity": 95.5}


def test_the_sweep_table_compares_each_jobs_evaluation(tmp_path):
    from rich.console import Console

    from hpc_ft.report.build import build_report
    from hpc_ft.report.load import load_run
    from hpc_ft.report.render import sweep_table

    jobs = []
    for i, (loss, ppl) in enumerate(((0.9, 2.4596), (0.5, 1.6487))):
        train = TrainResult(steps=5, max_steps=5, final_loss=loss,
                            metrics={"eval_loss": loss, "eval_perplexity": ppl, "eval_token_accuracy": 0.5 + i / 4})
        run = synthetic_run(tmp_path / str(i), [NodeProfile()], seconds=3, train=train, overrides=["telemetry=off"])
        jobs.append((str(i), build_report(*load_run(run))))
    con = Console(width=400, record=True)
    con.print(sweep_table(jobs))
    text = con.export_text()
    assert "perplexity 2.46" in text and "perplexity 1.65" in text and "token accuracy 0.750" in text
    from hpc_ft.report import write_sweep_report

    write_sweep_report(tmp_path / "sweep", jobs)
    entries = json.loads((tmp_path / "sweep" / "report" / "sweep.json").read_text())
    assert [e["evaluation"]["eval_perplexity"] for e in entries] == [2.4596, 1.6487]
