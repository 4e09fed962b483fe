"""Imports flow one way (DESIGN.md: ``errors <- config <- job <- rundir <- {node, telemetry, train} <- submit <-
{sweep, tune} <- cli``), without cycles, and the login-node commands never load torch.

The test reads every module of ``hpc_ft`` and ``hydra_plugins`` with ``ast``: imports at module top, inside
functions and under ``if TYPE_CHECKING:`` alike (an import inside a function is still a dependency, only a
later one). Each module belongs to the layer of its top-level package (``hpc_ft.sched.lp`` -> ``sched``); a
module may import its own package and any package of a LOWER layer, never one of its own layer or above.

The layers, bottom to top (``LAYERS`` below):

====  ==========================================  =====================================================
rank  packages                                    why there
====  ==========================================  =====================================================
0     ``hpc_ft`` (the package root), ``errors``,  paths, the version, exceptions, exit statuses; the
      ``script_api``, ``terminal``                contract a user's script imports (nothing of hpc_ft);
                                                  the console the commands print to
1     ``config``                                  structured configs and their validation
2     ``job``                                     the resolved JobSpec
3     ``rundir``                                  the run-dir contract: paths, atomic writes, records
4     ``telemetry``, ``data``                     what runs under a node task: the sampler, file datasets
5     ``train``                                   the loop and its tasks (which read ``data``)
6     ``node``                                    the node task: runs the sampler and torchrun (and, for
                                                  the debug executor, the loop in-process)
7     ``report``, ``estimate``, ``sched``         read specs and records, never launch anything
8     ``submit``                                  executors, sbatch rendering, gathering
9     ``sweep``, ``tune``                         sweeps and searches: plan, then submit
10    ``commands``, ``hydra_plugins``             the commands and Hydra's launcher: print, compose Hydra
11    ``cli``                                     the ``hpc-ft`` entry point, dispatching to commands
12    ``testing``                                 fixtures for tests and benchmarks; nothing imports it
====  ==========================================  =====================================================

The documented ``{node, telemetry, train}`` is split in three (ranks 4 to 6) because the node task starts the
sampler and the training loop, and the loop's tasks read file datasets; ``telemetry`` and ``train`` never import ``node``. Two rules are narrower than
the ranks:

- ``telemetry`` imports nothing of the job (``ONLY``): the node task hands it paths and intervals.
- ``report``, ``estimate`` and ``sched`` import nothing from ``node`` (``READ_FROM_NODE`` is empty): the records
  they read (NodeReport, TrainResult) live in ``rundir/records.py``, never with the code that launches.

Only ``hpc_ft/rundir/`` spells a path in a run dir or a sweep dir (``test_only_rundir_spells_run_dir_paths``): the
names are read from ``hpc_ft.rundir.layout``'s constants, so a name added there is guarded at once.

Import cycles between modules fail too (a package's ``__init__`` counts as imported with any of its
modules), except ``KNOWN_CYCLES``, which must still exist so the exception cannot outlive its fix.

Executors differ in one place (issue 11 part 2): outside the registry package ``hpc_ft/submit/executors/``, no
code compares ``executor.name`` with anything, nor any value with an executor's name (the ``name:`` of each
``conf/executor/*.yaml``); it asks the registry (``executor_named``/``executor_of``) instead.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hpc_ft", "hydra_plugins")

LAYERS: list[tuple[str, ...]] = [
    ("hpc_ft", "errors", "script_api", "terminal"),
    ("config",),
    ("job",),
    ("rundir",),
    ("telemetry", "data"),
    ("train",),
    ("node",),
    ("report", "estimate", "sched"),
    ("submit",),
    ("sweep", "tune"),
    ("commands", "hydra_plugins"),
    ("cli",),
    ("testing",),
]
RANK = {pkg: rank for rank, layer in enumerate(LAYERS) for pkg in layer}

# Packages that may import only these (their own package aside), whatever their rank allows.
ONLY = {"telemetry": {"hpc_ft", "errors", "rundir"}}
# The readers of records take from the node layer only its records.
READERS = ("report", "estimate", "sched")
READ_FROM_NODE: set[str] = set()

# Cycles not yet broken. Each entry must still be a cycle (remove it with the commit that breaks it).
KNOWN_CYCLES: list[set[str]] = []

HEAVY = ("torch", "pynvml", "datasets", "peft")

# The one package allowed to tell executors apart by name.
EXECUTOR_REGISTRY = ROOT / "hpc_ft" / "submit" / "executors"
# Name comparisons not yet moved into the registry, each with the reason. Each must still compare names (remove
# it with the commit that moves it), so the exception cannot outlive its fix.
KNOWN_NAME_COMPARISONS: set[str] = set()  # none left: the run-dir lock asks Executor.liveness


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of PACKAGES (a package is its ``__init__.py``)."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def imported_names(name: str, path: Path) -> list[tuple[str, int]]:
    """(dotted name, line) of every import in the module, wherever it stands; relative imports resolved."""
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from pkg import sub` imports the module pkg.sub when there is one, else a name of pkg.
            out += [(f"{mod}.{alias.name}", node.lineno) for alias in node.names] or [(mod, node.lineno)]
    return out


def project_target(imported: str, modules: dict[str, Path]) -> str | None:
    """The project module an imported dotted name loads (the longest module prefix), or None if external."""
    parts = imported.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in modules:
            return candidate
    return None


def import_graph() -> tuple[dict[str, Path], dict[str, dict[str, int]]]:
    """Every module's direct project imports: ``graph[importer][imported] = line of the first such import``."""
    modules = module_files()
    graph: dict[str, dict[str, int]] = {m: {} for m in modules}
    for name, path in modules.items():
        for imported, line in imported_names(name, path):
            target = project_target(imported, modules)
            if target is not None and target != name:
                graph[name].setdefault(target, line)
    return modules, graph


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "hydra_plugins":
        return "hydra_plugins"
    return parts[1] if len(parts) > 1 else "hpc_ft"


