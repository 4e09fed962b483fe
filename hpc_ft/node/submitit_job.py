"""The job process of a local node task: submitit's own ``process_job``, started without importing numpy first.

submitit's job entry (``python -u -m submitit.core._submit FOLDER``) imports numpy before it unpickles the job,
for pickles that hold arrays. A node task holds none, and its process only starts torchrun and waits for it, so
that import (60-80 ms on a 2-core VM, most of what the job process spends before torchrun starts) delays every
local job's start for nothing. The local executor therefore gives submitit ``python=`` this module's command
(``node_job_python``); submitit appends its own arguments, and this entry runs submitit's ``process_job`` on the
same folder: the same job environment, pickles, logs, signal handling and result as submitit's entry.

Only the import that submitit guards with ``except ImportError`` sees numpy as absent (``sys.modules`` holds None
for it, the documented way to block an import); the block is lifted before the job is unpickled, so a job or a
library that needs numpy imports it as usual.
"""

from __future__ import annotations

import shlex
import sys

# What submitit's LocalExecutor appends to its ``python`` command (submitit 1.5: ``_submitit_command_str``).
SUBMITIT_ARGS = ("-u", "-m", "submitit.core._submit")


def node_job_python(python: str = sys.executable) -> str:
    """The ``python=`` for ``submitit.LocalExecutor``: ``python`` (quoted once, as submitit quotes its default)
    running this module unbuffered, as submitit's entry runs."""
    return f"{shlex.quote(python)} -u -m {__name__}"


def folder_from_argv(argv: list[str]) -> str:
    """The submitit folder from this entry's arguments (``-u -m submitit.core._submit FOLDER``, or ``FOLDER``).

    Raises SystemExit(2) with a message for anything else: a submitit that changed what it appends would
    otherwise run something unintended.
    """
    if len(argv) == len(SUBMITIT_ARGS) + 1 and tuple(argv[:-1]) == SUBMITIT_ARGS:
        return argv[-1]
    if len(argv) == 1 and not argv[0].startswith("-"):
        return argv[0]
    raise SystemExit(f"{__name__}: expected '{' '.join(SUBMITIT_ARGS)} FOLDER' (submitit's job command), "
                     f"got {shlex.join(argv)!r}")


def _process_job_without_numpy_first():
    """submitit's ``process_job``, its module imported with numpy blocked (then unblocked)."""
    blocked = "numpy" not in sys.modules
    if blocked:
        sys.modules["numpy"] = None  # type: ignore[assignment]  # `import numpy` raises ImportError
    try:
        from submitit.core.submission import process_job
    finally:
        if blocked and sys.modules.get("numpy", 0) is None:
            del sys.modules["numpy"]
    return process_job


def main(argv: list[str] | None = None) -> None:
    folder = folder_from_argv(list(sys.argv[1:] if argv is None else argv))
    _process_job_without_numpy_first()(folder)


if __name__ == "__main__":
    main()
