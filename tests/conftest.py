"""Shared helpers: run the real `hpc-ft` console script with a timeout, poll with a deadline, find a job's processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

# The synthetic task: seconds to train; lr raised so 20 steps separate the clusters.
SYNTH = ["model=mlp", "data=synthetic", "precision=fp32", "optim.lr=0.01", "train.max_steps=20",
         "train.ckpt_every_steps=5", "train.eval_every_steps=0", "train.warmup_steps=2", "telemetry=off"]


def hpc_ft_cmd(*args: str, env: dict[str, str] | None = None, timeout_s: float = 300,
               cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``hpc-ft ARGS`` as a user would; fails the test (not hangs) past ``timeout_s``."""
    exe = Path(sys.executable).with_name("hpc-ft")
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([str(exe), *args], env=full_env, capture_output=True, text=True, timeout=timeout_s,
                          cwd=cwd, stdin=subprocess.DEVNULL)


@pytest.fixture
def run_cli():
    """``run_cli(*args, env=..., timeout_s=...)`` runs the real hpc-ft command."""
    return hpc_ft_cmd


@pytest.fixture
def synth() -> list[str]:
    """Overrides selecting the seconds-long synthetic task."""
    return list(SYNTH)


def wait_until(predicate, timeout_s: float, what: str, poll_s: float = 0.2):
    """Poll ``predicate`` until it returns something truthy (returned); fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)
    return value


def job_processes(spec_path: Path) -> dict[int, tuple[list[str], dict[str, str]]]:
    """pid -> (argv, env) of every process whose command line names this job's spec."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().decode().split("\0")[:-1]
            if str(spec_path) not in argv:
                continue
            env_items = Path(f"/proc/{entry}/environ").read_bytes().decode().split("\0")
        except OSError:
            continue
        out[int(entry)] = (argv, dict(e.split("=", 1) for e in env_items if "=" in e))
    return out


def kill_job_processes(spec_path: Path) -> None:
    """SIGKILL whatever still runs of the job (a test's clean-up: a failed test leaves no held job behind)."""
    import contextlib
    import signal

    for pid in job_processes(spec_path):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def torchrun_agent(spec_path: Path) -> int | None:
    """The pid of the job's torchrun (it forwards a signal to every worker), or None."""
    return next((pid for pid, (argv, _) in job_processes(spec_path).items() if "torch.distributed.run" in argv), None)


@pytest.fixture
def in_process():
    """Undo what an in-process training run sets process-wide (signal handlers, torch threads) once the test is
    done (tests that run hpc_ft's Trainer in the pytest process)."""
    import signal

    import torch

    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR2)}
    threads = torch.get_num_threads()
    yield
    for s, h in handlers.items():
        signal.signal(s, h)
    torch.set_num_threads(threads)


def execute_notebook(path: Path, workdir: Path, env_var: str) -> tuple[str, int]:
    """Run the notebook at ``path`` top to bottom with ``env_var`` set to ``workdir`` (its kernel inherits the
    environment) and ``workdir`` as its working directory; returns (all its text output, the PNG images it shows).
    Fails the test on any cell's error output; the kernel gets 120 s to start and each cell 300 s."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    before = os.environ.get(env_var)
    os.environ[env_var] = str(workdir)
    try:
        NotebookClient(nb, timeout=300, startup_timeout=120, kernel_name="python3",
                       resources={"metadata": {"path": str(workdir)}}).execute()
    finally:
        if before is None:
            os.environ.pop(env_var, None)
        else:
            os.environ[env_var] = before
    text, images = [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", out
            text.append(out.get("text", "") or out.get("data", {}).get("text/plain", ""))
            images += "image/png" in out.get("data", {})
    return "\n".join(text), images


def pytest_configure(config):
    """hpc_ft's compose cache (hpc_ft/commands/compose_cache.py) in this session's own directory, not the user's
    ~/.cache: every hpc-ft the tests run, in-process or not, shares it (so the suite exercises cache hits) and
    leaves nothing behind."""
    if "HPC_FT_CACHE_DIR" not in os.environ:
        import tempfile

        os.environ["HPC_FT_CACHE_DIR"] = config._hpc_ft_cache_dir = tempfile.mkdtemp(prefix="hpc_ft-compose-")


def pytest_unconfigure(config):
    made = getattr(config, "_hpc_ft_cache_dir", None)
    if made:
        import shutil

        shutil.rmtree(made, ignore_errors=True)
        os.environ.pop("HPC_FT_CACHE_DIR", None)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (the README's test command runs two workers), every test of the one local Slurm
    cluster runs in the same worker (``--dist loadgroup``): the cluster is a session fixture, started once per
    worker, and two workers would start, share and stop it under each other. First among the hooks: a worker's
    xdist reads ``xdist_group`` in its own hook of this name, registered after this file, hence called before it
    unless this one asks to go first (without, the Slurm tests spread over both workers and two clusters start).
    pytest 9.2 breaks the grouping itself (pytest-xdist issue #1386: the group suffix it writes into the node id no
    longer takes), hence ``pytest<9.2`` in pyproject.toml; tests/test_readme.py checks the grouping for real."""
    for item in items:
        if item.get_closest_marker("slurm"):
            item.add_marker(pytest.mark.xdist_group("slurm"))
