"""Structured configs (typed dataclasses registered in Hydra's ConfigStore) and preflight validation."""

from hpc_ft.config.schema import (
    ExecutorConf,
    JobConf,
    PrecisionConf,
    ResourcesConf,
    RunConf,
    SchedConf,
    TelemetryConf,
    TrainConf,
    register_configs,
)
from hpc_ft.config.validate import validate

__all__ = [
    "ExecutorConf",
    "JobConf",
    "PrecisionConf",
    "ResourcesConf",
    "RunConf",
    "SchedConf",
    "TelemetryConf",
    "TrainConf",
    "register_configs",
    "validate",
]
