"""Every path in a run dir and a sweep dir. No other module spells one (tests/test_architecture.py checks).

A run dir (``run.dir``)::

    job.yaml                  the resolved JobSpec every node reads (job.YYYYmmdd-HHMMSS.yaml: an older one kept)
    metrics.jsonl             rank 0's training log, one JSON object per logged step (appended across requeues)
    progress.jsonl            a user's script's progress (hpc_ft.script_api.report): step, samples, tokens, metrics
    memory_estimate.json      the peak memory per worker estimated before submission (hpc_ft.estimate)
    checkpoints/step_N.pt     training checkpoints (hpc_ft.train.checkpoint names the files)
    nodes/rendezvous.json     node 0's rendezvous endpoint of the current attempt
    nodes/node{r}/            everything of node r:
        node_report.json        its NodeReport (written by the node, rewritten by the submitter's gather)
        train.json              the training result of its node-local rank 0 (TrainResult)
        attempt.json            which run of its job this is: job id, requeues so far (NodeAttempt)
        torchrun_argv.json      the torchrun command it ran;  torchrun.log  torchrun's output
        telemetry.bin, telemetry.N.bin   the sampler's series (one segment per requeue)
        held_at_step            a test hook's marker: training holds at a step
    results.json              every node's report, in node order, once gathered
    report/                   report.json and the PNG plots of `hpc-ft report`
    tensorboard/train/        rank 0's TensorBoard curves (loss, lr, throughput, eval metrics; hpc_ft.rundir.events)
    tensorboard/node{r}/      node r's telemetry curves (per GPU, host)
    mlruns/, mlflow_run.json  tracking=mlflow: the local MLflow store and the one MLflow run of this run dir
    submitit/                 submitit's folder (pickles, logs);  job.sbatch, slurm-JOBID.out: a script job
    .hpc_ft.lock, .hpc_ft.owner.json   the run-dir lock (hpc_ft.rundir.lock)
    .hpc_ft.stop              `hpc-ft tune` stopped this trial early (pruned): not requeued after its checkpoint
    .hpc_ft.cancel.json       `hpc-ft cancel` stopped job JOB_ID (CancelRecord): status says CANCELLED for that job

One naming scheme for a node: everything of node r lies under ``nodes/node{r}/``, its report included, so one
directory is what a node wrote (copy it, delete it, glob it). The directory keeps the name earlier versions
gave it (``node0``), so their telemetry series and logs are found as they are; only the report moved, from
``nodes/node_{r}.json`` beside it (``legacy_node_report_name``), where ``RunDir.node_report`` still reads it.

A sweep dir (Hydra's ``hydra.sweep.dir``)::

    manifest.json  plan.txt  report/sweep.json  .submitit/{array0,..,driver}/  N/ (one run dir per sweep job)
    tune.journal   a search's Optuna study (`hpc-ft tune`: JournalStorage, one file, no database server)
    report/tune_*.png   a search's plots
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

SPEC_FILE = "job.yaml"
METRICS_FILE = "metrics.jsonl"
PROGRESS_FILE = "progress.jsonl"  # a user's script's progress (hpc_ft.script_api); appended across requeues
MEMORY_ESTIMATE_FILE = "memory_estimate.json"
CHECKPOINT_DIR = "checkpoints"
NODES_DIR = "nodes"
RENDEZVOUS_FILE = "rendezvous.json"
RESULTS_FILE = "results.json"
REPORT_DIR = "report"
TENSORBOARD_DIR = "tensorboard"
TENSORBOARD_TRAIN = "train"
MLFLOW_STORE = "mlruns"
MLFLOW_RUN_FILE = "mlflow_run.json"
RUN_REPORT_FILE = "report.json"
SUBMITIT_DIR = "submitit"
SUBMITIT_SLURM_SCRIPT = "_submission.sh"  # submitit's JOBID_submission.sh: Slurm jobs only
SUBMITIT_LOG_EXTS = ("_log.out", "_log.err")  # submitit's JOBID_TASK_log.out/.err: each node task's output
CONTROLLER_LOG = "controller.log"  # in a submitit folder: a local job's controller output
SBATCH_SCRIPT = "job.sbatch"
SLURM_LOG = "slurm-%j.out"  # %j: sbatch's job id pattern
LOCK_FILE = ".hpc_ft.lock"
OWNER_FILE = ".hpc_ft.owner.json"
STOP_REQUEST_FILE = ".hpc_ft.stop"  # a search stopped this run early: its preemption checkpoint is not requeued
CANCEL_RECORD_FILE = ".hpc_ft.cancel.json"  # the user cancelled a job of this run dir (hpc-ft cancel)

NODE_REPORT_FILE = "node_report.json"
TRAIN_RESULT_FILE = "train.json"
NODE_ATTEMPT_FILE = "attempt.json"  # which run of its job the node is in (NodeAttempt: requeues so far)
TORCHRUN_ARGV_FILE = "torchrun_argv.json"
TORCHRUN_LOG = "torchrun.log"
HELD_MARKER = "held_at_step"
SERIES_GLOB = "telemetry*.bin"

MANIFEST_FILE = "manifest.json"
PLAN_FILE = "plan.txt"
SWEEP_REPORT_FILE = "sweep.json"
SWEEP_SUBMITIT_DIR = ".submitit"
TUNE_JOURNAL_FILE = "tune.journal"
TUNE_PLOTS = ("tune_metric_over_trials.png", "tune_metric_vs_params.png", "tune_curves.png")
EXPORT_DIR = "export"  # hpc-ft export's default output: export/step_<N> (Hugging Face format)

_NODE_DIR = re.compile(r"^node(\d+)$")
_LEGACY_NODE_REPORT = re.compile(r"^node_(\d+)\.json$")


def node_dir_name(rank: int) -> str:
    return f"node{rank}"


def legacy_node_report_name(rank: int) -> str:
    """Where versions before the run-dir contract put node ``rank``'s report: ``nodes/node_{rank}.json``."""
    return f"node_{rank}.json"


