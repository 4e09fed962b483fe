"""Reports and sweep tables show the task's evaluation metrics (causal LM: eval loss, perplexity, token accuracy)."""

from __future__ import annotations

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
