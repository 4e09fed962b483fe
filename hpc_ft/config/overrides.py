"""Composed config -> JobConf without tracebacks, and the fix for an override Hydra refused.

Hydra accepts a key added with ``+`` anywhere (``+train.max_step=500``): in hpc_ft's own typed groups
such a key would be dropped silently by ``OmegaConf.to_object``, so it is refused here, naming the key it
was probably meant to be. OmegaConf's own errors (a deleted required group, an interpolation that does
not resolve) become one ``ConfigError`` rather than a traceback.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import shlex
import typing
from pathlib import Path
from typing import Any

from hpc_ft.config.schema import JobConf
from hpc_ft.errors import ConfigError, Problem

# Groups a user picks from conf/<group>/*.yaml; deleting one leaves the job without it.
CHOICE_GROUPS = ("model", "data", "optim")


@functools.lru_cache(maxsize=None)
def _dataclass_fields(cls: type) -> dict[str, Any]:
    """Field name -> resolved type of a schema dataclass (the schema uses postponed annotations). Cached: a plan
    checks every node of every point, and resolving the annotations was a tenth of a 1,000-point plan.
    Callers must not change the returned dict."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _close(word: str, options: list[str]) -> str:
    best = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return best[0] if best else ""


def unknown_key_problems(cfg: Any, cls: type = JobConf, prefix: str = "") -> list[Problem]:
    """Keys in ``cfg`` (a DictConfig) that ``cls`` has no field for, in every typed (dataclass) group.

    ``model``/``data``/``optim`` and the mappings ``executor.env``/``executor.extra_sbatch`` are the user's
    own and hold any key.
    """
    from omegaconf import DictConfig

    fields = _dataclass_fields(cls)
    problems = []
    for key in list(cfg.keys()):
        full = f"{prefix}{key}"
        if key not in fields:
            near = _close(str(key), list(fields))
            node = cfg._get_node(key)
            value = node._value() if node is not None else None
            fix = (f"did you mean {prefix}{near}? pass {prefix}{near}=... (without '+')" if near else
                   f"drop it; {prefix.rstrip('.') or 'the job'} has: {', '.join(fields)}")
            problems.append(Problem(full, value, f"is not a setting of hpc_ft ({cls.__name__} has no '{key}'; "
                                    "a key added with '+' here would be ignored)", fix))
            continue
        ftype = fields[key]
        child = cfg._get_node(key)
        if dataclasses.is_dataclass(ftype) and isinstance(child, DictConfig) and not child._is_missing() \
                and not child._is_none() and not child._is_interpolation():
            problems += unknown_key_problems(child, ftype, f"{full}.")
    return problems


def deletion_problems(overrides: list[str]) -> list[Problem]:
    """``~key`` overrides that delete a setting or group of hpc_ft's own schema (it has no "unset" state:
    Hydra would drop the key and the default would come back, or a required group would be missing).
    Deleting inside the user's own mappings (``~executor.env.NAME``, ``~model.dropout``) stays allowed."""
    problems = []
    for o in overrides:
        if not o.startswith("~"):
            continue
        key = o[1:].split("=", 1)[0]
        kind, _, _ = _schema_path(key)
        if kind == "ok" or (kind == "user" and "." not in key):
            fix = (f"pick another one: {key}=<name> from conf/{key}/" if key in CHOICE_GROUPS else
                   f"set it instead: {key}=<value> (`hpc-ft submit --cfg job` shows its current value)")
            problems.append(Problem(key, f"~{key}", "deletes a setting hpc_ft needs (hpc_ft's own keys cannot be "
                                    "deleted, only given another value)", fix))
    return problems


