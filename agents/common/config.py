"""Plain-dict conversion for agent configs (the experiment layer maps YAML onto these).

Configs are frozen dataclasses; hyperparameters are flax struct dataclasses of floats so they can be
vmapped. `config_from_dict` rejects unknown keys with a `ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtrade.errors import ConfigError


def config_to_dict(config: Any) -> dict[str, Any]:
    """Nested plain dict of a (hyper)parameter dataclass; tuples become lists, arrays floats."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            value = config_to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, (jax.Array, np.ndarray, np.generic)):
            value = np.asarray(value).tolist()
        out[field.name] = value
    return out


def config_from_dict(cls: type, data: dict[str, Any] | None, where: str = "") -> Any:
    """Build dataclass `cls` from a nested dict; missing keys keep their defaults."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown key {where}{unknown[0]!r} for {cls.__name__}; allowed: {sorted(names)}"
        )
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        hint = hints.get(name)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = config_from_dict(hint, value, where=f"{where}{name}.")
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"bad {cls.__name__} config: {err}") from err


def hparams_as_arrays(hparams: Any) -> Any:
    """Float32 arrays for every hyperparameter leaf, so they are traced values, not constants."""
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), hparams)


def stack_hparams(hparams_list: list[Any]) -> Any:
    """Stack hyperparameter structs along a new leading axis, for `jax.vmap(train)`."""
    arrays = [hparams_as_arrays(h) for h in hparams_list]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *arrays)


def chunked_run_sizes(num_envs: int, rollout_len: int, total_steps: int,
                      updates_per_chunk: int) -> tuple[int, int, int]:
    """(num_updates, updates_per_chunk, steps_per_update): `total_steps` env steps rounded down
    to whole chunks of updates of `num_envs * rollout_len` env steps each."""
    steps_per_update = num_envs * rollout_len
    wanted = total_steps // steps_per_update
    if wanted < 1:
        raise ConfigError(f"total_steps={total_steps} is less than one update "
                          f"(num_envs * rollout_len = {steps_per_update})")
    per_chunk = max(1, min(updates_per_chunk, wanted))
    return (wanted // per_chunk) * per_chunk, per_chunk, steps_per_update
