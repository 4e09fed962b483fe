"""A per-user cache of Hydra's composed config, so that a login-node command does not compose it again.

Composing conf/ (the defaults tree over 13 groups, about 25 YAML files and the structured schema, merged and
checked) is 0.10 s of a 0.35 s ``hpc-ft submit dry_run=true`` on a 2-core Xeon, the one part of a cold start that
hpc_ft can spare: Hydra's imports and its own set-up are what a bare Hydra app pays too. The composition is a pure
function of what it reads, so hpc_ft keeps its result and hands Hydra a copy of it when nothing it read has
changed.

What it reads, and so the key and the fingerprint of an entry:

* the key: the config name, the command line's overrides, the run mode, the search path as Hydra set it up, the
  working directory (``hydra.runtime.cwd``), and the versions of Python, Hydra and OmegaConf;
* the fingerprint, checked on every hit: the name and content of every file under each config source the
  composition used (``hydra.runtime.config_sources``: conf/, Hydra's own configs, a ``--config-dir`` or
  ``hydra.searchpath`` of the user's), and the size and modification time of the Python files that register
  structured configs (hpc_ft's schema, every ``hydra_plugins`` package).

Not kept (composed by Hydra every time): a composition that warned (its warnings are shown each time), one that
copies environment variables into the job (``hydra.job.env_copy``), a config source other than a directory or a
package, one with more than ``MAX_FILES_PER_SOURCE`` files, and anything Hydra refused. Interpolations (the run
dir's time, ``oc.env``) stay unresolved in the cached config, as Hydra leaves them, and resolve at their use.

The cache is a directory of pickles, ``$HPC_FT_CACHE_DIR`` or ``${XDG_CACHE_HOME:-~/.cache}/hpc_ft/compose``, made
private (0700); a file is read only when the user owns it and neither it nor its directory is writable by others
(a pickle runs code when loaded). ``HPC_FT_COMPOSE_CACHE=off`` turns the cache off. It holds at most
``MAX_ENTRIES`` entries (the least recently used go first) and can be deleted at any time.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import stat
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

from hpc_ft.rundir.atomic import atomic_write

FORMAT = 1  # bump when an entry's layout changes: older entries then miss
MAX_ENTRIES = 64
MAX_FILES_PER_SOURCE = 500  # a config dir this large (a whole repository?) is composed, not walked every time
OFF_VALUES = {"0", "off", "false", "no"}


def cache_dir() -> Path:
    """Where entries live: ``$HPC_FT_CACHE_DIR``, else ``${XDG_CACHE_HOME:-~/.cache}/hpc_ft/compose``."""
    if os.environ.get("HPC_FT_CACHE_DIR"):
        return Path(os.environ["HPC_FT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hpc_ft" / "compose"


def enabled() -> bool:
    """False when ``HPC_FT_COMPOSE_CACHE`` is 0/off/false/no."""
    return os.environ.get("HPC_FT_COMPOSE_CACHE", "on").strip().lower() not in OFF_VALUES


@contextlib.contextmanager
def cached_composition(before_compose: Callable[[], None] | None = None) -> Iterator[None]:
    """While inside, Hydra's ``ConfigLoaderImpl.load_configuration`` answers from the cache when it can.

    ``before_compose`` (at most once) runs before Hydra composes, and not on a hit: registering hpc_ft's schema in
    Hydra's ConfigStore (``OmegaConf.structured`` over every JobConf field) is a tenth of a cached dry run, and only
    a composition reads it. A caller whose Hydra reads the ConfigStore otherwise (``--info``) registers up front.
    For single runs only (the caller's choice): a multirun's per-job compositions copy the sweep's resolver cache
    from the master config (``load_sweep_config``) and stay Hydra's. Without the cache (turned off, or a Hydra
    whose internals moved) Hydra's own path runs.
    """
    pending = [before_compose] if before_compose is not None else []

    def prepare() -> None:
        while pending:
            pending.pop()()

    try:
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
    except ImportError:  # pragma: no cover - a Hydra without the internal class: its own path
        prepare()
        yield
        return
    if not enabled() or not callable(getattr(ConfigLoaderImpl, "load_configuration", None)):
        prepare()
        yield
        return
    original = ConfigLoaderImpl.load_configuration

    def load_configuration(self, config_name, overrides, run_mode, from_shell=True, validate_sweep_overrides=True):
        def compose():
            prepare()
            return original(self, config_name=config_name, overrides=overrides, run_mode=run_mode,
                            from_shell=from_shell, validate_sweep_overrides=validate_sweep_overrides)

        return _cached(self, compose, (config_name, list(overrides), str(run_mode), from_shell,
                                       validate_sweep_overrides))

    ConfigLoaderImpl.load_configuration = load_configuration  # type: ignore[method-assign]
    try:
        yield
    finally:
        ConfigLoaderImpl.load_configuration = original  # type: ignore[method-assign]


def _cached(loader: Any, compose, call: tuple) -> Any:
    try:
        key = _key(loader, call)
    except Exception:  # noqa: BLE001 - a search path this module cannot read: Hydra composes
        return compose()
    path = cache_dir() / (hashlib.sha256(repr(key).encode()).hexdigest()[:40] + ".pkl")
    hit = _read(path, key)
    if hit is not None:
        return hit
    with warnings.catch_warnings(record=True) as caught:
        cfg = compose()  # Hydra's refusal propagates as it would without the cache
    for w in caught:  # shown as they would have been, and the composition is not kept
        warnings.showwarning(w.message, w.category, w.filename, w.lineno, w.file, w.line)
    if not caught:
        _store(path, key, cfg)
    return cfg


def _key(loader: Any, call: tuple) -> tuple:
    import hydra
    import omegaconf

    search_path = tuple((e.provider, e.path) for e in loader.get_search_path().get_path())
    return (FORMAT, call, search_path, os.getcwd(), sys.version, hydra.__version__, omegaconf.__version__)


def _read(path: Path, key: tuple) -> Any | None:
    """The entry's config if it is ours, whole, for this key and still fresh; None otherwise (never raises)."""
    try:
        if not _private(path.parent) or not _private(path):
            return None
        with open(path, "rb") as f:
            entry = pickle.load(f)
        if entry.get("key") != key or entry.get("fingerprint") != _fingerprint(entry["sources"]):
            return None
        with contextlib.suppress(OSError):  # a read-only cache still answers
            os.utime(path)  # recently used: pruned last
        return pickle.loads(entry["config"])  # a fresh copy: Hydra and the job change the one they get
    except Exception:  # noqa: BLE001 - a torn, foreign or stale entry is a miss; the next store replaces it
        return None


