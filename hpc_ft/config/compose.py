"""Compose a JobConf from conf/ without the CLI (tests, notebooks, Python callers)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from hpc_ft.config.schema import JobConf, register_configs


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
    Raises ConfigError for a key hpc_ft does not know or a value OmegaConf cannot produce.
    """
    from hydra import compose

    from hpc_ft.config.overrides import to_job_conf

    overrides = list(overrides or [])
    if run_dir is not None:
        overrides.append(f"run.dir={Path(run_dir)}")
    if not any(o.startswith("run.dir=") for o in overrides):
        raise ValueError("compose_conf needs run_dir= (or a run.dir= override): there is no Hydra run dir here")
    register_configs()
    with hpc_ft_config_dir():
        cfg = compose(config_name="config", overrides=overrides)
    return to_job_conf(cfg, overrides)
