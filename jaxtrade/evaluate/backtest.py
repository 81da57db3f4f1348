"""Deterministic backtest of a policy over one whole split of the market, with the env's costs.

The env is stepped in evaluation mode (`eval_mode=True`): it starts at the split's first
decidable bar and walks to the split's last bar, one `lax.scan` under one `jit`. Costs,
fills and risk management are the env's own, so a backtest is exactly what training saw.

Rows of the result (one per evaluated bar b, from the first decision bar to the last bar):
  equity            portfolio value at the close of b (initial equity at the first row)
  return            simple return of equity from the close of b-1 to the close of b
                    (0 at the first row, which only anchors the curve)
  position          weight per asset held at the close of b (filled during bar b)
  target_position   weight per asset decided at the close of b, to be filled at b+1. This
                    is what a live runner prints at bar b; on the last row it is the policy's
                    target before the env's risk manager (there is no next bar to fill on)
  trade, cost       whether a fill happened during bar b and the costs paid during it
Metrics use the returns of every row but the first, with the target decided one row
earlier as the position that earned them (held weights drift with prices every bar; the
decided target changes only when the policy trades, which is what trade statistics count).

Recurrent policies: a policy with an `init_carry()` method is called as
`policy_fn(key, obs, state, params, carry) -> (action, carry)`; the backtest starts it from
`init_carry()` at the split's first bar and threads the carry bar to bar, exactly as training
rollouts and the live runner do. `agent_policy(agent, params)` wraps an agent's `act` (its
batched policy call for one bar, given the observation and the env state it summarizes) that
way (for every network: a feed-forward carry is an empty tuple) and hands the agent's
parameters to the compiled walk as inputs, so one program serves every checkpoint. A carry
that is a dict with a `report` entry (the ensemble's member weights, member targets and
trade probability) is recorded per bar into `BacktestResult.report`.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import polars as pl
from flax import struct

from jaxtrade import metrics as metrics_lib
from jaxtrade.market import SPLIT_NAMES
from jaxtrade.xla import jit_once

PolicyFn = Callable[..., Any]  # policy_fn(key, obs, state, params[, carry]) -> action[, carry]


@struct.dataclass
class AgentPolicy:
    """An agent's `act` as a backtest policy: recurrent state carried, parameters traced.

    A pytree whose only leaves are the agent's parameters; `act` and `init_carry` are static
    (compared by identity), so backtests of other parameters of the same agent reuse one
    compiled program instead of baking each set of weights into a new one.
    """

    params: Any
    act: Callable[..., Any] = struct.field(pytree_node=False)
    initial_carry: Callable[[], Any] = struct.field(pytree_node=False)

    def init_carry(self) -> Any:
        return self.initial_carry()

    def __call__(self, key: jax.Array, obs: jax.Array, state: Any, env_params: Any, carry: Any,
                 deterministic: Any = True) -> tuple[jax.Array, Any]:
        return self.act(self.params, obs, state, env_params, key, carry, deterministic)


def agent_policy(agent: Any, params: Any) -> AgentPolicy:
    """Backtest policy of one point's `params` of `agent` (agents/common/types.py `Agent`)."""
    return AgentPolicy(params, agent.act, agent.init_carry)


@struct.dataclass
class _StaticPolicy:
    # A plain policy function, passed to the compiled walk as static (hashed by identity).
    fn: Callable[..., Any] = struct.field(pytree_node=False)


@dataclasses.dataclass
class BacktestResult:
    """Per-bar arrays of one backtest (host numpy) plus its metrics."""

    split: str
    timestamps: np.ndarray  # datetime64[us] [n]
    symbols: tuple[str, ...]
    equity: np.ndarray  # [n]
    returns: np.ndarray  # [n], returns[0] == 0
    positions: np.ndarray  # [n, A]
    target_positions: np.ndarray  # [n, A]
    trades: np.ndarray  # bool [n]
    costs: np.ndarray  # [n]
    close: np.ndarray  # [n, A]
    bars_per_year: float
    metrics: dict[str, float]
    terminated: bool = False  # bankrupt before the split ended
    # A composite policy's per-bar record (its carry's `report`: the ensemble's member
    # weights [n, M], member targets [n, M, A], trade probability [n]), rows as targets.
    report: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    # Extra positions.csv columns, [n] per bar or [n, A] per (bar, symbol).
    columns: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @property
    def num_bars(self) -> int:
        return len(self.returns)

    def frame(self) -> pl.DataFrame:
        """Long polars frame: one row per (bar, symbol)."""
        n, a = self.positions.shape
        ts = np.repeat(self.timestamps.astype("datetime64[us]"), a)
        return pl.DataFrame(
            {
                "timestamp": pl.Series(ts).dt.replace_time_zone("UTC"),
                "symbol": np.tile(np.asarray(self.symbols, dtype=object), n).astype(str),
                "split": [self.split] * (n * a),
                "equity": np.repeat(self.equity, a),
                "return": np.repeat(self.returns, a),
                "close": self.close.reshape(-1),
                "position": self.positions.reshape(-1),
                "target_position": self.target_positions.reshape(-1),
                "trade": np.repeat(self.trades, a),
                "cost": np.repeat(self.costs, a),
                **{name: (np.repeat(v, a) if np.ndim(v) == 1 else np.asarray(v).reshape(-1))
                   for name, v in self.columns.items()},
            }
        )