def test_every_package_has_a_layer():
    modules, _ = import_graph()
    missing = sorted({layer_of(m) for m in modules} - set(RANK))
    assert not missing, f"add {missing} to LAYERS in tests/test_architecture.py (and to the docstring's table)"


def test_imports_follow_the_layers():
    modules, graph = import_graph()
    bad = []
    for importer, targets in sorted(graph.items()):
        mine = layer_of(importer)
        where = modules[importer].relative_to(ROOT)
        for target, line in sorted(targets.items()):
            theirs = layer_of(target)
            if theirs == mine:
                continue
            if RANK[theirs] >= RANK[mine]:
                bad.append(f"{where}:{line}: {importer} ({mine}, layer {RANK[mine]}) imports {target} "
                           f"({theirs}, layer {RANK[theirs]}): only lower layers may be imported")
            elif mine in ONLY and theirs not in ONLY[mine]:
                bad.append(f"{where}:{line}: {importer} imports {target}: {mine} may import only "
                           f"{sorted(ONLY[mine])}")
            elif mine in READERS and theirs == "node" and target not in READ_FROM_NODE:
                bad.append(f"{where}:{line}: {importer} imports {target}: {mine} reads records and never "
                           f"launches; from node it may import only {sorted(READ_FROM_NODE)}")
    assert not bad, "imports against the documented order:\n" + "\n".join(bad)


