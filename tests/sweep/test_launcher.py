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
    jobs = [json.loads(line) for line in res.stdout.splitlines()]  # JSON Lines: one whole job per line
    assert [j["run_dir"] for j in jobs] == [str(sweep / "0"), str(sweep / "1")]
    assert [j["overrides"][0] for j in jobs] == ["optim.lr=1e-05", "optim.lr=3e-05"]  # as Hydra's sweeper spells them
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
    # nothing was prepared, so nothing says it was (the lines listed job #0 alone, which only carries the error)
    assert "preparing" not in res.stdout + res.stderr and "#0 :" not in res.stdout + res.stderr, res.stdout


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


def test_a_sweep_launched_in_batches_keeps_every_batchs_jobs_and_status_reads_them_all(tmp_path):
    # Hydra's sweepers may call the launcher once per batch (the Optuna sweeper: hydra.sweeper.n_jobs trials at a
    # time; the basic sweeper with max_batch_size), numbering the jobs on: each batch rewrote manifest.json with its
    # own jobs only, and `hpc-ft status SWEEP_DIR` showed the last batch's.
    sweep = tmp_path / "sw"
    res = hpc_ft(["submit", "-m", "optim.lr=1e-3,3e-3", "hydra.sweeper.max_batch_size=1", "executor=debug",
                  "model=mlp", "data=synthetic", "precision=fp32", "train.max_steps=2", "train.warmup_steps=0",
                  "telemetry=off", "resources.workers_per_node=1", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = json.loads((sweep / "manifest.json").read_text())["jobs"]
    assert [(j["num"], j["run_dir"], j["ok"]) for j in jobs] == [(n, str(sweep / str(n)), True) for n in range(2)]
    assert all(j["job_id"] for j in jobs)
    plan = (sweep / "plan.txt").read_text()
    assert plan.count("sweep plan: 1 jobs") == 2 and "--- job 1: a later batch" in plan
    assert res.stdout.count("sweep plan:") == 1  # the plan's lines are printed once, not again per batch
    status = hpc_ft(["status", str(sweep)], tmp_path)
    assert status.returncode == 0, status.stderr
    assert "(2 job(s))" in status.stdout and str(sweep / "0") in status.stdout and str(sweep / "1") in status.stdout
