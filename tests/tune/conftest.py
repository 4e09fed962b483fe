import os
import subprocess
import sys
from pathlib import Path

EXE = str(Path(sys.executable).with_name("hpc-ft"))
# The synthetic task as a trial: seconds each, evaluated every 25 of 200 steps, one worker, no telemetry.
TRIAL = ["model=mlp", "data=synthetic", "precision=fp32", "telemetry=off", "resources.workers_per_node=1",
         "resources.timeout_min=5", "executor.preempt_signal_delay_s=60", "train.max_steps=200",
         "train.eval_every_steps=25", "train.ckpt_every_steps=25", "train.log_every_steps=25",
         "train.warmup_steps=0", "tune.poll_interval_s=0.2"]


def tune(args, cwd, timeout_s=600):
    """`hpc-ft tune ARGS` as a user runs it; fails the test (not hangs) past ``timeout_s``."""
    return subprocess.run([EXE, "tune", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout_s,
                          stdin=subprocess.DEVNULL, env={**os.environ, "HYDRA_FULL_ERROR": "0"})


def study_trials(sweep_dir):
    """The search's trials as Optuna recorded them in the sweep dir's journal."""
    import optuna

    from hpc_ft.tune.driver import STUDY_NAME, journal_storage

    storage = journal_storage(Path(sweep_dir) / "tune.journal")
    return optuna.load_study(study_name=STUDY_NAME, storage=storage).get_trials(deepcopy=False)