def to_job_conf(cfg: Any, overrides: list[str] | None = None) -> JobConf:
    """A composed DictConfig as a typed JobConf; raises ConfigError (every unknown key and deleted
    setting, or OmegaConf's own refusal: a missing required group, an interpolation that cannot be
    resolved). ``overrides`` are the Hydra overrides it was composed with."""
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    problems = deletion_problems(list(overrides or [])) + unknown_key_problems(cfg)
    if problems:
        raise ConfigError(problems)
    try:
        return OmegaConf.to_object(cfg)
    except MissingMandatoryValue as exc:
        key = getattr(exc, "full_key", None) or "?"
        group = str(key).split(".", 1)[0]
        fix = (f"pick one: {group}=<name> from conf/{group}/ (e.g. {group}={_example(group)}); `~{group}` deletes "
               "a group the job needs") if group in CHOICE_GROUPS else f"pass {key}=<value>"
        raise ConfigError([Problem(str(key), "???", "is required but has no value", fix)]) from exc
    except OmegaConfBaseException as exc:
        raise ConfigError([omegaconf_problem(exc, cfg)]) from exc


def is_config_library_error(exc: BaseException) -> bool:
    """An error OmegaConf or Hydra raised about the config (missing value, bad interpolation, bad override)."""
    return type(exc).__module__.split(".")[0] in ("omegaconf", "hydra")


def omegaconf_problem(exc: Exception, cfg: Any = None) -> Problem:
    """One Problem from an OmegaConf error (its message's first line, the key it names, and the value as written:
    the ``${...}`` of an interpolation that does not resolve, looked up in ``cfg`` where the error lacks it)."""
    key = getattr(exc, "full_key", None) or getattr(exc, "key", None) or "config"
    msg = str(getattr(exc, "msg", None) or exc).strip().splitlines()[0]
    if type(exc).__name__ == "InterpolationKeyError":  # ${a.b} naming a key the config does not have
        fix = "refer to a key the job has (`hpc-ft submit --cfg job` prints them all) or write the value itself"
    elif "Interpolation" in type(exc).__name__ or "interpolation" in msg.lower():
        fix = ("set what it refers to (e.g. export the environment variable) or give a default: "
               "${oc.env:NAME,default}")
    else:
        fix = "`hpc-ft submit --cfg job` prints every key with its current value"
    value = getattr(exc, "value", None) or _written_value(getattr(exc, "child_node", None)) or \
        _written_value(_node_at(cfg, str(key)))
    if type(exc).__name__ == "InterpolationKeyError":
        fix = _options_that_set(str(value or ""), str(key)) or fix
    return Problem(str(key), value or "", f"{type(exc).__name__}: {msg}", fix)


def _options_that_set(written: str, key: str) -> str:
    """For ``key: ${data.num_features}`` where the chosen data option has no ``num_features`` (model=mlp with
    data=chatterbot): the options of that group that set it, as the Fix; "" when ``written`` is not such a
    reference or no option sets it."""
    import re

    m = re.fullmatch(r"\$\{(\w+)\.(\w+)\}", written.strip())
    if not m or m.group(1) not in CHOICE_GROUPS:
        return ""
    group, leaf = m.groups()
    having = [name for name in group_options(group) if leaf in (option_values(group, name) or {})]
    if not having:
        return ""
    return (f"{key} reads {group}.{leaf}, which only {', '.join(f'{group}={h}' for h in having)} sets: pick "
            f"{'it' if len(having) == 1 else 'one'}, or write the value itself ({key}=...)")


def _node_at(cfg: Any, key: str) -> Any:
    """The node at dotted ``key`` of a DictConfig, unresolved; None where there is none."""
    node = cfg
    for part in key.split("."):
        get = getattr(node, "_get_node", None)
        node = get(part) if get is not None else None
        if node is None:
            return None
    return node


def _written_value(node: Any) -> Any:
    """A node's value as written (an interpolation's ``${...}`` text), without resolving it."""
    try:
        return node._value() if node is not None else None
    except Exception:  # noqa: BLE001 - only for the message: an odd node leaves the value out
        return None


def group_options(group: str) -> list[str]:
    """The options of a config group: the stems of ``conf/<group>/*.yaml``, sorted ([] for no such group)."""
    from hpc_ft import CONF_DIR

    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


def _example(group: str) -> str:
    names = group_options(group)
    return names[0] if names else "<name>"


