"""Durations given, or taken from earlier runs' reports."""

from __future__ import annotations

import pytest

from hpc_ft.errors import ConfigError
from hpc_ft.sched import SweepJob, estimate_durations, jobs_from_points

HISTORY = [
    {"overrides": ["optim.lr=1e-5", "precision=bf16"], "wall_s": 3600.0, "gpus": 1},
    {"overrides": ["optim.lr=1e-5", "precision=bf16"], "wall_s": 5400.0, "gpus": 1},
    {"spec": {"overrides": ["optim.lr=3e-5", "precision=bf16"]}, "wall_s": 7200.0,
     "resources": {"nodes": 1, "gpus_per_node": 2}},
    {"overrides": ["optim.lr=3e-5", "precision=fp32"], "wall_s": 100.0, "ok": False},  # failed: ignored
    {"overrides": ["optim.lr=3e-5", "precision=fp32"], "wall_s": 0.0},  # no time: ignored
]


def test_durations_from_history():
    jobs = jobs_from_points([["optim.lr=1e-5", "precision=bf16"], ["precision=bf16", "+optim.lr=3e-5"],
                             ["optim.lr=1e-4", "precision=bf16"], ["optim.lr=3e-5", "precision=fp32"]], gpus=1)
    got, notes = estimate_durations(jobs, HISTORY)
    hours = [j.est_duration_h for j in got]
    # Job 0: the same overrides twice, 1 h and 1.5 h -> median 1.25 h.
    assert hours[0] == pytest.approx(1.25)
    # Job 1: the same overrides (order and '+' do not matter) once: 2 h on 2 GPUs -> 4 h on 1 (linear).
    assert hours[1] == pytest.approx(4.0)
    # Job 2: no exact match; 1 of 2 overrides (precision=bf16) shared by 3 runs: 1, 1.5, 4 h -> 1.5 h.
    assert hours[2] == pytest.approx(1.5)
    # Job 3: its only exact matches failed; shares 1 override with the lr=3e-5 run -> 4 h.
    assert hours[3] == pytest.approx(4.0)
    assert len(notes) == 4 and "same overrides" in notes[0] and "1 of its 2 overrides" in notes[2]


def test_given_durations_are_kept_and_the_default_fills_gaps():
    given = SweepJob("g", 1, 2.5, overrides=["x=1"])
    missing = SweepJob("m", 1, 0.0, overrides=["x=2"])
    got, notes = estimate_durations([given, missing], [], default_h=3.0)
    assert [j.est_duration_h for j in got] == [2.5, 3.0]
    assert notes == ["m: 3 h, the given default (no earlier runs)"]


def test_no_duration_and_no_history_is_refused_naming_the_job():
    with pytest.raises(ConfigError) as exc:
        estimate_durations([SweepJob("m", 1, 0.0)], [])
    assert "sweep[m].est_duration_h=0.0" in str(exc.value)
    assert "sched.est_duration_h" in str(exc.value)
