"""The W&B sweep that drives a cloud sweep: parameters, metric and the `jaxtrade train` command.

A W&B agent starts each run as its sweep's `command`. `${args_no_hyphens}` expands to the
run's parameters as `key=value`, which is Hydra's override syntax, so every run is a plain
`jaxtrade train <fixed overrides> <this run's values>` that logs to W&B.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from jaxtrade.cloud import CloudError
from jaxtrade.errors import ConfigError

METHODS = ("grid", "random", "bayes")
METRIC = {"name": "validation_sharpe", "goal": "maximize"}  # what train logs per evaluation
SWEEP_PATH = re.compile(r"^[\w.-]+/[\w.-]+/\w+$")


def parameter_values(values: Sequence[Any]) -> dict[str, Any]:
    return {"values": list(values)}


def parameter_range(low: float, high: float, log: bool) -> dict[str, Any]:
    return {"distribution": "log_uniform_values" if log else "uniform",
            "min": float(low), "max": float(high)}


def num_runs(method: str, parameters: Mapping[str, Mapping[str, Any]],
             run_cap: int | None) -> int | None:
    """Runs the sweep will start: the grid's size, else its run cap (None: unbounded)."""
    if method == "grid":
        return math.prod(len(p["values"]) for p in parameters.values())
    return run_cap


def train_command(fixed_overrides: Sequence[str], project: str, entity: str | None) -> list[str]:
    """The command each W&B run executes (the agent fills in `${args_no_hyphens}`)."""
    logger = ["logger=wandb", "logger.mode=online", f"logger.project={project}"]
    if entity:
        logger.append(f"logger.entity={entity}")
    return ["${env}", "jaxtrade", "train", *fixed_overrides, *logger, "${args_no_hyphens}"]


def sweep_config(parameters: Mapping[str, Mapping[str, Any]], method: str,
                 fixed_overrides: Sequence[str], *, project: str, entity: str | None,
                 name: str | None = None, run_cap: int | None = None) -> dict[str, Any]:
    """A W&B sweep config (the dict `wandb.sweep` takes)."""
    if method not in METHODS:
        raise ConfigError(f"--method {method!r} is not allowed: choose one of {', '.join(METHODS)}")
    if not parameters:
        raise ConfigError("the sweep has no axes: give sweep=<name> or comma lists such as "
                         "agent.hparams.learning_rate=1e-4,3e-4")
    if method == "grid":
        ranged = [k for k, p in parameters.items() if "values" not in p]
        if ranged:
            raise ConfigError(f"grid sweeps need lists of values, but {ranged[0]} is a range; "
                             "use --method random or --method bayes")
    config: dict[str, Any] = {
        "program": "jaxtrade",
        "method": method,
        "metric": dict(METRIC),
        "parameters": {k: dict(v) for k, v in parameters.items()},
        "command": train_command(fixed_overrides, project, entity),
    }
    if name:
        config["name"] = name
    if run_cap is not None and method != "grid":
        config["run_cap"] = int(run_cap)
    return config


def create_sweep(config: Mapping[str, Any], project: str, entity: str | None) -> str:
    """Create the sweep in W&B; returns its full path ENTITY/PROJECT/ID."""
    import wandb

    try:
        sweep_id = wandb.sweep(dict(config), entity=entity, project=project)
        if not entity:
            entity = wandb.Api().default_entity
    except Exception as err:  # W&B's own message, first line, never the key
        raise CloudError(f"W&B could not create the sweep: {str(err).splitlines()[0]}") from None
    if not sweep_id or not entity:
        raise CloudError("W&B created no sweep id (or no default entity): pass --entity")
    return f"{entity}/{project}/{sweep_id}"


def check_sweep_path(path: str) -> str:
    if not SWEEP_PATH.match(path):
        raise ConfigError(f"--sweep-id {path!r} is not allowed: give ENTITY/PROJECT/ID, e.g. "
                         "my-team/jaxtrade/abc123de")
    return path
