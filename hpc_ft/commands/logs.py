"""`hpc-ft logs RUN_DIR [--node N] [-f]`: a run's logs: the node task's output (submitit's task log, or an
sbatch script's slurm-JOBID.out) and torchrun's (every worker's output, rank 0's training log among it).

``-f`` follows them while the job is pending or running (as ``tail -f``), and returns once it has ended and
everything is printed (or on Ctrl-C). No torch.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hpc_ft.commands.runstate import run_state

EXIT_BAD_INPUT = 2
POLL_S = 0.5
STATE_EVERY_S = 2.0  # how often -f asks whether the job still runs (a Slurm query each time)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hpc-ft logs", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", help="the run dir")
    p.add_argument("--node", type=int, default=0, help="the node's rank (default 0)")
    p.add_argument("-f", "--follow", action="store_true", help="follow the logs until the job ends")
    return p


def log_files(run_dir: Path, node: int, job_id: str | None) -> list[Path]:
    """The node's log files, node task first, then torchrun's (existing ones only, or to come with -f)."""
    from hpc_ft.rundir.layout import RunDir

    rd = RunDir(run_dir)
    files: list[Path] = []
    if job_id:
        base = job_id.split("_")[0]
        files += [p for p in rd.submitit_logs(job_id) if p.name.split("_")[-2] == str(node)]
        files += [rd.slurm_log_of(base)] if node == 0 and rd.slurm_log_of(base).exists() else []
    files.append(rd.node(node).torchrun_log)
    return files


class _Follower:
    """Prints what each file gained since the last call, with a header when the file changes."""

    def __init__(self) -> None:
        self.offsets: dict[Path, int] = {}
        self.current: Path | None = None

    def drain(self, files: list[Path]) -> None:
        for f in files:
            try:
                with open(f, "rb") as fh:
                    fh.seek(self.offsets.get(f, 0))
                    data = fh.read()
            except OSError:
                continue
            if not data:
                continue
            self.offsets[f] = self.offsets.get(f, 0) + len(data)
            if f != self.current:
                sys.stdout.write(f"==> {f} <==\n")
                self.current = f
            sys.stdout.write(data.decode(errors="replace"))
        sys.stdout.flush()


def logs_main(argv: list[str]) -> int:
    """Print (and with -f follow) a run's logs; 0, or 2 when RUN_DIR is not a run dir or the node is not one."""
    args = _parser().parse_args(argv)
    from hpc_ft.rundir.layout import RunDir

    run_dir = Path(args.run_dir)
    if not RunDir(run_dir).spec.exists():
        print(f"error: {run_dir}: not a run dir (no job.yaml). Fix: pass the run dir hpc-ft submit printed "
              "(hpc-ft list shows them)", file=sys.stderr)
        return EXIT_BAD_INPUT
    st = run_state(run_dir)
    nodes = st.spec.nodes if st.spec else 1
    if not 0 <= args.node < nodes:
        which = "--node 0" if nodes == 1 else f"a --node from 0 to {nodes - 1}"
        print(f"error: --node {args.node}: this run has {nodes} node(s), numbered from 0. Fix: pass {which}",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    follower = _Follower()
    follower.drain(log_files(run_dir, args.node, st.job_id))
    if not args.follow:
        if follower.current is None:
            print(f"no logs yet for node {args.node} of {run_dir} ({st.state})")
        return 0
    try:
        checked = time.monotonic()
        while st.live:
            time.sleep(POLL_S)  # polling a file: no event to wait on across hosts (shared file systems)
            follower.drain(log_files(run_dir, args.node, st.job_id))
            if time.monotonic() - checked >= STATE_EVERY_S:
                st, checked = run_state(run_dir), time.monotonic()
        follower.drain(log_files(run_dir, args.node, st.job_id))
    except KeyboardInterrupt:
        return 0
    return 0
