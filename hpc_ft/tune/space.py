"""The search space: Hydra's override grammar, as its sweepers read it, turned into Optuna distributions.

``optim.lr=tag(log,interval(1e-5,1e-3))`` is a float on a log scale, ``train.warmup_steps=choice(0,20,100)`` (or
``0,20,100``) a categorical, ``train.seed=range(0,4)`` integers (Hydra's range leaves out its stop). Overrides
without a sweep are fixed for every trial. Parsing is Hydra's own (``OverridesParser``); a categorical keeps each
choice as Hydra encodes it, so a trial's overrides are the user's own text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hpc_ft.errors import ConfigError, Problem

Distribution = Any  # an optuna.distributions.BaseDistribution (optuna is imported only when searching)


@dataclass
class SearchSpace:
    """The swept keys, each with its Optuna distribution; ``fixed``: the overrides every trial gets as written."""

    params: dict[str, Distribution]
    fixed: list[str]
    grid: dict[str, list[Any]]  # each key's values for tune.sampler=grid (empty for a continuous interval)

    def overrides(self, values: dict[str, Any]) -> list[str]:
        """The Hydra overrides of one trial: the fixed ones, then ``key=value`` per swept key."""
        return [*self.fixed, *(f"{k}={_text(values[k])}" for k in self.params)]

    def grid_problems(self) -> list[Problem]:
        """What tune.sampler=grid cannot enumerate: a continuous interval."""
        return [Problem(k, "interval(...)", "tune.sampler=grid needs a finite set of values",
                        f"pass {k}=choice(a,b,c) or {k}=range(start,stop,step), or tune.sampler=tpe")
                for k in self.params if k not in self.grid]


def _text(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def parse_space(overrides: list[str]) -> SearchSpace:
    """Split ``overrides`` into the swept keys (Optuna distributions) and the fixed ones.

    Raises ConfigError naming the override for one Hydra cannot parse, a sweep Optuna cannot sample (a shuffled
    or empty range, an interval with its ends reversed) or a key swept twice.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep, Transformer
    from hydra.errors import HydraException
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    parser = OverridesParser.create()
    params: dict[str, Distribution] = {}
    grid: dict[str, list[Any]] = {}
    fixed: list[str] = []
    problems: list[Problem] = []
    for text in overrides:
        try:
            (ov,) = parser.parse_overrides([text])
        except HydraException as exc:
            key, _, value = text.partition("=")
            problems.append(Problem(key, value, f"is not an override Hydra can parse ({str(exc).splitlines()[0]})",
                                    f"write it as Hydra does, e.g. {key}=tag(log,interval(1e-5,1e-3)) or "
                                    f"{key}=choice(a,b)"))
            continue
        if not ov.is_sweep_override():
            fixed.append(text)
            continue
        key, value = ov.get_key_element(), ov.value()
        if key in params:
            problems.append(Problem(key, text, "is swept twice", "give each key one search range"))
            continue
        if isinstance(value, ChoiceSweep):
            choices = list(ov.sweep_iterator(transformer=Transformer.encode))
            if not choices:
                problems.append(Problem(key, text, "has no choices", f"pass {key}=choice(a,b)"))
                continue
            params[key], grid[key] = CategoricalDistribution(choices), choices
        elif isinstance(value, RangeSweep):
            values = list(ov.sweep_iterator(transformer=Transformer.encode))
            if value.shuffle or not values:
                problems.append(Problem(key, text, "is not a range Optuna can sample (shuffled or empty)",
                                        f"pass {key}=range(start,stop,step) with start < stop"))
                continue
            if all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
                params[key] = IntDistribution(int(value.start), int(values[-1]), step=int(value.step))
            else:
                params[key] = CategoricalDistribution(values)
            grid[key] = values
        elif isinstance(value, IntervalSweep):
            lo, hi, log = value.start, value.end, "log" in value.tags
            if not lo < hi or (log and lo <= 0):
                problems.append(Problem(key, text, "must have start < end (and start > 0 on a log scale)",
                                        f"pass {key}=tag(log,interval(1e-5,1e-3))"))
                continue
            if isinstance(lo, int) and isinstance(hi, int):
                params[key] = IntDistribution(lo, hi, log=log)
            else:
                params[key] = FloatDistribution(float(lo), float(hi), log=log)
        else:  # pragma: no cover - Hydra has no other sweep kind today
            problems.append(Problem(key, text, "is a sweep Optuna cannot sample", f"pass {key}=choice(a,b)"))
    if problems:
        raise ConfigError(problems)
    if not params:
        raise ConfigError([Problem("overrides", " ".join(overrides) or "(none)", "sweep nothing",
                                   "name at least one search range, e.g. 'optim.lr=tag(log,interval(1e-5,1e-3))'")])
    return SearchSpace(params=params, fixed=fixed, grid=grid)


def corner_points(space: SearchSpace) -> list[dict[str, Any]]:
    """Two points that between them hold every swept key's lowest and highest value (validated before the
    search starts, so a range reaching an invalid value is refused before any trial is submitted)."""
    from optuna.distributions import CategoricalDistribution

    low, high = {}, {}
    for k, d in space.params.items():
        if isinstance(d, CategoricalDistribution):
            low[k], high[k] = d.choices[0], d.choices[-1]
        else:
            low[k], high[k] = d.low, d.high
    return [low, high]