def chosen_option(group: str, args: list[str]) -> str:
    """The option of ``group`` (``optim``) a command line picks: its own ``optim=NAME``, else conf/config.yaml's
    default."""
    for a in args:
        if a.startswith(f"{group}="):
            return a.split("=", 1)[1]
    import yaml

    from hpc_ft import CONF_DIR

    defaults = (yaml.safe_load((Path(CONF_DIR) / "config.yaml").read_text()) or {}).get("defaults", [])
    return next((str(d[group]) for d in defaults if isinstance(d, dict) and group in d), "")


def option_values(group: str, option: str) -> dict[str, Any] | None:
    """conf/<group>/<option>.yaml as written (its top-level mapping, ``defaults`` left out); None where there is no
    such file or it cannot be read."""
    import yaml

    from hpc_ft import CONF_DIR

    path = Path(CONF_DIR) / group / f"{option}.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return {str(k): v for k, v in data.items() if k != "defaults"} if isinstance(data, dict) else None


def hydra_quote(key: str, value: str) -> str:
    """``key="value"`` in Hydra's quoted-string syntax (parentheses, commas, spaces are literal there)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{key}="{escaped}"'


def _schema_path(key: str) -> tuple[str, str, list[str]]:
    """Walk a dotted key through the schema: ('ok' | 'mapping' | 'unknown' | 'user', the known prefix,
    the field names at the first unknown segment)."""
    cls: Any = JobConf
    parts = key.split(".")
    for i, part in enumerate(parts):
        fields = _dataclass_fields(cls)
        if part not in fields:
            return "unknown", ".".join(parts[:i]), list(fields)
        ftype = fields[part]
        if dataclasses.is_dataclass(ftype):
            cls = ftype
            continue
        origin = typing.get_origin(ftype)
        if origin in (dict, typing.Dict) and i < len(parts) - 1:
            return "mapping", ".".join(parts[: i + 1]), []
        if ftype is Any:
            return "user", ".".join(parts[: i + 1]), []
        return ("ok" if i == len(parts) - 1 else "unknown"), ".".join(parts[: i + 1]), []
    return "ok", key, []


def _fits_schema(key: str, value: Any) -> bool:
    """Can the schema field ``key`` hold ``value`` (OmegaConf's own conversion, e.g. "3" -> 3)?"""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        OmegaConf.update(OmegaConf.structured(JobConf), key, value, merge=True)
    except OmegaConfBaseException:
        return False
    except Exception:  # noqa: BLE001 - any other failure: not this override's fault as far as we can tell
        return True
    return True


def _type_words(key: str) -> str:
    """What a schema key accepts, in words (for the Fix of a value Hydra could not convert)."""
    cls: Any = JobConf
    *head, leaf = key.split(".")
    for part in head:
        cls = _dataclass_fields(cls)[part]
    ftype = _dataclass_fields(cls)[leaf]
    optional = type(None) in typing.get_args(ftype)
    base = next((t for t in typing.get_args(ftype) if t is not type(None)), ftype) if optional else ftype
    words = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}.get(
        base, "a list like [a,b]" if typing.get_origin(base) in (list, typing.List) else "a value of its type")
    return words + (" (or null)" if optional else "")


def hydra_refusal(text: str) -> str:
    """Hydra's refusal of a command line as one error: its first paragraph, without the hints that do not apply to
    hpc-ft (HYDRA_FULL_ERROR for a stack trace; ``+key`` to append, which hpc_ft refuses for an unknown key; the
    list of options and the config search path, which the Fix line names instead) and without OmegaConf's type
    details. The Fix line (``refusal_fix``) follows it."""
    noise = ("To append to your config", "Set the environment variable HYDRA_FULL_ERROR", "full_key:",
             "reference_type=", "object_type=")
    first = text.strip().split("\n\n")[0]
    lines = [ln.strip() for ln in first.splitlines() if ln.strip() and not ln.strip().startswith(noise)]
    return "error: " + "\n  ".join(lines) if lines else "error: Hydra refused the command line"


def hydra_exception_text(exc: BaseException) -> str:
    """What Hydra prints for an exception it reports compactly: its message, then the OmegaConf error behind it
    (``Key 'max_step' not in 'TrainConf'``, ``Value 'abc' ... could not be converted to Integer``)."""
    from omegaconf.errors import OmegaConfBaseException

    cause = exc.__cause__
    return f"{exc}\n{cause}" if isinstance(cause, OmegaConfBaseException) else str(exc)


