"""The sweep table as printed: its swept keys readable whatever the width.

With 14 columns in 120, rich squeezed the overrides column until a key read ``scrip…``. Now the table is printed
at its natural width where that fits, or where the output is no terminal (a file, a log: nobody's window to fit,
see ``hpc_ft.report.main``); in a narrower terminal each key is shown by the shortest tail of its dotted path that
no other swept key ends with (``optim.lr`` -> ``lr``), the full keys listed under the table.
"""

from __future__ import annotations

import re
from typing import Any, Callable

# A Hydra override: its '+'/'++'/'~' prefix, its key, and the rest ('=value', or nothing for a deletion '~key').
_OVERRIDE = re.compile(r"^(?P<prefix>\+\+|\+|~)?(?P<key>[^=]+)(?P<rest>=.*)?$", re.DOTALL)
# Wide enough for any sweep table's natural width: the width it is measured at.
_UNBOUNDED = 100_000
# In a terminal too narrow for the whole table, the overrides column takes at most 1/6 of its width (14 columns).
OVERRIDES_SHARE = 6


def split_override(override: str) -> tuple[str, str, str]:
    """(prefix, key, rest) of one override: ``+executor.env.X=1`` -> (``+``, ``executor.env.X``, ``=1``)."""
    m = _OVERRIDE.match(override)
    if m is None:  # '=value' alone: not an override Hydra accepts, shown as it is
        return "", "", override
    return m["prefix"] or "", m["key"], m["rest"] or ""


def shortest_keys(keys: set[str]) -> dict[str, str]:
    """Each key's shortest dotted tail that is no other key's tail of the same length, or the key itself (when
    every tail is shared: ``lr`` beside ``optim.lr``). Keys in Hydra's group syntax (``hydra/launcher``) and
    keys without a dot stay whole. No two keys get the same short form."""
    out = {}
    for key in keys:
        parts = key.split(".")
        out[key] = key
        if "/" in key or len(parts) == 1:
            continue
        for n in range(1, len(parts)):
            tail = parts[-n:]
            if not any(other != key and other.split(".")[-n:] == tail for other in keys):
                out[key] = ".".join(tail)
                break
    return out


def abbreviate(overrides: list[str], shorts: dict[str, str]) -> list[str]:
    """``overrides`` with each key replaced by its short form from ``shortest_keys`` (prefix and value kept)."""
    out = []
    for o in overrides:
        prefix, key, rest = split_override(o)
        out.append(prefix + shorts.get(key, key) + rest if key else o)
    return out


def key_legend(shorts: dict[str, str]) -> str | None:
    """``short = full key`` of every abbreviated key, for under the table; None when none was abbreviated."""
    pairs = sorted((s, k) for k, s in shorts.items() if s != k)
    if not pairs:
        return None
    return "keys: " + ", ".join(f"{s} = {k}" for s, k in pairs)


class SweepView:
    """The sweep table of ``jobs`` as a rich renderable (``table``: ``hpc_ft.report.render.sweep_table``, which
    imports this module): the full keys where the table fits the width it is given, or everywhere with ``widen``
    (print it with ``crop=False``); else the short keys and their legend."""

    def __init__(self, jobs: list[tuple[str, Any]], table: Callable[..., Any], widen: bool = False):
        self.jobs, self.table, self.widen = jobs, table, widen

    def __rich_console__(self, console, options):
        from rich.measure import Measurement

        full = self.table(self.jobs)
        natural = Measurement.get(console, options.update_width(_UNBOUNDED), full).maximum
        if natural <= options.max_width:
            yield full
        elif self.widen:
            yield from console.render(full, options.update_width(natural))
        else:
            yield _fitted(console, options, self.jobs, self.table)


def _rendered_width(console, options, renderable) -> int:
    """The widest line of ``renderable`` rendered with ``options``, before the console crops it."""
    from rich.segment import Segment

    lines = Segment.split_lines(console.render(renderable, options))
    return max((Segment.get_line_length(line) for line in lines), default=0)


def _fitted(console, options, jobs, sweep_table):
    """The short-key sweep table with the widest overrides column that still fits: rich shrinks the widest columns
    first, which squeezed the overrides to a few characters a line (``weight`` / ``_decay`` / ``=0.0``) while
    ``GPU-h`` kept its width. Up to the longest override, and at most a sixth of the width (the other 13 columns
    need the rest); rich's own widths when none fits."""
    probe = sweep_table(jobs, short_keys=True)
    longest = max((len(word) for cell in probe.columns[1].cells for word in str(cell).split()), default=1)
    most = min(longest, options.max_width // OVERRIDES_SHARE)
    for width in sorted({w for w in (most, 16, 12) if w <= most}, reverse=True):
        table = sweep_table(jobs, short_keys=True, overrides_width=width)
        if _rendered_width(console, options, table) <= options.max_width:
            return table
    return probe