@dataclass(frozen=True)
class NodeDir:
    """``RUN_DIR/nodes/node{rank}/``: what one node writes."""

    path: Path
    rank: int

    @property
    def report(self) -> Path:
        return self.path / NODE_REPORT_FILE

    @property
    def train_result(self) -> Path:
        return self.path / TRAIN_RESULT_FILE

    @property
    def attempt(self) -> Path:
        return self.path / NODE_ATTEMPT_FILE

    @property
    def torchrun_argv(self) -> Path:
        return self.path / TORCHRUN_ARGV_FILE

    @property
    def torchrun_log(self) -> Path:
        return self.path / TORCHRUN_LOG

    @property
    def held_marker(self) -> Path:
        return self.path / HELD_MARKER

    def series_files(self) -> list[Path]:
        """The node's telemetry segments, oldest first (``telemetry.bin``, then ``telemetry.1.bin``, ...)."""
        return series_files(self.path)

    def new_series(self) -> Path:
        """``telemetry.bin``, or the next free ``telemetry.N.bin`` (a requeued node keeps its earlier segment)."""
        return new_series_path(self.path)


def controller_log(submitit_folder: str | os.PathLike) -> Path:
    """Where a local job's submitit controller writes its output, in that job's submitit folder."""
    return Path(submitit_folder) / CONTROLLER_LOG


def series_files(directory: str | os.PathLike) -> list[Path]:
    """The telemetry segments in ``directory`` (a node dir), oldest first."""
    def key(p: Path) -> tuple[int, str]:
        parts = p.name.split(".")
        return (int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else 0, p.name)

    return sorted(Path(directory).glob(SERIES_GLOB), key=key)


def new_series_path(directory: str | os.PathLike) -> Path:
    """The next free segment name in ``directory``: ``telemetry.bin``, then ``telemetry.1.bin``, ..."""
    directory = Path(directory)
    path, n = directory / "telemetry.bin", 0
    while path.exists():
        n += 1
        path = directory / f"telemetry.{n}.bin"
    return path