def _choice_elements(ov: Any) -> list[Any] | None:
    """The values of a choice sweep (``key=a,b,c`` or ``key=choice(a,b)``) as Hydra parses them; None for an
    override that is not one (a single value, ``range(...)``, ``interval(...)``)."""
    from hydra.core.override_parser.types import ChoiceSweep

    if not ov.is_sweep_override() or not isinstance(ov.value(), ChoiceSweep):
        return None
    return list(ov.sweep_iterator())


def _sweep_fixed(command: Any, parser: Any, arg: str, raw_key: str, elements: list[Any], fixed: Any) -> str:
    """"; did you mean CMD" with each element of a choice sweep replaced by ``fixed(element)`` (dropped where that
    is empty); "" when nothing would be left. ``command(old, new)`` renders the whole corrected command line;
    ``parser`` is Hydra's OverridesParser, which tells whether an element needs Hydra's quotes."""
    from hydra.errors import HydraException

    kept: list[str] = []
    for e in elements:
        new = fixed(e)
        if new == "" or new is None:
            continue
        text = str(new).lower() if isinstance(new, bool) else str(new)
        try:  # an element Hydra would read differently unquoted (a space, a comma) keeps Hydra's quotes
            parser.parse_override(f"{raw_key}={text}")
        except HydraException:
            text = repr(str(new))
        if text not in kept:
            kept.append(text)
    if not kept:
        return ""
    values = ",".join(kept)
    return f"; did you mean {command(arg, f'{raw_key}={values}')}"


def refusal_fix(args: list[str], prog: str) -> str:
    """The Fix line for overrides Hydra refused: the first mistake found in ``args``, with the corrected
    command for ``prog`` (``hpc-ft submit`` / ``hpc-ft sbatch``) shell-quoted, ready to paste."""
    return refused_override(args, prog)[1]


def shell_command(prog: str, args: list[str]) -> Any:
    """``command(old, new)``: the command line ``prog args`` with the argument ``old`` replaced by ``new``,
    shell-quoted, ready to paste."""
    def command(old: str, new: str) -> str:
        return " ".join([prog, *(shlex.quote(new if a == old else a) for a in args)])
    return command


