"""tracking=...: an unknown backend, or mlflow without the mlflow package, is refused before anything runs."""

from __future__ import annotations

import importlib.util

import pytest

from hpc_ft.config.compose import compose_conf
from hpc_ft.errors import ConfigError
from hpc_ft.submit.executors import validate

BASE = ["model=mlp", "data=synthetic"]


def test_tensorboard_is_the_default_and_off_and_mlflow_validate(tmp_path):
    assert compose_conf(BASE, run_dir=tmp_path).tracking.backend == "tensorboard"
    for backend in ("off", "mlflow"):
        validate(compose_conf([*BASE, f"tracking={backend}"], run_dir=tmp_path))


def test_an_unknown_backend_is_refused(tmp_path):
    conf = compose_conf([*BASE, "tracking.backend=wandb"], run_dir=tmp_path)
    with pytest.raises(ConfigError) as err:
        validate(conf)
    (p,) = [p for p in err.value.problems if p.key == "tracking"]
    assert p.value == "wandb" and "tensorboard" in p.rule and "tracking=tensorboard" in p.fix


def test_mlflow_without_the_package_is_refused_naming_the_extra(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    conf = compose_conf([*BASE, "tracking=mlflow"], run_dir=tmp_path)
    with pytest.raises(ConfigError) as err:
        validate(conf)
    (p,) = [p for p in err.value.problems if p.key == "tracking"]
    assert "hpc_ft[mlflow]" in p.fix and "optional extra" in p.rule
