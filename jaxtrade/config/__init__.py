"""Run configuration: dataclass schemas, Hydra composition and validation."""

from jaxtrade.config.compose import compose_raw, compose_run, config_dir, group_options
from jaxtrade.config.schema import (
    DataConfig,
    LoggerConfig,
    RunConfig,
    SweepConfig,
    SweepParam,
    TrainConfig,
    register_configs,
)
from jaxtrade.config.validate import (
    check_batch_divisible,
    check_eval_splits,
    check_window,
    validate_run,
)

__all__ = [
    "DataConfig",
    "LoggerConfig",
    "RunConfig",
    "SweepConfig",
    "SweepParam",
    "TrainConfig",
    "check_batch_divisible",
    "check_eval_splits",
    "check_window",
    "compose_raw",
    "compose_run",
    "config_dir",
    "group_options",
    "register_configs",
    "validate_run",
]
