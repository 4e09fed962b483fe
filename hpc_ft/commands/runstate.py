"""Where a run or a sweep stands, from its run dir plus one scheduler query: ``hpc-ft status``, ``list``, ``cancel``.

Light on purpose (login nodes): no torch, no OmegaConf; of the executor registry only each executor's liveness
probe. ``job.yaml`` is read with PyYAML into ``SpecView`` (the few keys the commands show); the rest comes from
the run dir's records (owner, node reports, ``metrics.jsonl``, telemetry), the sweep's manifest beside it and,
for a Slurm job, one ``scontrol show job`` (``sacct`` once Slurm has forgotten the job).

The job of a run dir is the one its records name: the lock's owner record (a submission that holds the dir), else
the sweep manifest's entry for the dir (a job array's task: ``ARRAY_TASK``, the id Slurm lists it under; its nodes
only see the task's own number), else the node reports, else node 0's attempt record. How that id is found
(``probe``) is what the records say of the job's executor: the owner record's liveness probe, else that of
job.yaml's executor (``Executor.liveness``: ``slurm_job`` for Slurm, ``process`` for the local executor's
controller pid), else the sweep manifest's executor, else the files Slurm leaves (submitit's
``JOBID_submission.sh``, an sbatch script's ``slurm-JOBID.out``). Nothing in the records: ``none``, never a local
pid: only a record of the local executor's probe makes a job id a pid (``hpc-ft cancel`` signals nothing else).

A run dir whose only record is the batch script of ``hpc-ft sbatch`` (no job id, no ``slurm-JOBID.out``) names no
job: submitting the script writes nothing there until the job starts. One ``squeue`` tells a queued job of the
script from one never submitted (``NOT SUBMITTED``).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpc_ft.rundir.layout import RunDir, SweepDir
from hpc_ft.rundir.lock import (ACTIVE_SLURM_STATES, NO_PROBE, PROCESS, SLURM_JOB, LockOwner, RunDirLock,
                                detached_job_alive)
from hpc_ft.rundir.records import CancelRecord, NodeAttempt, NodeReport, RecordError, SweepManifest

SLURM_TIMEOUT_S = 20
# Slurm's states as status shows them (a job that has left Slurm's memory keeps its sacct state).
PENDING, RUNNING, COMPLETED, FAILED, PREEMPTED, CANCELLED, UNKNOWN = (
    "PENDING", "RUNNING", "COMPLETED", "FAILED", "PREEMPTED", "CANCELLED", "UNKNOWN")
# hpc_ft's own state: a search's trial the search stopped early (hpc-ft tune's pruner) at a checkpoint.
PRUNED = "PRUNED"
# hpc_ft's own state: an `hpc-ft sbatch` script no job of which has started, and none of which Slurm has queued.
NOT_SUBMITTED = "NOT SUBMITTED"
PROBE_NAMES = {SLURM_JOB: "Slurm", PROCESS: "local process"}  # how status names where a job runs
ARRAY_TASK_ID = re.compile(r"\d+_\d+")  # one task of a Slurm job array, as Slurm and submitit name it
# Hydra's Optuna sweeper (its plugin's package), as a job's .hydra/hydra.yaml names it in hydra.sweeper._target_.
OPTUNA_SWEEPER = "hydra_optuna_sweeper"
LIVE_STATES = ACTIVE_SLURM_STATES  # a job in one of them shows as pending or running


@dataclass(frozen=True)
class SpecView:
    """The keys of ``job.yaml`` the commands show (read without OmegaConf)."""

    name: str
    executor: str
    nodes: int
    gpus_per_node: int
    max_steps: int | None  # None for a user's script: its number of steps is its own (train.max_steps is the loop's)
    global_batch_size: int
    overrides: tuple[str, ...]
    hydra_app: str | None = None  # a job of the user's own Hydra app: the app's command (hpc-ft submit can't run it)
    tune_metric: str | None = None  # tune.metric: what a search over this job optimises (every job.yaml has one)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SpecView":
        """Raises OSError (no file) or ValueError (not a job.yaml)."""
        import yaml

        d = yaml.safe_load(Path(path).read_text())
        try:
            c = d["conf"]
            return cls(name=str(c["run"]["name"]), executor=str(c["executor"]["name"]),
                       nodes=int(c["resources"]["nodes"]), gpus_per_node=int(c["resources"]["gpus_per_node"]),
                       max_steps=None if _runs_a_script(c) else int(c["train"]["max_steps"]),
                       global_batch_size=int(c["train"].get("global_batch_size") or c["train"].get("batch_size")),
                       overrides=tuple(d.get("overrides") or ()),
                       hydra_app=(c.get("script") or {}).get("hydra_app") or None,
                       tune_metric=(c.get("tune") or {}).get("metric") or None)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a job.yaml of hpc_ft ({exc!r} missing)") from exc


def _runs_a_script(conf: dict) -> bool:
    """job.yaml's conf runs a user's script (script.path or script.module set; older job.yaml files have none).
    hpc_ft.config.script.uses_script's rule, on the plain dict status reads (importing hpc_ft.config would load the
    schema and its validation into every `hpc-ft status`)."""
    script = conf.get("script") or {}
    return bool(script.get("path") or script.get("module"))


def steps_text(st: "RunState") -> str:
    """``step/max_steps`` of a run (``-`` where unknown); a script's run shows its step alone."""
    step = st.step if st.step is not None else "-"
    if st.spec is not None and st.spec.max_steps is None:
        return str(step)
    return f"{step}/{st.spec.max_steps if st.spec else '-'}"