def refused_override(args: list[str], prog: str, command: Any = None) -> tuple[str | None, str]:
    """The first mistake found in ``args`` (the override as given, None where none is found) and its Fix line.

    ``command(old, new)`` renders the corrected call (default: ``shell_command(prog, args)``); ``prog`` also says
    which command it is (``hpc-ft tune``/``hpc-ft plan`` take sweeps by design; anything but an ``hpc-ft``
    command, e.g. the Python API, is pointed at ``hpc-ft submit --cfg job`` for the keys)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from hpc_ft import CONF_DIR

    parser = OverridesParser.create()
    # A search's space and a plan's points are sweeps by design (hpc-ft tune, hpc-ft plan): no "comma" fix there.
    multirun = any(a in ("-m", "--multirun") for a in args) or prog in ("hpc-ft tune", "hpc-ft plan")
    # plan has no --cfg, and a caller of the Python API has the CLI's
    cfg_prog = prog if prog.startswith("hpc-ft ") and prog != "hpc-ft plan" else "hpc-ft submit"
    command = command or shell_command(prog, args)

    for a in args:
        if a.startswith("-") or ("=" not in a and not a.startswith("~")):
            continue
        raw_key, value = a.split("=", 1) if "=" in a else (a, "")
        key = raw_key.lstrip("+~")
        try:
            ov = parser.parse_override(a)
        except HydraException:
            inside = " (inside the shell's quotes)" if prog.startswith("hpc-ft ") else ""
            return a, (f"Fix: `{a}` is not valid Hydra syntax: characters such as ( ) [ ] {{ }} , = : ' \" and spaces "
                       f"are Hydra syntax in a value; quote the value for Hydra{inside}: "
                       f"{command(a, hydra_quote(raw_key, value))}")
        if key.startswith(("hydra.", "hydra/")):
            continue  # Hydra's own settings: its message says what is wrong (a value it cannot parse: above)
        if ov.is_sweep_override() and not multirun:
            sweep = "; a sweep: add -m" if prog.startswith("hpc-ft ") else ""  # the Python API runs one job
            return a, (f"Fix: the comma in `{a}` makes it a sweep; for one value with a comma quote it for Hydra: "
                       f"{command(a, hydra_quote(raw_key, value))} (a list: {raw_key}=[...]{sweep})")
        if "/" in key or "@" in key:
            continue
        group_dir = Path(CONF_DIR) / key
        elements = _choice_elements(ov)  # the values of a sweep a,b,c (None: not a choice sweep)
        if "." not in key and group_dir.is_dir():
            names = group_options(key)
            options = f"Fix: {key} options are the files in {group_dir}/: {', '.join(names)}"
            if raw_key.startswith("~"):
                continue
            if elements is not None:
                bad = [e for e in elements if str(e) not in names]
                if bad:
                    return a, (f"{options}; {', '.join(map(str, bad))} in the sweep "
                               f"{'is not one' if len(bad) == 1 else 'are not'}"
                               + _sweep_fixed(command, parser, a, raw_key, elements,
                                              lambda e: str(e) if str(e) in names else _close(str(e), names)))
            elif value not in names:
                near = _close(value, names)
                return a, options + (f"; did you mean {command(a, f'{raw_key}={near}')}" if near else "")
            continue
        kind, known, fields = _schema_path(key)
        if kind == "mapping" and not raw_key.startswith("+"):
            return a, (f"Fix: {known} holds your own names, which must be added with '+': "
                       f"{command(a, '+' + a)}")
        if kind == "unknown":
            tail = (key[len(known) + 1:] if known else key).split(".")
            near = _close(tail[0], fields)
            if near:
                fixed = ".".join([*([known] if known else []), near, *tail[1:]])
                return a, f"Fix: {key} is not a setting; did you mean {command(a, f'{fixed}={value}')}"
            return a, (f"Fix: {key} is not a setting; {known or 'the job'} has: {', '.join(fields)} "
                       f"(`{cfg_prog} --cfg job` shows each with its value)")
        if kind == "user" and not raw_key.startswith(("~", "+")) and known in CHOICE_GROUPS \
                and key.count(".") == 1:
            option = chosen_option(known, args)
            keys = option_values(known, option)  # None: no such file, and Hydra's own message stands
            leaf = key.split(".", 1)[1]
            if keys is not None and leaf not in keys:
                near = _close(leaf, sorted(keys))
                if near:
                    return a, (f"Fix: {known}={option} has no {leaf!r}; did you mean "
                               f"{command(a, f'{known}.{near}={value}')}")
                return a, (f"Fix: {known}={option} has: {', '.join(sorted(keys))}; a new key is added with '+': "
                           f"{command(a, '+' + a)}")
        if kind in ("ok", "user") and raw_key.startswith("~") and deletion_problems([a]):
            return a, ("Fix: hpc_ft's own settings cannot be deleted; give it another value: "
                       f"{command(a, key + '=...')}")
        if kind == "ok" and not raw_key.startswith("~") and not ov.is_sweep_override() \
                and not _fits_schema(key, ov.value()):
            return a, (f"Fix: {key} takes {_type_words(key)}; `{cfg_prog} --cfg job` prints every key with its "
                       "current value")
        if kind == "ok" and not raw_key.startswith("~") and elements is not None:
            bad = [e for e in elements if not _fits_schema(key, e)]
            if bad:
                return a, (f"Fix: {key} takes {_type_words(key)}; {', '.join(map(repr, bad))} in the sweep "
                           f"{'is not' if len(bad) == 1 else 'are not'}"
                           + _sweep_fixed(command, parser, a, raw_key, elements,
                                          lambda e: e if _fits_schema(key, e) else ""))
    return None, (f"Fix: `{cfg_prog} --cfg job` prints every key with its current value; a group's options are "
                  f"the files in {CONF_DIR}/<group>/ (e.g. model=mlp).")