def split_index(split: str | int) -> int:
    if isinstance(split, str):
        if split not in SPLIT_NAMES:
            raise ValueError(f"split must be one of {SPLIT_NAMES}, got {split!r}")
        return SPLIT_NAMES.index(split)
    return int(split)


def eval_bounds(env: Any, env_params: Any, split: str | int) -> tuple[int, int]:
    """(first decision bar, last bar) that the env's evaluation mode walks for `split`."""
    market = env_params.market
    start, end = market.split_bounds(SPLIT_NAMES[split_index(split)])
    first = max(start, int(env.window_bars) - 1)
    last = min(end - 1, market.num_bars - 1)
    if last <= first:
        raise ValueError(
            f"split {SPLIT_NAMES[split_index(split)]!r} [{start}, {end}) has no bar to trade "
            f"after the {env.window_bars}-bar observation window"
        )
    return first, last


def _accepts_deterministic(policy_fn: PolicyFn) -> bool:
    try:
        return "deterministic" in inspect.signature(policy_fn).parameters
    except (TypeError, ValueError):
        return False


def _flat_action(env: Any) -> jax.Array:
    return env.weights_to_action(jnp.zeros((env.num_assets,), jnp.float32))


def rollout(
    env: Any,
    env_params: Any,
    policy_fn: PolicyFn,
    split: str | int,
    key: jax.Array,
    deterministic: bool = True,
    delay_bars: int = 0,
) -> dict[str, jax.Array]:
    """Walk `split` in eval mode; stacked per-step info plus the final target (device arrays).

    `delay_bars` > 0 applies each decision `delay_bars` bars late (a stress test of slow
    execution): the env receives the action decided `delay_bars` steps earlier, flat before.
    """
    first, last = eval_bounds(env, env_params, split)
    # The scan always covers the longest possible walk and masks the bars past this split's
    # end, so every split of a market shares one compiled program per policy.
    max_steps = env_params.market.num_bars - 1
    num_steps = jnp.asarray(last - first, jnp.int32)
    params = eval_params(env_params, split)
    mode, policy = _static_policy(policy_fn, deterministic)
    records = _rollout_jit(env, max_steps, int(delay_bars), mode, policy, params, key,
                           num_steps)
    steps = last - first
    per_step = ("equity", "position", "target", "trade", "cost", "alive")
    out = {k: (v[:steps] if k in per_step else v) for k, v in records.items()}
    if "report" in records:
        out["report"] = jax.tree.map(lambda v: v[:steps], records["report"])
    return out


def eval_params(env_params: Any, split: str | int) -> Any:
    """`env_params` set to walk `split` in evaluation mode (from its first decidable bar)."""
    return env_params.replace(
        split=jnp.asarray(split_index(split), jnp.int32), eval_mode=jnp.asarray(True)
    )


def _static_policy(policy_fn: PolicyFn, deterministic: bool) -> tuple[bool | None, Any]:
    # None: the policy takes no `deterministic` argument. Static, so one compile per setting.
    mode = bool(deterministic) if _accepts_deterministic(policy_fn) else None
    policy = policy_fn if isinstance(policy_fn, AgentPolicy) else _StaticPolicy(policy_fn)
    return mode, policy