def _with_parents(target: str, importer: str) -> list[str]:
    """Loading ``target`` runs its parent packages' __init__ first (those not already loading ``importer``)."""
    parts = target.split(".")
    chain = [".".join(parts[:n]) for n in range(1, len(parts) + 1)]
    return [m for m in chain if not (importer == m or importer.startswith(m + "."))]


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components of more than one module (iterative: no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.add(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(comp)
    return out


def module_cycles() -> list[set[str]]:
    _, graph = import_graph()
    loads = {m: {p for t in targets for p in _with_parents(t, m)} - {m} for m, targets in graph.items()}
    return strongly_connected(loads)


def test_no_import_cycles_but_the_known_one():
    cycles = module_cycles()
    unknown = [sorted(c) for c in cycles if c not in KNOWN_CYCLES]
    assert not unknown, f"import cycles: {unknown}"
    gone = [sorted(k) for k in KNOWN_CYCLES if k not in cycles]
    assert not gone, f"{gone} is no longer a cycle: remove it from KNOWN_CYCLES"


def test_checker_sees_upward_imports_and_cycles_anywhere_in_a_module(tmp_path):
    """The reader is not blind to function-level or relative imports (what the checks above rely on)."""
    pkg = tmp_path / "hpc_ft"
    (pkg / "sched").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sched" / "__init__.py").write_text("from .a import f\n")
    (pkg / "sched" / "a.py").write_text("def f():\n    from hpc_ft.sched import b\n    from .. import cli\n")
    (pkg / "sched" / "b.py").write_text("from hpc_ft.sched.a import f\n")
    (pkg / "cli.py").write_text("")
    names = {n for n, _ in imported_names("hpc_ft.sched.a", pkg / "sched" / "a.py")}
    assert names == {"hpc_ft.sched.b", "hpc_ft.cli"}
    graph = {"hpc_ft.sched.a": {"hpc_ft.sched.b"}, "hpc_ft.sched.b": {"hpc_ft.sched.a"}, "hpc_ft.cli": set()}
    assert strongly_connected(graph) == [{"hpc_ft.sched.a", "hpc_ft.sched.b"}]
    assert _with_parents("hpc_ft.sched.b", "hpc_ft.sched.a") == ["hpc_ft.sched.b"]
    assert _with_parents("hpc_ft.config.schema", "hpc_ft.sched.a") == ["hpc_ft.config", "hpc_ft.config.schema"]


# -- the run-dir contract: only hpc_ft/rundir/ spells a path in a run dir or a sweep dir ------------------------
PATH_SOURCES = ("hpc_ft", "hydra_plugins", "benchmarks")
PATH_CALLS = {"glob", "rglob", "joinpath", "with_name", "open", "Path"}  # calls whose string argument is a path


def run_dir_names() -> tuple[set[str], set[str]]:
    """(file names, directory names) of the layout: every upper-case string constant of hpc_ft.rundir.layout
    (a glob pattern stands for its fixed prefix). File names have a dot; directory names ("nodes") are also
    ordinary words, so they count only where a path is built."""
    tree = ast.parse((ROOT / "hpc_ft" / "rundir" / "layout.py").read_text())
    names = set()
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id.isupper() and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)):
            names.add(node.value.value.split("*")[0].split("%")[0].rstrip("."))
    return {n for n in names if "." in n.strip(".")}, {n for n in names if "." not in n.strip(".")}


def _path_like(text: str) -> list[str]:
    """The components of ``text`` when it reads as a path (no spaces), else []."""
    return [] if not text or any(c.isspace() for c in text) else [p for p in text.split("/") if p]


def spelled_run_dir_paths(path: Path, files: set[str], dirs: set[str]) -> list[tuple[int, str]]:
    """(line, literal) of every run-dir path a module spells: a layout file name in a path-like string, a layout
    directory name where a path is built (``x / "nodes"``, ``.glob("nodes/...")``), or a node directory or
    report built from its rank (``f"node{r}"``, ``f"node_{r}.json"``)."""
    tree = ast.parse(path.read_text(), str(path))
    in_path_context: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            in_path_context |= {id(node.left), id(node.right)}
        elif isinstance(node, ast.Call):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""
            if name in PATH_CALLS:
                in_path_context |= {id(a) for a in node.args}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = node.values
            for a, b in zip(parts, parts[1:]):
                if (isinstance(a, ast.Constant) and isinstance(b, ast.FormattedValue)
                        and _path_like(a.value) and _path_like(a.value)[-1] in ("node", "node_")):
                    found.append((node.lineno, a.value + "{...}"))
            texts = [v for v in parts if isinstance(v, ast.Constant)]
            context = id(node) in in_path_context
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            texts, context = [node], id(node) in in_path_context
        else:
            continue
        for t in texts:
            comps = _path_like(t.value)
            if any(c in files or any(c.startswith(f) and f.startswith("telemetry") for f in files) for c in comps) \
                    or (context and any(c in dirs for c in comps)):
                found.append((t.lineno, t.value))
    return found


