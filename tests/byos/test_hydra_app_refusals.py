"""Your own Hydra app with hydra/launcher=hpc_ft (trial 4, problem 8): a refused sweep leaves nothing it made (Hydra's
sweeper makes the sweep dir and its multirun.yaml before the launcher can refuse, and before it checks the jobs'
overrides itself); a launcher key the launcher lacks,
added with '+' as Hydra's own error suggests, is refused with a did-you-mean instead of being ignored; a misspelt key
without '+' is Hydra's own error, raised while composing, before any launcher runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hydra_plugins.hpc_ft_launcher.launcher import unknown_key_problems
from hydra_plugins.hpc_ft_launcher.leftovers import discard, missing_from

APP = '''
import hydra
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path=None, config_name=None)
def main(cfg: DictConfig) -> float:
    return float(cfg.lr) * 10


if __name__ == "__main__":
    main()
'''


def _app(cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    app = cwd / "my_app.py"
    app.write_text(APP)
    return subprocess.run([sys.executable, str(app), "-m", "hydra/launcher=hpc_ft", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300, env=env)


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# --- what a refusal removes ------------------------------------------------------------------------------------

def test_missing_from_is_the_outermost_missing_dir_of_the_path(tmp_path):
    assert missing_from(tmp_path) is None
    assert missing_from(tmp_path / "multirun" / "d" / "t") == tmp_path / "multirun"
    (tmp_path / "multirun" / "d").mkdir(parents=True)
    assert missing_from(tmp_path / "multirun" / "d" / "t") == tmp_path / "multirun" / "d" / "t"


def test_discard_removes_the_dirs_it_made_when_they_hold_only_multirun_yaml(tmp_path):
    (tmp_path / "multirun").mkdir()
    (tmp_path / "multirun" / "older").mkdir()  # another day's sweeps: the parent existed, and stays
    sweep = tmp_path / "multirun" / "d" / "t"
    made_from = missing_from(sweep)
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    discard(sweep, made_from)
    assert _tree(tmp_path) == ["multirun", "multirun/older"]


@pytest.mark.parametrize("extra", ["plan.txt", "0"])
def test_discard_keeps_a_sweep_dir_that_holds_anything_else(tmp_path, extra):
    sweep = tmp_path / "multirun" / "d" / "t"
    made_from = missing_from(sweep)
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    (sweep / extra).mkdir() if extra == "0" else (sweep / extra).write_text("x")
    discard(sweep, made_from)
    assert sorted(p.name for p in sweep.iterdir()) == sorted(["multirun.yaml", extra])


def test_discard_keeps_a_sweep_dir_that_existed_before(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    made_from = missing_from(sweep)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    discard(sweep, made_from)
    assert made_from is None and _tree(tmp_path) == ["sweep", "sweep/multirun.yaml"]


def test_a_key_the_launcher_lacks_is_a_problem_with_a_did_you_mean():
    (p,) = unknown_key_problems({"gpus_per_nod": 2, "nodes": 1})
    assert str(p) == ("hydra.launcher.gpus_per_nod=2: is not a setting of the hpc_ft launcher (added with '+', it "
                      "would be ignored). Fix: did you mean hydra.launcher.gpus_per_node? pass "
                      "hydra.launcher.gpus_per_node=2 (without '+')")
    (far,) = unknown_key_problems({"zzz": 1})
    assert far.fix.startswith("drop it; hydra.launcher has: executor, nodes, gpus_per_node,")
    assert unknown_key_problems({"nodes": 2, "mem_gb": 1.0, "telemetry": False}) == []


# --- the app, end to end ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("override, shown", [
    ("hydra.launcher.nodes=0", "hydra.launcher.nodes=0: must be at least 1"),
    ("hydra.launcher.executor=cloud", "hydra.launcher.executor='cloud': must be one of"),
    ("hydra.launcher.preempt_signal=KILL", "hydra.launcher.preempt_signal='KILL': must be a signal"),
    ("hydra.launcher.mem_gb=-1", "hydra.launcher.mem_gb=-1.0: must be at least"),
    ("+hydra.launcher.gpus_per_nod=2", "Fix: did you mean hydra.launcher.gpus_per_node? pass "
                                       "hydra.launcher.gpus_per_node=2 (without '+')"),
])
def test_a_refused_sweep_in_the_default_sweep_dir_leaves_nothing(tmp_path, override, shown):
    """It left multirun/DATE/TIME/multirun.yaml per attempt; hpc-ft submit leaves nothing."""
    res = _app(tmp_path, "+lr=1,2", override)
    assert res.returncode == 2 and shown in res.stderr, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    assert _tree(tmp_path) == ["my_app.py"]


def test_a_refused_sweep_into_an_existing_dir_removes_nothing_of_it(tmp_path):
    sweep = tmp_path / "mine"
    sweep.mkdir()
    (sweep / "notes.txt").write_text("kept")
    res = _app(tmp_path, "+lr=1,2", "hydra.launcher.nodes=0", f"hydra.sweep.dir={sweep}")
    assert res.returncode == 2, res.stdout + res.stderr
    assert sorted(p.name for p in sweep.iterdir()) == ["multirun.yaml", "notes.txt"]  # Hydra rewrote its record


def test_a_misspelt_launcher_key_is_hydras_own_error_before_the_launcher_runs(tmp_path):
    """Hydra composes the config before any launcher exists: its error (exit 1), and nothing written. The README's
    "Use the launcher in your own Hydra app" says so."""
    res = _app(tmp_path, "+lr=1,2", "hydra.launcher.gpus_per_nod=2")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Key 'gpus_per_nod' not in 'HpcFtLauncherConf'" in res.stderr
    assert _tree(tmp_path) == ["my_app.py"]


def test_a_sweep_whose_preflight_cannot_ask_slurm_leaves_nothing(tmp_path):
    """Not a bad value (Hydra's exit 1 with the preflight's error), but nothing was submitted either."""
    bin_dir, cwd = tmp_path / "bin", tmp_path / "app"
    bin_dir.mkdir()
    cwd.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/sh\necho 'scontrol: fatal: no configuration source' >&2\nexit 1\n")
    (bin_dir / "scontrol").chmod(0o755)
    res = _app(cwd, "+lr=1,2", "hydra.launcher.executor=slurm", env={**os.environ, "PATH": str(bin_dir)})
    assert res.returncode == 1 and "no configuration source" in res.stderr, res.stdout + res.stderr
    assert _tree(cwd) == ["my_app.py"]


def test_a_sweep_hydra_refuses_before_the_first_launch_leaves_nothing(tmp_path):
    """Hydra's sweeper makes the sweep dir, then finds that a job's override names a key the app lacks (exit 1,
    Hydra's own error): the launcher was set up but never launched, and removes the dir at exit."""
    res = _app(tmp_path, "lr=1,2")
    assert res.returncode == 1 and "Could not override 'lr'" in res.stderr, res.stdout + res.stderr
    assert _tree(tmp_path) == ["my_app.py"]
