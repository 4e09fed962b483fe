"""The rules of ``script.*`` (a user's own torchrun script as the payload), checked before anything is submitted."""

from __future__ import annotations

import re
from pathlib import Path

from hpc_ft.errors import Problem

MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def uses_script(conf) -> bool:
    """The job runs ``script.path`` or ``script.module`` instead of hpc_ft's loop."""
    s = conf.script
    return bool(s.path or s.module)


def script_problems(conf) -> list[Problem]:
    """What is wrong with ``script.*``: both or a bad one given, a path that is not a file (relative paths are
    read from the submitting directory), a module name that is not dotted identifiers."""
    s, p = conf.script, []
    if s.path and s.module:
        p.append(Problem("script", f"path={s.path}, module={s.module}", "give script.path or script.module, not both",
                         "drop one of them, e.g. pass ~script.module"))
    if s.path and not Path(s.path).expanduser().is_file():
        p.append(Problem("script.path", s.path, "is not a file (relative paths start at the submitting directory)",
                         f"pass script.path={Path(s.path).expanduser().resolve()} with the script there, or fix "
                         f"the name"))
    if s.module and not MODULE_RE.match(str(s.module)):
        p.append(Problem("script.module", s.module, "must be a dotted module name (python -m NAME)",
                         "pass script.module=my_pkg.train"))
    return p