@dataclass(frozen=True)
class RunDir:
    """The paths of one run dir. Pure: building one touches no file."""

    path: Path

    def __init__(self, path: str | os.PathLike) -> None:
        object.__setattr__(self, "path", Path(path))

    @classmethod
    def of(cls, spec) -> "RunDir":
        """The run dir of a JobSpec (``spec.run_dir``; any object with that attribute)."""
        return cls(spec.run_dir)

    # -- the job --------------------------------------------------------------------------------------------
    @property
    def spec(self) -> Path:
        return self.path / SPEC_FILE

    @property
    def hydra_record(self) -> Path:
        """Hydra's record of the submission into the dir (``.hydra/hydra.yaml``; ``hydra.runtime.cwd``: the
        directory it was submitted from). Written by Hydra, not hpc_ft: absent from a Python API or tune trial."""
        return self.path / ".hydra" / "hydra.yaml"

    def spec_backup(self, stamp: str) -> Path:
        """Where an earlier, different job.yaml is kept aside (``stamp``: e.g. 20240101-100000)."""
        return self.path / f"job.{stamp}.yaml"

    @property
    def sbatch_script(self) -> Path:
        return self.path / SBATCH_SCRIPT

    @property
    def slurm_log(self) -> Path:
        """sbatch's --output pattern (``%j`` is the job id)."""
        return self.path / SLURM_LOG

    @property
    def submitit(self) -> Path:
        return self.path / SUBMITIT_DIR

    def slurm_log_of(self, job_id: str) -> Path:
        """The output of an ``hpc-ft sbatch`` script's job ``job_id`` (``slurm-JOBID.out``)."""
        return self.path / SLURM_LOG.replace("%j", str(job_id))

    def submitit_slurm_script(self, job_id: str) -> Path:
        """The batch script submitit wrote for Slurm job ``job_id`` (only Slurm jobs have one)."""
        return self.submitit / f"{job_id}{SUBMITIT_SLURM_SCRIPT}"

    def submitit_logs(self, job_id: str | None = None) -> list[Path]:
        """submitit's task logs (``JOBID_TASK_log.out``/``.err``; of ``job_id`` only when given), by name. A sweep
        job run as a task of a job array (a Slurm sweep, a search, a Hydra app's sweep) has its logs in the sweep's
        array folders (``SweepDir.array_submitit``): those of ``job_id`` are found there too."""
        pattern = f"{job_id}_*" if job_id else "*"
        folders = [self.submitit]
        if job_id:
            folders += sorted((self.path.parent / SWEEP_SUBMITIT_DIR).glob("array*"))
        return sorted(p for folder in folders for ext in SUBMITIT_LOG_EXTS for p in folder.glob(pattern + ext))

    @property
    def lock(self) -> Path:
        return self.path / LOCK_FILE

    @property
    def owner(self) -> Path:
        return self.path / OWNER_FILE

    # -- training -------------------------------------------------------------------------------------------
    @property
    def stop_request(self) -> Path:
        """Written by `hpc-ft tune` before it stops this run early: the node does not requeue it."""
        return self.path / STOP_REQUEST_FILE

    @property
    def cancel_record(self) -> Path:
        """Written by ``hpc-ft cancel`` (a CancelRecord): which job of this run dir the user cancelled."""
        return self.path / CANCEL_RECORD_FILE

    @property
    def memory_estimate(self) -> Path:
        """The memory estimate made before submission (hpc_ft.estimate.FitReport as JSON): the report sets the
        measured peak beside it."""
        return self.path / MEMORY_ESTIMATE_FILE

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINT_DIR

    @property
    def progress(self) -> Path:
        """A user's script's progress records (hpc_ft.script_api), one JSON object per line."""
        return self.path / PROGRESS_FILE

    # -- the nodes ------------------------------------------------------------------------------------------
    def export(self, step: int, merged: bool = False) -> Path:
        """Where ``hpc-ft export`` writes the model of checkpoint ``step`` by default (a LoRA run's adapter, or with
        ``merged`` the base with the adapter merged in: both can be exported side by side)."""
        return self.path / EXPORT_DIR / (f"step_{step:08d}" + ("_merged" if merged else ""))

    @property
    def nodes(self) -> Path:
        return self.path / NODES_DIR

    @property
    def rendezvous(self) -> Path:
        return self.nodes / RENDEZVOUS_FILE

    def node(self, rank: int) -> NodeDir:
        return NodeDir(self.nodes / node_dir_name(rank), rank)

    def node_report(self, rank: int) -> Path:
        """Node ``rank``'s report to read: ``nodes/node{rank}/node_report.json``, or where an earlier version
        wrote it (``nodes/node_{rank}.json``) when only that exists. Writers use ``node(rank).report``."""
        new = self.node(rank).report
        if not new.exists():
            old = self.nodes / legacy_node_report_name(rank)
            if old.exists():
                return old
        return new

    def node_ranks(self) -> set[int]:
        """Ranks of the nodes that left anything under ``nodes/`` (a dir, or an earlier version's report)."""
        ranks: set[int] = set()
        if self.nodes.is_dir():
            for p in self.nodes.iterdir():
                m = _NODE_DIR.match(p.name) or _LEGACY_NODE_REPORT.match(p.name)
                if m:
                    ranks.add(int(m.group(1)))
        return ranks

    # -- after the job --------------------------------------------------------------------------------------
    @property
    def results(self) -> Path:
        return self.path / RESULTS_FILE

    @property
    def report_dir(self) -> Path:
        return self.path / REPORT_DIR

    # -- experiment tracking --------------------------------------------------------------------------------
    @property
    def tensorboard(self) -> Path:
        """``tensorboard/``: point ``tensorboard --logdir`` here (one run per subdirectory)."""
        return self.path / TENSORBOARD_DIR

    @property
    def tensorboard_train(self) -> Path:
        """Rank 0's training curves."""
        return self.tensorboard / TENSORBOARD_TRAIN

    def tensorboard_node(self, rank: int) -> Path:
        """Node ``rank``'s telemetry curves."""
        return self.tensorboard / node_dir_name(rank)

    @property
    def mlflow_store(self) -> Path:
        """``tracking=mlflow``'s local file store (when ``tracking.mlflow_uri`` names no other)."""
        return self.path / MLFLOW_STORE

    @property
    def mlflow_run(self) -> Path:
        """The MLflow run this run dir logs to (its id and store), kept across requeues and resumes."""
        return self.path / MLFLOW_RUN_FILE

    @property
    def run_report(self) -> Path:
        return self.report_dir / RUN_REPORT_FILE


