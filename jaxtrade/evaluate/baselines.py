"""Supervised baseline and running every baseline on the same split and costs as the policy.

The supervised baseline is a logistic regression on the env's own features at bar t
(the same normalized [A, F] values the agent observes at its last window row) predicting
whether close[t+1] > close[t]. It is fitted on the training split only, with labels that
stay inside it, then traded through the env like any policy: long the assets predicted to
rise, short (or flat when `long_only`) the others, equally weighted.

The rule-based baselines (buy-and-hold, MA crossover, z-score, ERC, random) are the env's
(`envs/baselines.py`); `run_baselines` backtests them all with the policy's env params.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.linear_model import LogisticRegression

from jaxtrade.evaluate.backtest import BacktestResult, backtest
from jaxtrade.market import MarketData


@dataclasses.dataclass(frozen=True, eq=False)
class LinearDirectionModel:
    """Per-asset logistic model p(up) = sigmoid(features[t, a] . coef + intercept)."""

    coef: np.ndarray  # [F]
    intercept: float
    train_accuracy: float


def fit_direction_model(market: MarketData, c: float = 1.0) -> LinearDirectionModel:
    """Fit on bars t of the train split whose label bar t+1 is also in the train split."""
    start, end = market.split_bounds("train")
    features = np.asarray(market.features, np.float64)[start : end - 1]  # [n, A, F]
    close = np.asarray(market.close, np.float64)
    valid = np.asarray(market.valid)[start : end - 1] * np.asarray(market.valid)[start + 1 : end]
    up = close[start + 1 : end] > close[start : end - 1]  # [n, A]
    x = features.reshape(-1, features.shape[-1])
    y = up.reshape(-1)
    keep = (valid.reshape(-1) > 0) & np.all(np.isfinite(x), axis=1)
    x, y = x[keep], y[keep]
    if len(np.unique(y)) < 2:
        raise ValueError("the training split has only one direction of price moves")
    model = LogisticRegression(C=c, max_iter=1000).fit(x, y)
    return LinearDirectionModel(
        coef=model.coef_[0].astype(np.float32),
        intercept=float(model.intercept_[0]),
        train_accuracy=float(model.score(x, y)),
    )


def supervised_policy(env: Any, model: LinearDirectionModel) -> Callable:
    """policy_fn(key, obs, state, params) trading the model's predicted direction."""
    coef = jnp.asarray(model.coef)
    intercept = jnp.float32(model.intercept)

    def policy_fn(key, obs, state, params):
        x = params.market.features[state.t]  # [A, F], known at the close of t
        logit = x @ coef + intercept
        direction = jnp.where(logit > 0, 1.0, -1.0)
        direction = jnp.where(params.trading.long_only, jnp.maximum(direction, 0.0), direction)
        weights = direction / env.num_assets
        return env.weights_to_action(weights)

    return policy_fn


def rule_baselines(env: Any) -> dict[str, Callable]:
    """The env's rule-based baseline policies by name (ERC only for several assets)."""
    return dict(_rule_baselines(env))


@functools.lru_cache(maxsize=8)
def _rule_baselines(env: Any) -> dict[str, Callable]:
    # The same function objects for the same env: the backtest compiles a walk per policy
    # function (static, compared by identity), so fresh closures on every report would
    # recompile every baseline's walk each time (measured: 12 s of a 18 s warm report phase).
    from envs import baselines as env_baselines

    policies = {
        "buy_and_hold": env_baselines.buy_and_hold(env),
        "ma_crossover": env_baselines.ma_crossover(env),
        "zscore_reversion": env_baselines.zscore_reversion(env),
    }
    if env.num_assets > 1:
        policies["equal_risk_contribution"] = env_baselines.equal_risk_contribution(env)
    policies["random"] = env_baselines.random_policy(env)
    return policies


def run_baselines(
    env: Any,
    env_params: Any,
    splits: tuple[str, ...] = ("train", "validation", "test"),
    policies: Mapping[str, Callable] | None = None,
    include_supervised: bool = True,
    key: jax.Array | None = None,
) -> dict[str, dict[str, BacktestResult]]:
    """Backtest every baseline on every split: {name: {split: BacktestResult}}.

    `policies` defaults to `rule_baselines(env)`; the logistic-regression baseline is added
    (fitted on the train split) unless `include_supervised` is False.
    """
    policies = dict(rule_baselines(env) if policies is None else policies)
    if include_supervised:
        policies["logistic"] = supervised_policy(env, fit_direction_model(env_params.market))
    key = jax.random.PRNGKey(0) if key is None else key
    out: dict[str, dict[str, BacktestResult]] = {}
    for name, policy_fn in policies.items():
        out[name] = {}
        for split in splits:
            start, end = env_params.market.split_bounds(split)
            if end - start < 2:
                continue
            try:
                out[name][split] = backtest(env, env_params, policy_fn, split=split, key=key)
            except ValueError:
                continue
    return out