@dataclass(frozen=True)
class SlurmJob:
    """One Slurm job (or array task) as ``scontrol show job`` / ``sacct`` report it."""

    job_id: str  # 123, or 123_4 for an array task
    state: str  # Slurm's JobState: PENDING, RUNNING, COMPLETED, CANCELLED, ...
    reason: str | None = None  # why it pends (Resources, Priority, ...); None when it does not
    restarts: int = 0  # requeues so far


@dataclass
class NodeState:
    rank: int
    state: str  # running | completed | preempted | failed (exit N) | not started
    host: str | None = None
    steps: int | None = None


@dataclass
class RunState:
    """One run dir's state, as ``hpc-ft status`` and ``hpc-ft list`` show it."""

    run_dir: Path
    spec: SpecView | None
    job_id: str | None = None
    probe: str = NO_PROBE  # how its job is found: SLURM_JOB (a Slurm id), PROCESS (a local pid), NO_PROBE (none)
    state: str = UNKNOWN  # PENDING | RUNNING | COMPLETED | FAILED | PREEMPTED | PRUNED | CANCELLED | NOT SUBMITTED
    #                       | UNKNOWN
    reason: str | None = None  # Slurm's pending reason
    requeues: int = 0
    step: int | None = None
    samples_per_s: float | None = None
    eta_s: float | None = None
    nodes: list[NodeState] = field(default_factory=list)
    last_sample: dict[str, float] | None = None  # the newest telemetry row of node 0
    metric: tuple[str, float] | None = None  # a search's metric (tune.metric), else the task's first one
    gpu_hours: float | None = None
    wall_s: float | None = None
    updated_unix_s: float | None = None
    cancelled: bool = False  # `hpc-ft cancel` stopped this job (the run dir's CancelRecord); state CANCELLED

    @property
    def live(self) -> bool:
        return self.state in (PENDING, RUNNING)


# --- reading the run dir --------------------------------------------------------------------------------------

