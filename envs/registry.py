"""`envs.make(name, market, **overrides) -> (env, params)`.

Overrides are either static settings of the env object (shape-changing: window_bars,
action_mode, discrete_levels, obs_layout, include_portfolio; and final_observation, which
adds info["final_observation"] for truncation bootstrapping) or EnvParams fields, given
  - nested by group:  costs={"fee_bps": 2.0}, risk={"stop_loss_atr": 3.0}
  - dotted:           **{"costs.fee_bps": 2.0}
  - flat (unique names): fee_bps=2.0, stop_loss_atr=3.0, split=2, eval_mode=True
Groups: costs (TransactionConfig), reward (RewardConfig), trading (TradingConfig),
risk (RiskConfig); top level: split, eval_mode, episode_bars.
An unknown key raises ConfigError naming it and the closest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

import numpy as np

from envs.observation import LAYOUTS
from envs.trading import ACTION_MODES, EnvParams, TradingEnv, params_as_arrays
from jaxtrade.errors import ConfigError
from jaxtrade.market import SPLIT_NAMES, MarketData

STATIC_KEYS = ("window_bars", "action_mode", "discrete_levels", "obs_layout",
               "include_portfolio", "final_observation")
GROUPS = ("costs", "reward", "trading", "risk")
TOP_LEVEL = ("split", "eval_mode", "episode_bars")
ENV_NAMES = ("trading",)


def _group_fields(params: EnvParams) -> dict[str, tuple[str, ...]]:
    return {g: tuple(f.name for f in dataclasses.fields(getattr(params, g))) for g in GROUPS}


def valid_keys(params: EnvParams) -> list[str]:
    fields = _group_fields(params)
    flat = [name for names in fields.values() for name in names]
    dotted = [f"{g}.{name}" for g, names in fields.items() for name in names]
    return [*STATIC_KEYS, *TOP_LEVEL, *GROUPS, *flat, *dotted]


def _unknown(key: str, candidates: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.0)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"unknown env setting '{key}'{hint}")


def make(name: str, market: MarketData, **overrides: Any) -> tuple[TradingEnv, EnvParams]:
    """Build an env and its params; see the module docstring for overrides."""
    if name not in ENV_NAMES:
        raise _unknown(name, list(ENV_NAMES))
    params = EnvParams(market=market)
    fields = _group_fields(params)
    owner = {n: g for g, names in fields.items() for n in names}
    candidates = valid_keys(params)

    static: dict[str, Any] = {}
    per_group: dict[str, dict[str, Any]] = {g: {} for g in GROUPS}
    top: dict[str, Any] = {}
    for key, value in overrides.items():
        if key in STATIC_KEYS:
            static[key] = value
        elif key in TOP_LEVEL:
            top[key] = value
        elif key in GROUPS:
            if not isinstance(value, dict):
                raise ConfigError(f"env setting '{key}' must be a mapping of its fields")
            for sub, v in value.items():
                if sub not in fields[key]:
                    raise _unknown(f"{key}.{sub}", [f"{key}.{n}" for n in fields[key]])
                per_group[key][sub] = v
        elif "." in key and key.split(".", 1)[0] in GROUPS:
            group, sub = key.split(".", 1)
            if sub not in fields[group]:
                raise _unknown(key, candidates)
            per_group[group][sub] = value
        elif key in owner:
            per_group[owner[key]][key] = value
        else:
            raise _unknown(key, candidates)

    if "split" in top and isinstance(top["split"], str):
        if top["split"] not in SPLIT_NAMES:
            raise _unknown(top["split"], list(SPLIT_NAMES))
        top["split"] = SPLIT_NAMES.index(top["split"])
    _check_static(static)
    for group, values in per_group.items():
        if values:
            params = params.replace(**{group: getattr(params, group).replace(**values)})
    params = params_as_arrays(params.replace(**top))
    env = TradingEnv(market, **static)
    _check_market(env, params)
    return env, params


def _check_static(static: dict[str, Any]) -> None:
    if "action_mode" in static and static["action_mode"] not in ACTION_MODES:
        raise ConfigError(f"action_mode must be one of {ACTION_MODES}, got "
                          f"'{static['action_mode']}'")
    if "obs_layout" in static and static["obs_layout"] not in LAYOUTS:
        raise ConfigError(f"obs_layout must be one of {LAYOUTS}, got '{static['obs_layout']}'")
    if "window_bars" in static and int(static["window_bars"]) < 1:
        raise ConfigError("window_bars must be >= 1")
    if "discrete_levels" in static and len(static["discrete_levels"]) < 2:
        raise ConfigError("discrete_levels needs at least two levels")
    # bool("false") is True: anything but a boolean here is a mistake, not a switch.
    if "final_observation" in static and not isinstance(static["final_observation"],
                                                        (bool, np.bool_)):
        raise ConfigError(f"final_observation must be true or false, got "
                          f"{static['final_observation']!r}")


def _check_market(env: TradingEnv, params: EnvParams) -> None:
    num_bars = params.market.num_bars
    if num_bars < env.window_bars + 1:
        raise ConfigError(f"market has {num_bars} bars; window_bars={env.window_bars} needs at "
                          f"least {env.window_bars + 1}")
    split = int(params.split)
    if not 0 <= split < len(SPLIT_NAMES):
        raise ConfigError(f"split must be 0, 1, 2 or one of {SPLIT_NAMES}, got {split}")
    start, end = (int(x) for x in params.market.splits[split])
    if min(end, num_bars) - max(start, env.window_bars - 1) < 2:
        raise ConfigError(f"split '{SPLIT_NAMES[split]}' has bars [{start}, {end}): too short "
                          f"to trade with window_bars={env.window_bars}")
