"""Compose a JobConf from conf/ without the CLI (tests, notebooks, Python callers)."""

from __future__ import annotations

from pathlib import Path

from hpc_ft.config.schema import JobConf, register_configs


def compose_conf(overrides: list[str] | None = None, run_dir: str | Path | None = None) -> JobConf:
    """Hydra-compose conf/config.yaml with ``overrides`` into a typed JobConf.

    The compose API has no Hydra run dir, so ``run_dir`` (or a ``run.dir=`` override) is required.
    Raises ConfigError for a key hpc_ft does not know or a value OmegaConf cannot produce.
    """
    from hydra import compose, initialize_config_dir

    from hpc_ft.config.overrides import to_job_conf

    from hpc_ft import CONF_DIR

    overrides = list(overrides or [])
    if run_dir is not None:
        overrides.append(f"run.dir={Path(run_dir)}")
    if not any(o.startswith("run.dir=") for o in overrides):
        raise ValueError("compose_conf needs run_dir= (or a run.dir= override): there is no Hydra run dir here")
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    return to_job_conf(cfg, overrides)
