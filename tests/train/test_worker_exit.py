"""The torchrun worker entry ends without interpreter finalization (where gloo's threads can abort it)."""

from __future__ import annotations

import json
import subprocess
import sys

# Runs the worker entry as `python -m hpc_ft.train` would, with an exit hook that only finalization runs.
PROBE = r"""
import atexit, runpy, sys
atexit.register(lambda: print("FINALIZED", flush=True))
sys.argv = ["hpc_ft.train", sys.argv[1]]
runpy.run_module("hpc_ft.train", run_name="__main__")
"""


def test_worker_exits_with_trainings_code_and_skips_finalization(tmp_path, synth):
    from hpc_ft.config.compose import compose_conf
    from hpc_ft.job import resolve
    from hpc_ft.rundir.spec import spec_path, write_spec

    conf = compose_conf([*synth, "train.max_steps=3", "train.log_every_steps=1"], run_dir=tmp_path / "run")
    spec = resolve(conf)
    write_spec(spec)
    res = subprocess.run([sys.executable, "-c", PROBE, str(spec_path(spec))], capture_output=True, text=True,
                         timeout=120, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "FINALIZED" not in res.stdout  # os._exit: no finalization, so no abort from a late gloo thread
    assert "step 3:" in res.stdout  # what training printed was flushed before the exit
    train = json.loads((spec.run_dir / "nodes" / "node0" / "train.json").read_text())
    assert train["steps"] == 3