def walk(env: Any, params: Any, policy_fn: PolicyFn, num_steps: int, key: jax.Array,
         deterministic: bool = True) -> dict[str, jax.Array]:
    """The backtest's walk as a traceable function (jit and vmap it yourself).

    `params` come from `eval_params` (they may be traced); `num_steps` is `last - first` of
    `eval_bounds`. Returns what `rollout` returns, exactly `num_steps` rows per bar record.
    """
    mode, policy = _static_policy(policy_fn, deterministic)
    return _rollout_impl(env, int(num_steps), 0, mode, policy, params, key,
                         jnp.asarray(num_steps, jnp.int32))


def _rollout_impl(env, max_steps, delay_bars, mode, policy, params, key, num_steps):
    """The eval-mode walk; `policy` is an AgentPolicy or a _StaticPolicy. Also vmappable over
    an AgentPolicy's parameters (the training loop's validation of every point at once)."""
    policy_fn = policy.fn if isinstance(policy, _StaticPolicy) else policy
    recurrent = hasattr(policy_fn, "init_carry")
    kwargs = {} if mode is None else {"deterministic": mode}

    def act(k, o, s, p, c):
        if recurrent:
            return policy_fn(k, o, s, p, c, **kwargs)
        return policy_fn(k, o, s, p, **kwargs), c

    reset_key, loop_key = jax.random.split(key)
    obs, state = env.reset(reset_key, params)
    # The recurrent state starts fresh at the split's first bar, like an episode start.
    policy_carry = policy_fn.init_carry() if recurrent else ()
    flat = _flat_action(env)
    queue = jnp.stack([flat] * delay_bars) if delay_bars else None

    def one_bar(carry, scanned):
        step, step_key = scanned
        obs, state, solvent, queue, policy_carry = carry
        alive = solvent & (step < num_steps)
        policy_key, env_key = jax.random.split(step_key)
        decided, new_carry = act(policy_key, obs, state, params, policy_carry)
        # Past the split's last bar (the scan runs to the longest split) or after a
        # bankruptcy the policy's memory stays as it was too: the final decision below then
        # comes from the carry of the last bar walked, as the live runner's does (a
        # recurrent state or the ensemble's vote is not advanced by bars that did not happen).
        policy_carry = jax.tree_util.tree_map(
            lambda new, old: jnp.where(alive, new, old), new_carry, policy_carry)
        if delay_bars:
            action = queue[0]
            queue = jnp.concatenate([queue[1:], decided[None]], axis=0)
        else:
            action = decided
        next_obs, next_state, _, terminated, info = env.step_env(env_key, state, action, params)
        # After a bankruptcy the book stays as it was: no return, no trades, no costs.
        keep = lambda new, old: jnp.where(alive, new, old)
        state_out = jax.tree_util.tree_map(keep, next_state, state)
        obs_out = keep(next_obs, obs)
        record = {
            "equity": jnp.where(alive, info["equity"], state.equity),
            "position": jnp.where(alive, info["position"], 0.0),
            "target": jnp.where(alive, info["target_weights"], 0.0),
            "trade": alive & info["traded"],
            "cost": jnp.where(alive, info["costs"], 0.0),
            "alive": alive,
        }
        if isinstance(policy_carry, dict) and "report" in policy_carry:
            record["report"] = policy_carry["report"]  # a composite policy's per-bar beliefs
        return (obs_out, state_out, solvent & ~(alive & terminated), queue, policy_carry), record

    keys = jax.random.split(loop_key, max_steps + 1)
    steps = jnp.arange(max_steps)
    (obs, state, alive, _, policy_carry), records = jax.lax.scan(
        one_bar, (obs, state, jnp.asarray(True), queue, policy_carry), (steps, keys[:max_steps])
    )
    final_action, final_carry = act(keys[-1], obs, state, params, policy_carry)
    final_target = jnp.where(alive, env.action_to_weights(final_action, params), 0.0)
    if isinstance(final_carry, dict) and "report" in final_carry:
        records["final_report"] = final_carry["report"]
    records["final_target"] = final_target
    records["survived"] = alive
    records["initial_equity"] = jnp.asarray(params.trading.initial_equity, jnp.float32)
    return records


_rollout_jit = jit_once(_rollout_impl, static_argnums=(0, 1, 2, 3))


