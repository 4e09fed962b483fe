"""The README stays true: the two-command quick start, CI running its test command, its examples composing."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _bash_blocks(text: str) -> list[list[str]]:
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [[ln for ln in b.splitlines() if ln.strip() and not ln.lstrip().startswith("#")] for b in blocks]


def _quick_start() -> list[str]:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    (block,) = _bash_blocks(section)
    return block


def test_quick_start_is_exactly_two_commands():
    install_and_run, run_tests = _quick_start()
    assert "pip install" in install_and_run and install_and_run.rstrip().endswith("hpc-ft submit")
    assert "pytest" in run_tests


def test_ci_runs_the_readme_test_command_verbatim():
    test_cmd = _quick_start()[1].strip()
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [ln.strip() for ln in ci.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert test_cmd in commands, f".ci/run must run the README's test command {test_cmd!r}"
    assert "set -euo pipefail" in ci
    # CI installs through the project's own files exactly as the README's first command does.
    for piece in ("python3 -m venv .venv", "pip install", "torch==2.13.0", "-e '.[test]'", "--no-deps",
                  "hydra-optuna-sweeper==1.3.0"):
        assert piece in _quick_start()[0] and piece in ci, piece


def _submit_examples() -> list[list[str]]:
    out = []
    for block in _bash_blocks(README):
        for line in block:
            line = line.split("  #")[0].strip()
            if line.startswith("hpc-ft submit") and "my_" not in line and "--cfg" not in line and " -m " not in line:
                out.append(shlex.split(line)[2:])
    return out


@pytest.mark.parametrize("overrides", _submit_examples(), ids=lambda o: " ".join(o) or "default")
def test_readme_submit_examples_compose_and_validate(overrides, tmp_path, run_cli):
    res = run_cli("submit", *overrides, "dry_run=true", f"hydra.run.dir={tmp_path}", timeout_s=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert not (tmp_path / "job.yaml").exists()  # a dry run dispatches nothing


@pytest.mark.slow
def test_the_from_python_example_runs_as_written(tmp_path):
    """README "From Python": the block, verbatim, in a fresh interpreter (its run dir lands under tmp_path)."""
    import subprocess
    import sys

    section = README[README.index("### From Python"):]
    code = section[section.index("```python") + len("```python"):section.index("```", section.index("```python") + 9)]
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    assert res.stdout.split()[:3] == ["0", "0", "5"], res.stdout  # node 0, exit 0, 5 steps
    assert (tmp_path / "outputs" / "from-python" / "job.yaml").exists()


def test_the_config_groups_line_names_every_option_in_conf():
    para = README[README.index("Config groups:"):]
    para = para[:para.index("\n\n")].replace("\n", " ")
    listed = {g: {o.strip() for o in opts.split(",")} for g, opts in re.findall(r"`(\w+)` \(([\w, ]+)\)", para)}
    for group in sorted(p for p in (ROOT / "conf").iterdir() if p.is_dir() and not p.name.startswith("hpc_ft")):
        options = {f.stem for f in group.glob("*.yaml")}
        assert f"`{group.name}`" in para, group.name
        if len(options) > 1:
            assert listed.get(group.name) == options, (group.name, listed.get(group.name), options)


def test_the_slurm_tests_share_one_xdist_worker(request, tmp_path):
    """The README's test command runs two workers; the one local Slurm cluster is a session fixture per worker, so
    every test that uses it must land in the same worker (``--dist loadgroup`` groups by ``xdist_group``). Checked
    in a real two-worker session with tests/conftest.py as its plugin: xdist reads the group in a worker's own
    collection hook, so the mark must be set before it runs."""
    (tmp_path / "test_grouped.py").write_text(textwrap.dedent("""\
        import os

        import pytest


        @pytest.mark.slurm
        @pytest.mark.parametrize("i", range(8))
        def test_on_slurm(i):
            with open(os.environ["GROUP_LOG"], "a") as f:
                f.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")


        @pytest.mark.parametrize("i", range(8))
        def test_elsewhere(i):
            pass
        """))
    log = tmp_path / "workers.txt"
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadgroup", "-p", "tests.conftest",
                          "-p", "no:cacheprovider", "-W", "ignore::pytest.PytestUnknownMarkWarning", "test_grouped.py"],
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT), "GROUP_LOG": str(log)},
                         capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stdout + res.stderr
    workers = log.read_text().split()
    assert len(workers) == 8 and len(set(workers)) == 1, workers
    assert "loadgroup" in request.config.getini("addopts")