def _tail_records(path: Path, keep) -> list[dict[str, Any]]:
    """The JSON-object lines near the end of ``path`` for which ``keep(record)`` holds, newest first (read from its
    end: the file grows with the run); [] without the file."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            lines = f.read().splitlines()
    except OSError:
        return []
    out = []
    for line in reversed(lines):
        try:
            d = json.loads(line)
        except ValueError:
            continue  # a torn last line, or the cut first one
        if isinstance(d, dict) and keep(d):
            out.append(d)
    return out


def _last_metrics(path: Path) -> dict[str, Any] | None:
    """The last logging window of metrics.jsonl."""
    from hpc_ft.rundir.evals import EVAL_KEY

    # a logging window, not an evaluation
    found = _tail_records(path, lambda d: "step" in d and EVAL_KEY not in d)
    return found[0] if found else None


def _last_progress(path: Path) -> dict[str, Any] | None:
    """A user's script's last progress record (hpc_ft.script_api.report) as a logging window: its step, and its
    samples/s over the last two records that count samples (None without them)."""
    from hpc_ft.rundir.progress import rates

    found = _tail_records(path, lambda d: isinstance(d.get("step"), (int, float)))
    if not found:
        return None
    last = {"step": int(found[0]["step"])}
    numeric = (int, float)
    timed = [d for d in found if isinstance(d.get("samples"), numeric) and isinstance(d.get("time"), numeric)][:2]
    rate = rates(timed[::-1], "samples")  # the newest two, oldest first: the rule of a script's TrainResult
    if rate:
        last["samples_per_s"] = rate[-1]
    return last


def _node_reports(rd: RunDir) -> dict[int, NodeReport]:
    out: dict[int, NodeReport] = {}
    for rank in sorted(rd.node_ranks()):
        try:
            out[rank] = NodeReport.load(rd.node_report(rank))
        except (OSError, ValueError):
            continue
    return out


def local_requeues(rd: RunDir, job_id: str) -> int:
    """Requeues of local job ``job_id`` so far, from node 0's attempt record (0 without one, or when the record
    is of another job: a later submission into the same run dir starts its count again)."""
    try:
        attempt = NodeAttempt.load(rd.node(0).attempt)
    except (OSError, ValueError):  # RecordError is a ValueError
        return 0
    return attempt.requeues if attempt.job_id == job_id else 0


def last_telemetry(rd: RunDir, rank: int = 0) -> dict[str, float] | None:
    """The newest row of node ``rank``'s newest telemetry segment (None without one)."""
    files = rd.node(rank).series_files()
    if not files:
        return None
    from hpc_ft.telemetry.records import SeriesFile

    try:
        sf = SeriesFile(files[-1])
        if not sf.rows:
            return None
        import numpy as np

        with open(sf.path, "rb") as f:
            f.seek(sf.offset + (sf.rows - 1) * sf.dtype.itemsize)
            row = np.frombuffer(f.read(sf.dtype.itemsize), dtype=sf.dtype)[0]
        return {c: float(row[c]) for c in sf.cols}
    except (OSError, ValueError, KeyError):
        return None


def executor_probe(executor: str | None) -> str | None:
    """The liveness probe of the executor registered as ``executor`` (``Executor.liveness``: what its job ids are);
    None for no name or one this hpc_ft does not register. The registry loads no submitit and no torch."""
    if not executor:
        return None
    from hpc_ft.submit.executors import REGISTRY

    ex = REGISTRY.get(executor)
    return None if ex is None else ex.liveness


@dataclass(frozen=True)
class SweepEntryView:
    """What the manifest of the sweep a run dir belongs to says of the dir's job."""

    executor: str
    job_id: str | None


@functools.lru_cache(maxsize=8)
def _manifest_entries(path: str, mtime_ns: int, size: int) -> dict[str, SweepEntryView]:
    """The manifest at ``path`` by each job's resolved run dir (cached per version of the file: `hpc-ft list` and
    `hpc-ft status SWEEP_DIR` look up every job of a sweep in it)."""
    try:
        manifest = SweepManifest.load(path)
    except (OSError, ValueError):  # RecordError is a ValueError
        return {}
    return {str(Path(j.run_dir).resolve()): SweepEntryView(manifest.executor, j.job_id) for j in manifest.jobs}


def sweep_entry(rd: RunDir) -> SweepEntryView | None:
    """The entry for ``rd`` in the manifest of the sweep dir above it (Hydra's ``SWEEP_DIR/N``); None when there
    is none or it does not list the dir."""
    manifest = SweepDir(rd.path.parent).manifest
    try:
        st = manifest.stat()
    except OSError:
        return None
    return _manifest_entries(str(manifest), st.st_mtime_ns, st.st_size).get(str(rd.path.resolve()))


def slurm_files(rd: RunDir, job_id: str) -> bool:
    """Whether Slurm left a file of ``job_id`` in the run dir: submitit's ``JOBID_submission.sh`` or an sbatch
    script's ``slurm-JOBID.out`` (the records of run dirs older than job.yaml's executor)."""
    base = job_id.split("_")[0]
    return rd.submitit_slurm_script(base).exists() or rd.slurm_log_of(base).exists()