def test_only_rundir_spells_run_dir_paths():
    files, dirs = run_dir_names()
    assert {"job.yaml", "train.json", "metrics.jsonl", "results.json", "manifest.json", "plan.txt"} <= files
    assert {"checkpoints", "nodes", "report", "submitit"} <= dirs
    bad = []
    for pkg in PATH_SOURCES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if path.is_relative_to(ROOT / "hpc_ft" / "rundir"):
                continue
            bad += [f"{path.relative_to(ROOT)}:{line}: {text!r}" for line, text in spelled_run_dir_paths(path, files,
                                                                                                          dirs)]
    assert not bad, ("run-dir paths spelled outside hpc_ft/rundir/ (use RunDir / NodeDir / SweepDir of "
                     "hpc_ft.rundir.layout):\n" + "\n".join(bad))


def test_path_checker_sees_every_spelling_and_not_prose(tmp_path):
    files, dirs = run_dir_names()
    mod = tmp_path / "m.py"
    mod.write_text(textwrap.dedent("""
        a = run_dir / "train.json"
        b = run_dir / "nodes" / f"node{rank}"
        c = open(f"{run_dir}/metrics.jsonl")
        d = run_dir.glob("nodes/node_*.json")
        e = f"node_{rank}.json"
        f = {"nodes": 2, "report": True}  # keys, not paths
        g = "pass a run dir (with job.yaml)"  # prose
    """))
    lines = sorted({line for line, _ in spelled_run_dir_paths(mod, files, dirs)})
    assert lines == [2, 3, 4, 5, 6], spelled_run_dir_paths(mod, files, dirs)
def executor_names(root: Path = ROOT) -> set[str]:
    """The executor names users can pick: ``name:`` of every conf/executor/*.yaml."""
    import yaml

    return {yaml.safe_load(p.read_text())["name"] for p in sorted((root / "conf" / "executor").glob("*.yaml"))}


def _is_executor_name(node: ast.AST) -> bool:
    """``<anything>.executor.name`` or ``executor.name``."""
    if not (isinstance(node, ast.Attribute) and node.attr == "name"):
        return False
    owner = node.value
    return (isinstance(owner, ast.Attribute) and owner.attr == "executor") or \
        (isinstance(owner, ast.Name) and owner.id == "executor")


def _names_an_executor(node: ast.AST, names: set[str]) -> bool:
    """A string constant that is an executor's name, or a tuple/list/set literal holding one."""
    items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return any(isinstance(i, ast.Constant) and isinstance(i.value, str) and i.value in names for i in items)