@dataclass(frozen=True)
class SweepDir:
    """The paths of one sweep dir (Hydra's multirun dir): its own files; each job's run dir is a RunDir."""

    path: Path

    def __init__(self, path: str | os.PathLike) -> None:
        object.__setattr__(self, "path", Path(path))

    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST_FILE

    @property
    def plan(self) -> Path:
        return self.path / PLAN_FILE

    @property
    def report_dir(self) -> Path:
        return self.path / REPORT_DIR

    @property
    def sweep_report(self) -> Path:
        return self.report_dir / SWEEP_REPORT_FILE

    @property
    def tune_journal(self) -> Path:
        """A search's Optuna study (JournalStorage's file)."""
        return self.path / TUNE_JOURNAL_FILE

    def tune_plot(self, i: int) -> Path:
        """The search's ``i``-th plot (TUNE_PLOTS) under report/."""
        return self.report_dir / TUNE_PLOTS[i]

    def array_submitit(self, group: int) -> Path:
        """submitit's folder of the sweep's ``group``-th Slurm job array."""
        return self.path / SWEEP_SUBMITIT_DIR / f"array{group}"

    @property
    def driver_submitit(self) -> Path:
        """submitit's folder of the detached local sweep driver."""
        return self.path / SWEEP_SUBMITIT_DIR / "driver"

    def job_run_dirs(self, max_depth: int = 3) -> list[Path]:
        """Run dirs below (subdirs holding job.yaml, the nearest level that has any), numerically ordered;
        [] when this is itself a run dir. Looks up to ``max_depth`` levels down (multirun/DATE/TIME/N)."""
        if (self.path / SPEC_FILE).exists():
            return []
        found: list[Path] = []
        for depth in range(1, max_depth + 1):
            found = [p.parent for p in self.path.glob("*/" * depth + SPEC_FILE)]
            if found:
                break

        def key(p: Path) -> tuple:
            return tuple((0, int(x), "") if x.isdigit() else (1, 0, x) for x in p.relative_to(self.path).parts)

        return sorted(found, key=key)

    def run_dirs_anywhere(self) -> list[Path]:
        """Every run dir at any depth below (a dir holding job.yaml), sorted by path."""
        return sorted(p.parent for p in self.path.rglob(SPEC_FILE))
