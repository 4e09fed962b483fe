"""The sweep report's table keeps its swept keys readable: whole where the output is no terminal (a file, a log),
short with the full keys listed under the table in a terminal too narrow for it, and never cut to ``scrip…``."""

from __future__ import annotations

import re
import sys

import pytest

from hpc_ft import report
from hpc_ft.report.sweep_view import abbreviate, key_legend, shortest_keys
from hpc_ft.testing.synthetic import GpuProfile, NodeProfile, synthetic_run

GPU_JOB = ["resources=gpu", "executor=slurm", "train.global_batch_size=16", "resources.cpus_per_task=4",
           "resources.gpus_per_node=1", "resources.mem_gb=8", "resources.timeout_min=20"]
TRAIN = {"samples_per_s": 100.0, "final_loss": 0.25, "steps": 200, "max_steps": 200}
# Two swept keys, one of them long: squeezed into 120 columns, the table cut them to 'optim…' and 'train…'.
SWEPT = [["optim.weight_decay=0.0", "train.eval_micro_batch_size=8"],
         ["optim.weight_decay=0.05", "train.eval_micro_batch_size=16"]]


@pytest.fixture
def sweep(tmp_path, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    root = tmp_path / "multirun" / "2026-01-01" / "00-00-00"
    for i, swept in enumerate(SWEPT):
        synthetic_run(root / str(i), [NodeProfile(gpus=[GpuProfile()])], seconds=60, overrides=[*GPU_JOB, *swept],
                      train=TRAIN)
    return root


def _rows(lines: list[str], job: str, nxt: str | None) -> list[str]:
    """The table lines of one job's row: from its first line to the next job's (or the table's end)."""
    start = next(i for i, line in enumerate(lines) if line.startswith(f"│ {job} "))
    end = next(i for i, line in enumerate(lines[start + 1:], start + 1)
               if (nxt and line.startswith(f"│ {nxt} ")) or line.startswith("└"))
    return lines[start:end]


def test_a_sweep_report_that_is_no_terminal_shows_each_override_whole(sweep, capsys):
    assert report.main(sweep) == 0
    lines = capsys.readouterr().out.splitlines()
    for job, swept in enumerate(SWEPT):
        (row,) = _rows(lines, str(job), str(job + 1) if job + 1 < len(SWEPT) else None)  # one line: nothing wrapped
        assert " ".join(swept) in row and "…" not in row, row


def test_a_narrow_terminal_shows_short_keys_and_lists_the_full_ones_under_the_table(sweep, capsys, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)  # a terminal 120 columns wide, as rich reads it
    monkeypatch.setenv("COLUMNS", "120")
    assert report.main(sweep) == 0
    out = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)  # without its colours
    lines = out.splitlines()
    lines = lines[:next(i for i, line in enumerate(lines) if " job 0 " in line)]  # the table, before each job's report
    assert max(len(line) for line in lines) <= 120  # the table fits the terminal
    legend = re.sub(r"\s+", " ", "\n".join(lines))
    assert "eval_micro_batch_size = train.eval_micro_batch_size, weight_decay = optim.weight_decay" in legend
    for job, swept in enumerate(SWEPT):
        rows = _rows(lines, str(job), str(job + 1) if job + 1 < len(SWEPT) else None)
        cells = [row.split("│")[2].strip() for row in rows]  # the overrides column, folded over lines, never cut
        assert "…" not in "".join(cells)
        assert "".join(cells) == "".join(o.split(".", 1)[1] for o in swept)


def test_short_keys_are_the_shortest_dotted_tails_no_other_key_shares():
    shorts = shortest_keys({"optim.lr", "model.head.dropout", "model.body.dropout", "lr", "model",
                            "executor.env.MY_FLAG", "hydra/launcher"})
    assert shorts == {"optim.lr": "optim.lr", "lr": "lr",  # 'lr' is taken by the other key: neither shortens
                      "model.head.dropout": "head.dropout", "model.body.dropout": "body.dropout", "model": "model",
                      "executor.env.MY_FLAG": "MY_FLAG", "hydra/launcher": "hydra/launcher"}
    assert len(set(shorts.values())) == len(shorts)
    assert abbreviate(["+executor.env.MY_FLAG=1", "~model.head.dropout", "model=hf"], shorts) == \
        ["+MY_FLAG=1", "~head.dropout", "model=hf"]
    assert key_legend(shorts) == ("keys: MY_FLAG = executor.env.MY_FLAG, body.dropout = model.body.dropout, "
                                  "head.dropout = model.head.dropout")
    assert key_legend(shortest_keys({"model", "optim"})) is None  # nothing shortened: no legend
