"""Compose a JobConf from conf/ without the CLI (tests, notebooks, Python callers)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from hpc_ft.config.schema import JobConf, register_configs
from hpc_ft.errors import ConfigError, Problem


@contextmanager
def version_base_kept() -> Iterator[None]:
    """Put Hydra's version base back as it was: ``hydra.main`` and ``initialize_config_dir`` set it process-wide
    (1.3 for hpc_ft), so hpc_ft used in-process (a notebook, a test) would leave a later Hydra app of the same
    process without its own default (Hydra 1.1's, under which a job changes directory)."""
    from hydra.version import VersionBase

    base = VersionBase.instance().getbase()
    try:
        yield
    finally:
        VersionBase.instance().version_base = base  # setbase() takes a Version only, not "unspecified"


@contextmanager
def hpc_ft_config_dir() -> Iterator[None]:
    """Hydra's compose API on hpc_ft's conf/ (``initialize_config_dir``, version base 1.3), the version base kept."""
    from hydra import initialize_config_dir

    from hpc_ft import CONF_DIR

    with version_base_kept(), initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        yield


def compose_conf(overrides: list[str] | None = None, run_dir: str | Path | None = None) -> JobConf:
    """Hydra-compose conf/config.yaml with ``overrides`` into a typed JobConf.

    The compose API has no Hydra run dir, so ``run_dir`` (or a ``run.dir=`` override) is required.
    Raises ConfigError (one Problem with its fix, as ``hpc-ft submit`` gives it) for an override that cannot be
    composed: a key hpc_ft does not know (or renamed), a group option with no conf file, a value of the wrong type,
    Hydra syntax, a deleted setting, a value OmegaConf cannot produce. Hydra's own exception is its ``__cause__``.
    Whether the values make a job that can run is ``hpc_ft.submit.executors.validate``'s to say.
    """
    from hydra import compose

    from hpc_ft.config.overrides import is_config_library_error, to_job_conf
    from hpc_ft.config.renames import renamed_override_problems

    given = list(overrides or [])
    overrides = list(given)
    if run_dir is not None:
        overrides.append(f"run.dir={Path(run_dir)}")
    if not any(o.startswith("run.dir=") for o in overrides):
        raise ValueError("compose_conf needs run_dir= (or a run.dir= override): there is no Hydra run dir here")
    renamed = renamed_override_problems(given)
    if renamed:  # before Hydra, whose "not in TrainConf" would hide the new name
        raise ConfigError(renamed)
    register_configs()
    with hpc_ft_config_dir():
        try:
            cfg = compose(config_name="config", overrides=overrides)
        except Exception as exc:
            if not is_config_library_error(exc):
                raise
            raise ConfigError([composition_problem(exc, given, run_dir)]) from exc
    return to_job_conf(cfg, overrides)


def composition_problem(exc: Exception, overrides: list[str], run_dir: str | Path | None = None) -> Problem:
    """Hydra's (or OmegaConf's) refusal to compose ``overrides`` as one Problem: the override the CLI's fix names
    (``refused_override``), Hydra's reason without its hints (``hydra_refusal``), and that fix with the corrected
    ``compose_conf`` call (``run_dir`` as given)."""
    from omegaconf.errors import OmegaConfBaseException

    from hpc_ft.config.overrides import hydra_exception_text, hydra_refusal, omegaconf_problem, refused_override

    if isinstance(exc, OmegaConfBaseException):
        return omegaconf_problem(exc)
    reason = hydra_refusal(hydra_exception_text(exc)).removeprefix("error: ")
    rule = "; ".join(line.strip().rstrip(".") for line in reason.splitlines())
    where = "" if run_dir is None else f", run_dir={str(run_dir)!r}"

    def call(old: str, new: str) -> str:
        return f"compose_conf({[new if o == old else o for o in overrides]!r}{where})"

    arg, fix = refused_override(overrides, "compose_conf", call)
    fix = fix.removeprefix("Fix: ")
    if arg is None:  # nothing of the overrides to blame (e.g. a config file): all of them, and Hydra's reason
        return Problem("overrides", overrides, rule, fix)
    key, _, value = arg.partition("=")
    return Problem(key.lstrip("+~"), value if "=" in arg else arg, rule, fix)
