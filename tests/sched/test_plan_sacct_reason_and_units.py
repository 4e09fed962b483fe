"""`hpc-ft plan` output (trial 4, smaller items): a failing sacct is one assumption line, and the plan's JSON says
what a CPU sweep's budget counts."""

from __future__ import annotations

import json

import pytest

from hpc_ft.cli import main as cli_main
from hpc_ft.sched.queueing import SACCT_REASON_CHARS, sacct_failure_reason

# What sacct prints on a machine with no Slurm config (exit 1), as trial 4 saw it.
NO_CONFIG = ("sacct: error: resolve_ctls_from_dns_srv: res_nsearch error: Unknown host\n"
             "sacct: error: fetch_config: DNS SRV lookup failed\n"
             "sacct: error: _establish_config_source: failed to fetch config\n"
             "sacct: fatal: Could not establish a configuration source\n")


@pytest.mark.parametrize("stderr, detail", [
    (NO_CONFIG, "sacct exited 1: Could not establish a configuration source)"),
    ("sacct: error: Problem talking to the database: Connection refused\n",
     "sacct exited 1: Problem talking to the database: Connection refused)"),
    ("", "sacct exited 1, with no message)"),
    ("sacct: fatal: \n", "sacct exited 1, with no message)"),
])
def test_sacct_failure_is_one_line_naming_its_fatal_message(stderr, detail):
    reason = sacct_failure_reason(1, stderr)
    assert "\n" not in reason and "sacct: error" not in reason
    assert reason == f"Slurm's accounting could not be read ({detail}"


def test_a_long_sacct_message_is_cut():
    reason = sacct_failure_reason(2, "sacct: error: " + "x" * 500)
    assert reason.endswith("...)") and len(reason) < SACCT_REASON_CHARS + 60


def _fake_sacct(tmp_path, monkeypatch):
    """A sacct on PATH (the only command there) that fails as one without a Slurm config does."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "sacct"
    script.write_text(f"#!/bin/sh\nprintf '%s' '{NO_CONFIG}' >&2\nexit 1\n")  # printf: a builtin, PATH has no cat
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))


def test_plan_keeps_a_failing_sacct_inside_its_bullet_list(tmp_path, monkeypatch, capsys):
    _fake_sacct(tmp_path, monkeypatch)
    monkeypatch.chdir(tmp_path)
    assert cli_main(["plan", "-m", "optim.lr=1e-5,3e-5", "executor=slurm", "model=mlp", "data=synthetic",
                     "--no-memory"]) == 0
    out = capsys.readouterr().out
    tail = out.split("\nassumptions:\n", 1)[1].rstrip("\n").splitlines()
    assert all(line.startswith("  - ") for line in tail), tail
    assert ("  - no queue-wait estimate: Slurm's accounting could not be read (sacct exited 1: Could not establish a "
            "configuration source)") in tail


def test_cpu_sweep_plan_json_says_its_budget_counts_nodes(tmp_path, monkeypatch, capsys):
    """manifest.json's plan is the same dict (Plan.to_dict): price_per_gpu_hour holds the node-hour price there."""
    monkeypatch.chdir(tmp_path)
    assert cli_main(["plan", "-m", "optim.lr=1e-5,3e-5", "model=mlp", "data=synthetic",
                     "telemetry.price_per_node_hour=0.5", "--no-memory", "--no-queue", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["unit"] == "node"
    assert plan["budget"]["unit"] == "node" and plan["budget"]["price_per_gpu_hour"] == 0.5  # the key readers use