def backtest(
    env: Any,
    env_params: Any,
    policy_fn: PolicyFn,
    split: str = "test",
    deterministic: bool = True,
    key: jax.Array | None = None,
    delay_bars: int = 0,
) -> BacktestResult:
    """Backtest `policy_fn(key, obs, state, params) -> action` over a whole split.

    Recurrent policies (see the module docstring, or `agent_policy`) carry their state from
    the split's first bar.
    `deterministic` is passed to policies that accept it (greedy instead of sampled
    actions); with `key=None` a fixed key is used so the same policy gives the same numbers.
    """
    key = jax.random.PRNGKey(0) if key is None else key
    name = SPLIT_NAMES[split_index(split)]
    rec = jax.device_get(rollout(env, env_params, policy_fn, name, key, deterministic, delay_bars))
    return result_from_rollout(env, env_params, name, rec)


def result_from_rollout(env: Any, env_params: Any, split: str, rec: dict) -> BacktestResult:
    """Assemble the per-bar arrays (first row = the starting bar) and the metrics."""
    market = env_params.market
    first, last = eval_bounds(env, env_params, split)
    initial = float(rec["initial_equity"])
    equity = np.concatenate([[initial], np.asarray(rec["equity"], np.float64)])
    returns = np.zeros_like(equity)
    previous = np.where(np.abs(equity[:-1]) > 0, equity[:-1], np.nan)
    returns[1:] = np.nan_to_num(equity[1:] / previous - 1.0)
    num_assets = market.num_assets
    positions = np.concatenate(
        [np.zeros((1, num_assets)), np.asarray(rec["position"], np.float64)], axis=0
    )
    targets = np.concatenate(
        [np.asarray(rec["target"], np.float64), np.asarray(rec["final_target"])[None]], axis=0
    )
    trades = np.concatenate([[False], np.asarray(rec["trade"], bool)])
    costs = np.concatenate([[0.0], np.asarray(rec["cost"], np.float64)])
    bars = np.arange(first, last + 1)
    close = np.asarray(market.close, np.float64)[bars]
    report = {}
    if "report" in rec:  # decisions at every row, the last one's from the final call
        report = {k: np.concatenate([np.asarray(v), np.asarray(rec["final_report"][k])[None]])
                  for k, v in rec["report"].items()}
    bars_per_year = float(market.meta.bars_per_year)
    metrics = metrics_lib.metrics_dict(returns[1:], bars_per_year, targets[:-1])
    return BacktestResult(
        split=split,
        timestamps=np.asarray(market.meta.timestamps)[bars],
        symbols=tuple(market.meta.symbols),
        equity=equity,
        returns=returns,
        positions=positions,
        target_positions=targets,
        trades=trades,
        costs=costs,
        close=close,
        bars_per_year=bars_per_year,
        metrics=metrics,
        terminated=not bool(rec["survived"]),
        report=report,
    )


def backtest_all_splits(
    env: Any, env_params: Any, policy_fn: PolicyFn, **kwargs: Any
) -> dict[str, BacktestResult]:
    """`backtest` on every non-empty split that has a tradable bar."""
    out = {}
    for name in SPLIT_NAMES:
        start, end = env_params.market.split_bounds(name)
        if end - start < 2:
            continue
        try:
            out[name] = backtest(env, env_params, policy_fn, split=name, **kwargs)
        except ValueError:
            continue
    return out


def costs_description(env_params: Any) -> str:
    """One line stating the env's cost settings, for reports."""
    c = env_params.costs
    v = lambda x: float(np.asarray(x))
    return (
        f"commission {v(c.fee_bps):g} bps + half-spread {v(c.half_spread_bps):g} bps per fill; "
        f"slippage {v(c.slippage_vol_mult):g} x bar volatility (cap {v(c.slippage_cap_bps):g} "
        f"bps); short borrow {v(c.borrow_bps_per_bar):g} bps/bar; funding "
        f"{v(c.funding_bps_per_bar):g} bps/bar; no-trade band "
        f"{v(c.min_trade_fraction) * 100:g}% of equity"
    )


def scale_costs(env_params: Any, factor: float) -> Any:
    """EnvParams with every transaction cost multiplied by `factor` (stress tests)."""
    c = env_params.costs
    scaled = c.replace(
        fee_bps=c.fee_bps * factor,
        half_spread_bps=c.half_spread_bps * factor,
        slippage_vol_mult=c.slippage_vol_mult * factor,
        slippage_cap_bps=c.slippage_cap_bps * factor,
        borrow_bps_per_bar=c.borrow_bps_per_bar * factor,
        funding_bps_per_bar=c.funding_bps_per_bar * factor,
    )
    return env_params.replace(costs=scaled)