def job_probe(rd: RunDir, spec: SpecView | None, owner: LockOwner | None, job_id: str,
              entry: SweepEntryView | None = None) -> str:
    """How job ``job_id`` of this run dir is found (SLURM_JOB, PROCESS or NO_PROBE), from the records only (module
    docstring): ``owner`` when it names this job, else job.yaml's executor, else the sweep manifest's ``entry``,
    else Slurm's files. Never PROCESS without a record of an executor whose job ids are local pids."""
    if owner is not None and owner.job_id == job_id:
        return owner.liveness
    probe = executor_probe(spec.executor if spec else None) or executor_probe(entry.executor if entry else None)
    if probe is not None:
        return probe
    return SLURM_JOB if slurm_files(rd, job_id) else NO_PROBE


def where_text(st: "RunState") -> str:
    """Where the run's job runs, as status and cancel name it: Slurm, local process, or its executor's name."""
    if st.probe in PROBE_NAMES:
        return PROBE_NAMES[st.probe]
    return f"{st.spec.executor} executor" if st.spec is not None else "executor unknown"


def _recorded_job_id(rd: RunDir, owner: LockOwner | None, entry: SweepEntryView | None,
                     reports: dict[int, NodeReport]) -> str | None:
    """The job the run dir's records name (module docstring): the owner's, the sweep manifest's, a node report's,
    or node 0's attempt's."""
    if owner is not None and owner.job_id:
        return owner.job_id
    if entry is not None and entry.job_id:
        return entry.job_id
    reported = next((r.job_id for r in reports.values() if r.job_id), None)
    if reported:
        return reported
    try:
        return NodeAttempt.load(rd.node(0).attempt).job_id or None
    except (OSError, ValueError):  # RecordError is a ValueError
        return None


def pruned_by_search(rd: RunDir) -> bool:
    """A search (``hpc-ft tune``) asked the run's current job to stop early: its stop request
    (``RunDir.stop_request``) is newer than the job's start (``started_unix_s``); an older one was for an earlier
    job of the dir (a pruned trial the user resumed)."""
    try:
        requested = rd.stop_request.stat().st_mtime
    except OSError:
        return False
    return requested >= started_unix_s(rd.path)


def search_metric(rd: RunDir, spec: SpecView | None) -> str | None:
    """The metric a search optimised in this run (job.yaml's tune.metric), when the run is a search's: a trial of
    ``hpc-ft tune`` (its search dir's journal above it) or a job of Hydra's Optuna sweeper (the job's Hydra record
    names it); None for other runs, whose tune.metric is only the default."""
    if spec is None or not spec.tune_metric:
        return None
    if SweepDir(rd.path.parent).tune_journal.exists():
        return spec.tune_metric
    try:
        hydra_record = rd.hydra_record.read_text(errors="replace")
    except OSError:
        return None
    return spec.tune_metric if OPTUNA_SWEEPER in hydra_record else None


def _last_eval(path: Path, name: str) -> float | None:
    """The newest value of evaluation metric ``name`` near the end of ``metrics.jsonl`` (None without one)."""
    from hpc_ft.rundir.evals import EVAL_KEY, EvalPoint

    for rec in _tail_records(path, lambda d: EVAL_KEY in d):
        point = EvalPoint.from_record(rec)
        if point is not None and name in point.metrics:
            return point.metrics[name]
    return None


def run_metric(rd: RunDir, spec: SpecView | None, trains: list) -> tuple[str, float] | None:
    """The metric status and list show: a search's own (``search_metric``) from the training result, else from the
    newest evaluation in metrics.jsonl (a pruned or running trial); otherwise the task's first metric, an accuracy
    before the rest."""
    metrics = {k: v for k, v in trains[0].metrics.items() if v is not None} if trains else {}
    name = search_metric(rd, spec)
    if name is not None:
        value = metrics.get(name)
        if value is None:
            value = _last_eval(rd.metrics, name)
        if value is not None:
            return (name, float(value))
    metrics = {k: v for k, v in metrics.items() if not k.startswith("majority")}
    if not metrics:
        return None
    first = next(iter(sorted(metrics, key=lambda k: (not k.endswith("accuracy"), k))))
    return (first, metrics[first])


# --- asking Slurm ---------------------------------------------------------------------------------------------

