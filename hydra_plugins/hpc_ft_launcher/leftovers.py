"""What a refused sweep of a Hydra app leaves: nothing it made.

Hydra's sweeper makes the sweep dir (``multirun/DATE/TIME`` by default) and writes its ``multirun.yaml`` there after
the launcher's ``setup`` and before its ``launch``, which is where the launcher refuses a bad request. So ``setup``
notes which directories of the sweep dir's path are missing (``missing_from``); a refusal removes them again
(``discard``) when the sweep dir holds nothing but that file. Anything that existed before, or holds anything else,
is left alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

# Hydra's record of the command, written by its sweeper into every sweep dir (not a file of hpc_ft's run dirs).
HYDRA_MULTIRUN_RECORD = "multirun.yaml"


def missing_from(path: Path) -> Optional[Path]:
    """The outermost directory on ``path`` (absolute) that does not exist yet, ``path`` itself when only it is
    missing; None when ``path`` exists (nothing of it would be this launch's)."""
    if path.exists():
        return None
    top = path
    for parent in path.parents:
        if parent.exists():
            break
        top = parent
    return top


def discard(sweep_dir: Path, made_from: Optional[Path]) -> None:
    """Remove ``sweep_dir`` when this launch made it (``made_from``: ``missing_from`` before the sweeper ran) and it
    holds nothing but Hydra's multirun.yaml, then the directories above it up to ``made_from`` while empty.
    Never raises: a refusal is being reported, and a dir that cannot go stays."""
    if made_from is None or (made_from != sweep_dir and made_from not in sweep_dir.parents):
        return
    try:
        if {p.name for p in sweep_dir.iterdir()} - {HYDRA_MULTIRUN_RECORD}:
            return
        (sweep_dir / HYDRA_MULTIRUN_RECORD).unlink(missing_ok=True)
    except OSError:
        return
    for d in (sweep_dir, *sweep_dir.parents):
        try:
            d.rmdir()  # fails on a dir something else wrote into meanwhile: it stays, and so do those above it
        except OSError:
            return
        if d == made_from:
            return
