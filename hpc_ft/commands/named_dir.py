"""A run dir the user named with ``hydra.run.dir=``, as it was before a command that then wrote nothing of its own.

Hydra makes the run dir and writes ``.hydra/`` (the composed config, the overrides) and its job log before hpc_ft's
checks run. In a timestamped dir of its own making that is harmless: a refused job's dir is removed
(``hpc_ft.cli``). A named dir may hold an earlier run, whose ``.hydra/config.yaml`` a refused resubmission would
overwrite with the refused config; and one the command created would stay behind, empty. So the CLI takes a
``NamedRunDir.before(argv)`` before Hydra runs and calls ``put_back`` when the job was refused or was a dry run.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from hpc_ft.rundir.atomic import atomic_write


def names_run_dir(arg: str) -> bool:
    """``arg`` sets Hydra's run dir: ``hydra.run.dir=...``, or ``++hydra.run.dir=...`` (Hydra's force-add, which
    sets an existing key too)."""
    return arg.startswith(("hydra.run.dir=", "++hydra.run.dir="))


@dataclass
class NamedRunDir:
    path: Path  # absolute
    created_from: Path | None  # the outermost directory this command creates (path or a parent); None: path existed
    names: frozenset[str]  # the entries of path before the command
    hydra_files: dict[str, dict[str, tuple[bytes, int]]]  # subdir -> {file name: (bytes, mode)}, for Hydra's subdirs

    @classmethod
    def before(cls, argv: list[str], hydra_subdirs: tuple[str, ...] = (".hydra",)) -> "NamedRunDir | None":
        """The dir ``hydra.run.dir=`` (or ``++hydra.run.dir=``) names in ``argv`` as it is now; None for a sweep (``-m``), no such override,
        or a value Hydra has yet to resolve (``${...}``)."""
        if any(a in ("-m", "--multirun") for a in argv):
            return None
        values = [a.split("=", 1)[1] for a in argv if names_run_dir(a)]
        if not values or "${" in values[-1]:
            return None
        value = values[-1]
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        path = Path(value).expanduser().absolute()
        if not path.exists():
            created = path
            while not created.parent.exists():
                created = created.parent
            return cls(path, created, frozenset(), {})
        files = {}
        for sub in hydra_subdirs:
            d = path / sub
            if d.is_dir():
                files[sub] = {p.name: (p.read_bytes(), p.stat().st_mode & 0o7777) for p in d.iterdir() if p.is_file()}
        return cls(path, None, frozenset(p.name for p in path.iterdir()) if path.is_dir() else frozenset(), files)

    def put_back(self, out: Path, hydra_own: set[str]) -> None:
        """Undo what Hydra wrote into ``out`` (the job's output dir, if it is this dir) for a job that ran nothing:
        a dir this command created goes, with the parents it created, while it holds only Hydra's own files
        (``hydra_own``: ``.hydra``, the job log, the lock); in an existing dir ``.hydra/`` gets its files back and
        Hydra's own new entries go. Anything else in the dir is left alone."""
        out = Path(out).absolute()
        if out != self.path or not out.is_dir():
            return
        if self.created_from is not None:
            if any(p.name not in hydra_own for p in out.iterdir()):
                return
            shutil.rmtree(out, ignore_errors=True)
            for parent in out.parents:
                if self.created_from != parent and self.created_from not in parent.parents:
                    break  # above what this command created
                try:
                    parent.rmdir()
                except OSError:
                    break
            return
        for p in out.iterdir():
            if p.name in hydra_own and p.name not in self.names:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        for sub, files in self.hydra_files.items():
            d = out / sub
            if d.is_dir():
                for p in d.iterdir():
                    if p.is_file() and p.name not in files:
                        p.unlink()
            for name, (data, mode) in files.items():
                atomic_write(d / name, lambda f, data=data: f.write(data))
                os.chmod(d / name, mode)