def slurm_jobs(job_id: str) -> list[SlurmJob]:
    """Every job (array tasks each) Slurm knows under ``job_id``: ``scontrol show job``, else ``sacct`` once
    slurmctld has forgotten it. [] when neither knows it or Slurm's commands are missing; raises nothing."""
    if shutil.which("scontrol") is None:
        return []
    try:
        proc = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True,
                              timeout=SLURM_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if proc.returncode == 0 and proc.stdout.strip():
        return [_from_scontrol(line) for line in proc.stdout.splitlines() if line.strip()]
    return _sacct(job_id)


def queued_scripts() -> dict[Path, SlurmJob] | None:
    """This user's Slurm jobs by the path of their batch script (squeue's command, taken from the job's work dir
    when relative), the lowest job id of a script first: one ``squeue``. {} without Slurm's commands (nothing can
    have been submitted from here); None when squeue does not answer."""
    if shutil.which("squeue") is None:
        return {}
    try:
        proc = subprocess.run(["squeue", "-h", "-u", str(os.getuid()), "-o", "%i|%T|%r|%Z|%o"],
                              capture_output=True, text=True, timeout=SLURM_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    out: dict[Path, SlurmJob] = {}
    for line in proc.stdout.splitlines():
        parts = line.strip().split("|", 4)
        if len(parts) != 5 or not parts[0].isdigit():
            continue  # an array's tasks (123_4): hpc-ft sbatch writes no array
        job_id, state, reason, workdir, command = parts
        script = Path(os.path.normpath(os.path.join(workdir, command)))
        job = SlurmJob(job_id, state, reason if state == PENDING and reason not in ("", "None") else None)
        if script not in out or int(job_id) < int(out[script].job_id):
            out[script] = job
    return out


def _from_scontrol(line: str) -> SlurmJob:
    kv = dict(tok.split("=", 1) for tok in line.split() if "=" in tok)
    job_id = kv.get("JobId", "?")
    if kv.get("ArrayJobId") and kv.get("ArrayTaskId"):
        job_id = f"{kv['ArrayJobId']}_{kv['ArrayTaskId']}"
    state = kv.get("JobState", UNKNOWN)
    reason = kv.get("Reason")
    return SlurmJob(job_id, state, reason if state == PENDING and reason not in (None, "None") else None,
                    int(kv.get("Restarts", "0") or 0))


def _sacct(job_id: str) -> list[SlurmJob]:
    if shutil.which("sacct") is None:
        return []
    try:
        proc = subprocess.run(["sacct", "-n", "-D", "-X", "-P", "-j", job_id, "-o", "JobID,State"],
                              capture_output=True, text=True, timeout=SLURM_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return []
    runs: dict[str, list[str]] = {}
    for line in proc.stdout.splitlines():
        jid, _, state = line.partition("|")
        if jid.strip():
            runs.setdefault(jid.strip(), []).append(state.split()[0] if state.split() else UNKNOWN)
    # -D lists every run of a requeued job: the earlier ones as REQUEUED (or PREEMPTED), the last one last.
    return [SlurmJob(jid, states[-1], None, len(states) - 1) for jid, states in runs.items()]


# --- one run --------------------------------------------------------------------------------------------------

def cancelled_by_user(rd: RunDir, job_id: str | None, owner: LockOwner | None) -> bool:
    """``hpc-ft cancel`` recorded that it stopped job ``job_id`` of this run dir. A record of another job (an earlier
    one: this is a later submission into the dir), or of the same local pid submitted again (another owner start
    time), does not count; nor does an unreadable one."""
    try:
        rec = CancelRecord.load(rd.cancel_record)
    except (OSError, ValueError):  # RecordError is a ValueError
        return False
    if job_id is None or rec.job_id != job_id:
        return False
    return (rec.submitted_unix_s is None or owner is None or owner.job_id != job_id
            or owner.started_unix_s == rec.submitted_unix_s)


ENDED_STATES = (UNKNOWN, COMPLETED, CANCELLED, FAILED, "TIMEOUT")  # the node reports tell more than these


def ended_state(state: str, reports: list[NodeReport], cancelled: bool, pruned: bool = False) -> str:
    """The state of a run whose job is not alive (or not known to be): ``state`` (Slurm's final state, UNKNOWN
    without an answer) refined by the node reports, by ``cancelled`` (``cancelled_by_user``) and by ``pruned``
    (``pruned_by_search``).

    The user's cancel makes it CANCELLED, whatever stopped the nodes (a script dies of the SIGTERM: "failed"; the
    loop checkpoints: "preempted") and without asking Slurm, unless every node completed (the cancel came as the
    job finished). Slurm's CANCELLED stays. Otherwise the reports say COMPLETED, PREEMPTED (every node finished
    or stopped at a checkpoint: resumable; Slurm's COMPLETED covers that too) or FAILED; PREEMPTED is PRUNED when
    a search stopped the job (a trial that trained to its end before the stop reached it is COMPLETED, as the
    search counts it).
    """
    if cancelled and not (reports and all(r.ok for r in reports)):
        return CANCELLED
    if state not in ENDED_STATES or state == CANCELLED or not reports:
        return state
    if all(r.ok for r in reports):
        return COMPLETED
    if all(r.ok or r.resumable for r in reports):
        return PRUNED if pruned else PREEMPTED
    return FAILED


def _node_state(report: NodeReport | None, rank: int, rd: RunDir, live: bool, cancelled: bool = False,
                pruned: bool = False) -> NodeState:
    if report is not None and not live:
        state = ("completed" if report.ok else ("pruned" if pruned else "preempted") if report.resumable else
                 f"{'cancelled' if cancelled else 'failed'} (exit {report.exit_code})")
        return NodeState(rank, state, report.host, report.train.steps if report.train else None)
    started = rd.node(rank).torchrun_log.exists()
    return NodeState(rank, "running" if live and started else "pending" if live else "not started")


def run_state(path: str | os.PathLike, query_slurm: bool = True) -> RunState:
    """The state of the run dir ``path`` (see ``RunState``); ``query_slurm=False`` skips the Slurm query
    (``hpc-ft list`` asks once for all runs). Raises nothing for a partial or old run dir."""
    rd = RunDir(path)
    try:
        spec: SpecView | None = SpecView.load(rd.spec)
    except (OSError, ValueError):
        spec = None
    st = RunState(rd.path, spec)
    owner = RunDirLock(rd.path).read_owner()
    if owner is not None and spec is not None and owner.executor != spec.executor:
        owner = None  # an earlier submission's record: job.yaml is another executor's job (a sweep's, say)
    entry = sweep_entry(rd)
    if entry is not None and spec is not None and entry.executor != spec.executor:
        entry = None  # the manifest is of another sweep into this dir
    reports = _node_reports(rd)
    st.job_id = _recorded_job_id(rd, owner, entry, reports)
    if st.job_id:
        st.probe = job_probe(rd, spec, owner, st.job_id, entry)
    alive = None
    if st.probe == SLURM_JOB and query_slurm:
        jobs = slurm_jobs(st.job_id)
        if jobs:
            job = jobs[0]
            if ARRAY_TASK_ID.fullmatch(job.job_id):  # asked by a task's own number: the array's name of it
                st.job_id = job.job_id
            st.reason, st.requeues = job.reason, job.restarts
            alive = job.state in LIVE_STATES
            st.state = PENDING if job.state == PENDING else RUNNING if alive else job.state
    elif st.probe == PROCESS and owner is not None and owner.job_id == st.job_id and owner.liveness == PROCESS:
        alive = bool(detached_job_alive(owner))
        st.state = RUNNING if alive else UNKNOWN
    if st.probe == PROCESS and st.job_id:
        st.requeues = local_requeues(rd, st.job_id)
    if not alive:
        by_user = cancelled_by_user(rd, st.job_id, owner)
        st.state = ended_state(st.state, list(reports.values()), by_user, pruned_by_search(rd))
        st.cancelled = by_user and st.state == CANCELLED
    n_nodes = spec.nodes if spec else max(reports, default=-1) + 1
    st.nodes = [_node_state(reports.get(r), r, rd, bool(alive), st.cancelled, st.state == PRUNED)
                for r in range(n_nodes)]
    last = _last_metrics(rd.metrics)
    if last is None and spec is not None and spec.max_steps is None:  # a user's script: its own progress records
        last = _last_progress(rd.progress)
    if last is not None:
        st.step = int(last["step"])
        st.samples_per_s = last.get("samples_per_s")
        if alive and spec and spec.max_steps and st.samples_per_s:
            st.eta_s = max(0, spec.max_steps - st.step) * spec.global_batch_size / st.samples_per_s
    trains = [r.train for r in reports.values() if r.train]
    if trains:
        st.step = max(st.step or 0, max(t.steps for t in trains))
    st.metric = run_metric(rd, spec, trains)
    if reports:
        st.wall_s = max(r.wall_s for r in reports.values())
        if spec and spec.gpus_per_node:  # a CPU job used no GPU-hours: "-", not 0.00
            st.gpu_hours = sum(r.wall_s for r in reports.values()) * spec.gpus_per_node / 3600
    elif alive and owner is not None:
        st.wall_s = time.time() - owner.started_unix_s
    st.last_sample = last_telemetry(rd) if alive else None
    mtimes = [p.stat().st_mtime for p in (rd.metrics, rd.spec) if p.exists()]
    st.updated_unix_s = max(mtimes) if mtimes else None
    if query_slurm:
        apply_sbatch_queue([st])
    return st


def unstarted_sbatch_script(st: RunState) -> bool:
    """The run dir of ``st`` holds an ``hpc-ft sbatch`` script and nothing of a job: no job id (owner record, node
    reports) and no ``slurm-JOBID.out`` (Slurm writes it when a job of the script starts)."""
    rd = RunDir(st.run_dir)
    return (st.job_id is None and st.state == UNKNOWN and rd.sbatch_script.exists()
            and not any(rd.path.glob(rd.slurm_log_of("*").name)))


def apply_sbatch_queue(states: list[RunState]) -> None:
    """The state of each run whose only record is its ``hpc-ft sbatch`` script (``unstarted_sbatch_script``): the
    job Slurm has of that script (its id, PENDING with the reason, or RUNNING before node 0 has recorded it); else
    CANCELLED when ``hpc-ft cancel`` stopped a job of it before it started (its CancelRecord), else NOT_SUBMITTED.
    Left UNKNOWN when squeue does not answer. One ``squeue`` for all of them, none without them."""
    waiting = [st for st in states if unstarted_sbatch_script(st)]
    if not waiting:
        return
    queued = queued_scripts()
    if queued is None:
        return
    for st in waiting:
        rd = RunDir(st.run_dir)
        job = queued.get(Path(os.path.abspath(rd.sbatch_script))) or queued.get(rd.sbatch_script.resolve())
        if job is not None:
            st.job_id, st.probe = job.job_id, SLURM_JOB
            _apply_job(st, job)
            continue
        try:
            st.job_id, st.probe = CancelRecord.load(rd.cancel_record).job_id, SLURM_JOB
            st.state, st.cancelled = CANCELLED, True
        except (OSError, ValueError):  # no record (RecordError is a ValueError): Slurm has no job of it
            st.state = NOT_SUBMITTED


# --- finding runs ---------------------------------------------------------------------------------------------

def find_run_dirs(roots: list[Path]) -> list[Path]:
    """Every run dir (a dir holding job.yaml) at any depth below ``roots``: outputs/DATE/TIME, a dir named with
    ``hydra.run.dir=outputs/NAME``, a sweep's or a search's jobs (``hpc-ft list`` and ``hpc-ft status``)."""
    return find_runs_and_sweeps(roots)[0]


def find_runs_and_sweeps(roots: list[Path]) -> tuple[list[Path], list[Path]]:
    """One walk of each root: (the run dirs ``find_run_dirs`` returns; every dir below a root holding a sweep's
    manifest), each sorted. A root that is itself a run dir is the one run found in it (what is below is its own
    files); manifests below it are still found. Symlinked dirs are not followed and unreadable dirs are passed
    over, as ``Path.rglob`` does."""
    spec_name, manifest_name = RunDir(".").spec.name, SweepDir(".").manifest.name
    runs: set[Path] = set()
    sweeps: set[Path] = set()
    for r in roots:
        run_root = RunDir(r).spec.exists()
        if run_root:
            runs.add(r)
        if not r.is_dir():
            continue
        for dirpath, _, files in os.walk(r):
            if spec_name in files and not run_root:
                runs.add(Path(dirpath))
            if manifest_name in files:
                sweeps.add(Path(dirpath))
    return sorted(runs), sorted(sweeps)


def started_unix_s(path: str | os.PathLike) -> float:
    """When the run in ``path`` last started (seconds since the epoch): the latest of its submission (the owner
    record's start, held while a submission or a detached job holds the dir), node 0's start (its attempt record,
    rewritten when each run of its job starts) and job.yaml's time (written when it is submitted; kept when a
    resubmission writes the same job). 0.0 when none can be read: its own times, not its dir's name or time."""
    rd = RunDir(path)
    times = []
    owner = RunDirLock(rd.path).read_owner()
    if owner is not None:
        times.append(owner.started_unix_s)
    try:
        times.append(NodeAttempt.load(rd.node(0).attempt).started_unix_s)
    except (OSError, ValueError):  # RecordError is a ValueError
        pass
    try:
        times.append(rd.spec.stat().st_mtime)
    except OSError:
        pass
    return max(times, default=0.0)


# --- sweeps ---------------------------------------------------------------------------------------------------

def is_sweep_dir(path: str | os.PathLike) -> bool:
    return SweepDir(path).manifest.exists() or (not RunDir(path).spec.exists() and bool(SweepDir(path).job_run_dirs()))


def sweep_states(path: str | os.PathLike) -> tuple[SweepManifest | None, list[RunState]]:
    """The sweep's manifest (None when unreadable) and the state of each of its run dirs, with one Slurm query
    per job array."""
    sd = SweepDir(path)
    try:
        manifest: SweepManifest | None = SweepManifest.load(sd.manifest)
    except (OSError, ValueError, RecordError):
        manifest = None
    run_dirs = [Path(j.run_dir) for j in manifest.jobs] if manifest else sd.job_run_dirs()
    states = [run_state(p, query_slurm=False) for p in run_dirs]
    if manifest:
        for st, job in zip(states, manifest.jobs):
            # The sweep's own id of each job: a Slurm array task's is ARRAY_TASK (its nodes see another).
            st.job_id = job.job_id or st.job_id
            if st.job_id and st.probe == NO_PROBE:  # no job.yaml yet: the manifest's executor tells
                st.probe = executor_probe(manifest.executor) or NO_PROBE
    apply_slurm(states)
    for st in states:  # a Slurm array task's cancel record names the sweep's id of it (ARRAY_TASK)
        if not st.live and st.state not in (COMPLETED, CANCELLED) and cancelled_by_user(RunDir(st.run_dir),
                                                                                        st.job_id, None):
            st.state, st.cancelled = CANCELLED, True
    return manifest, states


def apply_slurm(states: list[RunState]) -> None:
    """Fill the Slurm state of every Slurm run in ``states``: one query per job (array) id."""
    by_base: dict[str, list[RunState]] = {}
    for st in states:
        if st.probe == SLURM_JOB and st.job_id:
            by_base.setdefault(st.job_id.split("_")[0], []).append(st)
    for base, group in by_base.items():
        jobs = {j.job_id: j for j in slurm_jobs(base)}
        for st in group:
            job = jobs.get(st.job_id) or _pending_array_task(jobs, st.job_id)
            if job is not None:
                _apply_job(st, job)


def _apply_job(st: RunState, job: SlurmJob) -> None:
    """What Slurm says of ``st``'s job: pending or running (each node too), or its final state where the run dir
    told none."""
    st.reason, st.requeues = job.reason, job.restarts
    if job.state in LIVE_STATES:
        st.state = PENDING if job.state == PENDING else RUNNING
        st.nodes = [NodeState(n.rank, "running" if st.state == RUNNING else "pending") for n in st.nodes]
    elif st.state == UNKNOWN:
        st.state = job.state


def _pending_array_task(jobs: dict[str, SlurmJob], job_id: str) -> SlurmJob | None:
    """A pending array task is listed in a range (``123_[4-9%2]``): the entry whose range holds ``job_id``."""
    base, _, task = job_id.partition("_")
    if not task.isdigit():
        return None
    for jid, job in jobs.items():
        b, _, rng = jid.partition("_")
        if b != base or not rng.startswith("["):
            continue
        for part in rng.strip("[]").split("%")[0].split(","):
            lo, _, hi = part.partition("-")
            if lo.isdigit() and int(lo) <= int(task) <= int(hi or lo):
                return job
    return None
