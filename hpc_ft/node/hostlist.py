"""Expand Slurm's compressed hostlists (``node[01-03,7],gpu1``) the way ``scontrol show hostnames`` does.

Done in Python because the node task must not depend on ``scontrol`` being on PATH inside the job step.
"""
from __future__ import annotations

import re

from hpc_ft.errors import LaunchError

_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside brackets."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise LaunchError(f"unbalanced ']' in hostlist {text!r}")
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth != 0:
        raise LaunchError(f"unbalanced '[' in hostlist {text!r}")
    parts.append("".join(cur))
    return [p for p in (s.strip() for s in parts) if p]


def _expand_ranges(body: str, whole: str) -> list[str]:
    out: list[str] = []
    for item in body.split(","):
        m = _RANGE.match(item.strip())
        if not m:
            raise LaunchError(f"bad range {item!r} in hostlist {whole!r}")
        lo, hi = m.group(1), m.group(2)
        if hi is None:
            out.append(lo)
            continue
        if int(hi) < int(lo):
            raise LaunchError(f"descending range {item!r} in hostlist {whole!r}")
        width = len(lo)  # Slurm keeps the zero padding of the lower bound
        out.extend(str(i).zfill(width) for i in range(int(lo), int(hi) + 1))
    return out


def _expand_one(name: str, whole: str) -> list[str]:
    m = re.search(r"\[([^\[\]]*)\]", name)
    if not m:
        return [name]
    head, tail = name[: m.start()], name[m.end():]
    return [head + mid + rest for mid in _expand_ranges(m.group(1), whole) for rest in _expand_one(tail, whole)]


def expand_hostlist(hostlist: str) -> list[str]:
    """Return the host names of a Slurm hostlist expression, in Slurm's order."""
    hosts: list[str] = []
    for part in _split_top(hostlist):
        hosts.extend(_expand_one(part, hostlist))
    return hosts