def executor_name_comparisons(source: str, names: set[str]) -> list[int]:
    """Lines of ``source`` that tell executors apart by name: a comparison (==, !=, in, not in, is) of
    ``executor.name`` with anything or of anything with an executor's name, and ``case "<name>":``."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(_is_executor_name(o) or _names_an_executor(o, names) for o in operands):
                lines.append(node.lineno)
        elif isinstance(node, ast.MatchValue) and _names_an_executor(node.value, names):
            lines.append(node.lineno)
    return sorted(lines)


def test_only_the_executor_registry_compares_executor_names():
    names = executor_names()
    assert {"local", "debug", "slurm"} <= names
    bad, known = [], set()
    for name, path in sorted(module_files().items()):
        if path.is_relative_to(EXECUTOR_REGISTRY):
            continue
        where = str(path.relative_to(ROOT))
        lines = executor_name_comparisons(path.read_text(), names)
        if where in KNOWN_NAME_COMPARISONS:
            if lines:
                known.add(where)
            continue
        bad += [f"{where}:{line}" for line in lines]
    gone = sorted(KNOWN_NAME_COMPARISONS - known)
    assert not gone, f"{gone} no longer compare executor names: remove them from KNOWN_NAME_COMPARISONS"
    assert not bad, ("executor names compared outside hpc_ft/submit/executors/ (ask the registry: "
                     "executor_of(conf).<what differs>, see docs/architecture.md):\n" + "\n".join(bad))


def test_checker_sees_every_way_of_comparing_executor_names():
    """The name check is not blind to the forms the code base used before the registry (what it relies on)."""
    names = {"local", "debug", "slurm"}
    src = textwrap.dedent("""
        if spec.conf.executor.name == "debug": pass        # 2
        if ex.name in ("local", "debug"): pass             # 3
        local = executor == "local"                        # 4
        if conf.executor.name != other: pass               # 5
        match kind:
            case "slurm": pass                             # 7
        if p.name == "multirun.yaml" or x in ("a", "b"): pass
        host = "localhost" if r == 0 else "slurm-node"
    """)
    assert executor_name_comparisons(src, names) == [2, 3, 4, 5, 7]


# --help, a dry run, sbatch rendering and planning run on login nodes: none of them may load torch or NVML.
# (tests/test_cli.py times --help and the dry run through `python -m hpc_ft.cli`; this adds sbatch, plan, the
# launcher's and planner's modules, and NVML, in one process.)
LOGIN_NODE_CHECK = textwrap.dedent("""
    import contextlib, io, json, sys
    import hpc_ft.cli, hpc_ft.commands.plan, hpc_ft.sched, hpc_ft.submit.sbatch, hpc_ft.submit.describe
    import hpc_ft.submit.dispatch, hpc_ft.sweep.plan, hpc_ft.report, hydra_plugins.hpc_ft_launcher.launcher
    codes = []
    for argv in (["--help"], ["submit", "dry_run=true", "model=mlp", "data=synthetic"],
                 ["sbatch", "executor=slurm", "model=mlp", "data=synthetic"],
                 ["plan", "-m", "optim.lr=1e-5,3e-5", "sched.est_duration_h=1", "--no-queue"]):
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                codes.append(hpc_ft.cli.main(argv))
            except SystemExit as exc:  # argparse's --help
                codes.append(exc.code)
    print(json.dumps({"codes": codes, "loaded": [m for m in HEAVY if m in sys.modules]}))
""")


def test_login_node_commands_load_no_torch(tmp_path):
    code = f"HEAVY = {HEAVY!r}\n" + LOGIN_NODE_CHECK
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["codes"] == [0, 0, 0, 0], res.stderr[-3000:]
    assert out["loaded"] == [], f"loaded by --help, a dry run, sbatch or plan: {out['loaded']}"


# A dry run of model=hf on data=files checks the checkpoint (config.json, read as JSON) and the files (read through
# `datasets`, which imports no torch, so the row counts are the ones training sees) and builds the task for its
# data settings: none of it may load torch or transformers (the task plug-ins import torch only to make tensors).
FILES_DRY_RUN_CHECK = textwrap.dedent("""
    import contextlib, io, json, sys
    import hpc_ft.cli
    with contextlib.redirect_stdout(io.StringIO()):
        code = hpc_ft.cli.main(sys.argv[1:])
    print(json.dumps({"code": code, "loaded": [m for m in HEAVY if m in sys.modules]}))
""")


@pytest.mark.parametrize("task", ["sequence_classification", "causal_lm"])
def test_a_dry_run_of_model_hf_on_files_loads_no_torch(task, tmp_path):
    from hpc_ft.testing.hf_models import tiny_bert, write_jsonl

    model = tiny_bert(tmp_path / "bert")
    rows = write_jsonl(tmp_path / "rows.jsonl", [{"text": f"example number {i}", "label": i % 2} for i in range(40)])
    argv = ["submit", "dry_run=true", f"task={task}", "model=hf", f"model.path={model}", "data=files",
            f"data.path={rows}", "data.text_field=text", "data.max_length=32", "train.global_batch_size=8"]
    argv += ["data.label_field=label"] if task == "sequence_classification" else []
    heavy = tuple(m for m in HEAVY if m != "datasets") + ("transformers",)
    code = f"HEAVY = {heavy!r}\n" + FILES_DRY_RUN_CHECK
    env = {**os.environ, "HPC_FT_DATA_CACHE": str(tmp_path / "data_cache")}
    res = subprocess.run([sys.executable, "-c", code, *argv], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["code"] == 0, res.stderr[-3000:]
    assert out["loaded"] == [], f"loaded by a model=hf data=files dry run: {out['loaded']}"