def _store(path: Path, key: tuple, cfg: Any) -> None:
    """Keep ``cfg`` under ``path`` (atomically); quietly nothing when it cannot or should not be kept."""
    try:
        hydra = cfg.hydra
        if len(hydra.job.env_copy) > 0:
            return  # env_set holds this shell's values
        sources = [(s.schema, s.path) for s in hydra.runtime.config_sources]
        fingerprint = _fingerprint(sources)
        if fingerprint is None:
            return
        blob = pickle.dumps({"key": key, "sources": sources, "fingerprint": fingerprint,
                             "config": pickle.dumps(cfg, protocol=pickle.HIGHEST_PROTOCOL)},
                            protocol=pickle.HIGHEST_PROTOCOL)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _private(path.parent):
            return
        atomic_write(path, lambda f: f.write(blob))  # a reader sees the old entry or the new one, never half of one
        _prune(path.parent)
    except Exception:  # noqa: BLE001 - an unwritable cache costs a composition, nothing else
        return


def _private(p: Path) -> bool:
    st = os.stat(p)
    return st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _prune(directory: Path) -> None:
    entries = sorted(directory.glob("*.pkl"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for old in entries[MAX_ENTRIES:]:
        old.unlink(missing_ok=True)


def _fingerprint(sources: list[tuple[str, str]]) -> str | None:
    """sha256 over every config source's files (names and contents) and the structured configs' Python files
    (names, sizes, modification times); None when a source cannot be fingerprinted (then nothing is cached)."""
    h = hashlib.sha256()
    for schema, where in sources:
        if schema == "structured":
            continue  # ConfigStore: its Python files below
        directory = _source_dir(schema, where)
        if directory is None:
            return None
        h.update(f"{schema}://{where}\0".encode())
        files = _files(directory, suffixes=None)
        if files is None:
            return None
        for f in files:
            h.update(f"{f.relative_to(directory)}\0".encode())
            h.update(f.read_bytes())
    code = _structured_config_files()
    if code is None:
        return None
    for f in code:
        st = f.stat()
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()


def _source_dir(schema: str, where: str) -> Path | None:
    if schema == "file":
        return Path(where)
    if schema == "pkg":
        import importlib.util

        spec = importlib.util.find_spec(where.replace("/", "."))
        locations = list(spec.submodule_search_locations or []) if spec else []
        return Path(locations[0]) if len(locations) == 1 else None
    return None


def _files(directory: Path, suffixes: tuple[str, ...] | None) -> list[Path] | None:
    out: list[Path] = []
    if not directory.is_dir():
        return out  # a search path entry that does not exist: Hydra found nothing there either
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        out.extend(Path(root) / n for n in sorted(names) if suffixes is None or n.endswith(suffixes))
        if len(out) > MAX_FILES_PER_SOURCE:
            return None
    return out


def _structured_config_files() -> list[Path] | None:
    """hpc_ft's schema and every hydra_plugins package (where launchers and sweepers register their configs)."""
    from hpc_ft.config import schema

    out = [Path(schema.__file__)]
    try:
        import hydra_plugins

        roots = sorted({str(p) for p in hydra_plugins.__path__ if os.path.isdir(p)})
    except ImportError:  # pragma: no cover - hpc_ft ships a hydra_plugins package
        roots = []
    for root in roots:
        files = _files(Path(root), suffixes=(".py",))
        if files is None:
            return None
        out.extend(files)
    return out
