"""The hpc_ft Hydra launcher: discovered, the default for -m, refuses a bad sweep before preparing any job."""

import json

from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher

from .conftest import hpc_ft


def test_plugin_is_discovered_by_hydra():
    names = {p.__module__ + "." + p.__name__ for p in Plugins.instance().discover(Launcher)}
    assert "hydra_plugins.hpc_ft_launcher.launcher.HpcFtLauncher" in names


def test_it_is_the_default_launcher(tmp_path):
    res = hpc_ft(["submit", "--cfg", "hydra", "-p", "hydra.launcher"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert "hydra_plugins.hpc_ft_launcher.launcher.HpcFtLauncher" in res.stdout


def test_single_run_is_unaffected(tmp_path):
    res = hpc_ft(["submit", "dry_run=true", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["run_dir"] == str(tmp_path / "run")


def test_dry_run_sweep_describes_every_job_and_submits_nothing(tmp_path):
    sweep = tmp_path / "sw"
    res = hpc_ft(["submit", "-m", "optim.lr=1e-5,3e-5", "dry_run=true", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count('"run_dir"') == 2 and str(sweep / "1") in res.stdout
    assert not (sweep / "manifest.json").exists() and not list(sweep.rglob("job.yaml"))


def test_infeasible_budget_is_refused_before_any_job_is_prepared(tmp_path):
    sweep = tmp_path / "sw"
    res = hpc_ft(["submit", "-m", "optim.lr=1e-5,3e-5", "executor=slurm", "resources=gpu", "sched.budget_gpus=2",
                  f"hydra.sweep.dir={sweep}"], tmp_path)
    assert res.returncode == 2
    assert "sched.budget_gpus=2" in res.stderr and "pass sched.budget_gpus=4" in res.stderr
    assert "Traceback" not in res.stderr
    assert not list(sweep.rglob("job.yaml")) and not list(sweep.rglob(".submitit")) and not (sweep / "1").exists()


def test_every_bad_job_is_reported_at_once(tmp_path):
    res = hpc_ft(["submit", "-m", "optim.lr=1e-5,-3", "resources.nodes=1,3", f"hydra.sweep.dir={tmp_path / 'sw'}"],
                 tmp_path)
    assert res.returncode == 2
    assert "sweep jobs 2, 3: optim.lr=-3" in res.stderr
    assert "sweep jobs 1, 3: train.global_batch_size=16" in res.stderr
    assert not list((tmp_path / "sw").rglob("job.yaml"))


def test_a_sweep_job_with_an_empty_train_split_is_refused_before_any_job_is_prepared(tmp_path):
    res = hpc_ft(["submit", "-m", "model=mlp", "data=synthetic", "data.num_samples=1,2048",
                  f"hydra.sweep.dir={tmp_path / 'sw'}"], tmp_path)
    assert res.returncode == 2
    assert "data.num_samples=1: leaves an empty train split" in res.stderr and "Traceback" not in res.stderr
    assert not list((tmp_path / "sw").rglob("job.yaml"))


def test_sweeping_a_sweep_wide_key_is_refused(tmp_path):
    res = hpc_ft(["submit", "-m", "optim.lr=1e-5,3e-5", "wait=true,false", f"hydra.sweep.dir={tmp_path / 'sw'}"],
                 tmp_path)
    assert res.returncode == 2 and "wait=[True, False]" in res.stderr and "cannot be swept" in res.stderr
