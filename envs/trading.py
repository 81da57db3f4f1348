"""The trading environment: pure JAX, gymnax 1.0 API, vmappable to thousands of envs.

    env, params = envs.make("trading", market)            # see envs/registry.py
    obs, state = env.reset(key, params)
    obs, state, reward, terminated, truncated, info = env.step(key, state, action, params)

Timing (no look-ahead). The state's bar index t is the last bar whose close the agent has
seen. `step` reads the action as the target decided at the close of t:
  1. the target weights become target units sized with bar t's close and equity (a real
     order is a quantity sent after the close), after the risk manager (long-only, ATR sizing,
     leverage cap, circuit-breaker pause) and the no-trade band;
  2. the order fills at the open of t+1 (or its close with `fill_at_close`), paying
     commission + half-spread + slippage (see envs/costs.py);
  3. stops are checked intrabar on bar t+1 (envs/risk.py);
  4. the book is marked at the close of t+1, short borrow / funding are charged, and the
     reward is computed from the net log return of equity (envs/rewards.py);
  5. t becomes t+1 and the observation is built from data <= t+1 (envs/observation.py).
Steps 1-4 are envs/accounting.py (`decide`, then `settle` on bar t+1): pure functions of the
portfolio, the action's weights and the bars they are given; `transition` reads rows t and
t+1 of MarketData and calls them, and `afterstate` gives a planner the exact step-1 result.

Observation: see envs/observation.py. With the defaults (window_bars=32, layout "flat",
portfolio on) its shape is [32 * A * F + 3 A + 2].

Actions (static `action_mode`):
  "discrete"    an int index into `discrete_levels` (default (-1, 0, 1)): the target exposure
                as a fraction of equity, split equally over the A assets.
  "continuous"  float [A] target weights per asset in [-L, L] (L = max_leverage; [0, L] when
                long_only), then scaled so that sum |w| <= L. NaN counts as 0.

Episodes: training mode starts at a uniformly random bar of the chosen split (`split` 0/1/2 =
train/validation/test) and lasts `episode_bars` steps or until the split's last bar
(truncated); evaluation mode (`eval_mode`) starts at the split's first bar (at least
window_bars - 1, so the window is full; earlier bars may belong to the previous split, which
is past data) and walks to its last bar. Bankruptcy terminates. `step` auto-resets: after a
done the returned obs/state are the reset ones and reward/terminated/truncated/info describe
the finished step. `split`, `eval_mode` and `episode_bars` are array fields of EnvParams, so
one compiled program serves training and evaluation.

Truncation bootstrapping (static `final_observation`, default off): with it on, `step` also
returns `info["final_observation"]`, the observation of the state the step reached before the
auto-reset replaced it (same shape and dtype as obs; equal to the returned obs on steps that
do not end an episode). A learner needs it to bootstrap a truncated episode end with V(final
observation) instead of treating it as terminal (agents/ppo.py does when the key is present;
the experiment layer turns it on for training, configs/env/trading.yaml). Off by default
because it writes a second observation per step; `step_env` (no auto-reset) never adds it.

info: equity, position (weights at the close, [A]), units [A], target_weights [A],
traded_notional, costs (fees + spread + slippage + borrow/funding of the step), traded (bool),
stopped (bool), paused (bool), regime (argmax of the regime probabilities at t+1),
log_return, bar (t+1); final_observation from `step` when that option is on (see above).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

from envs import accounting
from envs import observation as obs_lib
from envs import risk as risk_lib
from envs.accounting import (
    Afterstate,
    DecisionBar,
    EnvState,
    NextBar,
    TradingConfig,
    _runtime_one,
    _shared,
)
from envs.costs import TransactionConfig
from envs.rewards import RewardConfig, RewardStats
from envs.risk import RiskConfig
from jaxtrade.market import MarketData
from jaxtrade.xla import module_jit

ACTION_MODES = ("discrete", "continuous")


@struct.dataclass
class EnvParams:
    market: MarketData
    costs: TransactionConfig = TransactionConfig()
    reward: RewardConfig = RewardConfig()
    trading: TradingConfig = TradingConfig()
    risk: RiskConfig = RiskConfig()
    split: jax.Array | int = 0  # 0 train, 1 validation, 2 test
    eval_mode: jax.Array | bool = False
    episode_bars: jax.Array | int = 256


@struct.dataclass
class Shock:
    """Per-step perturbations injected by envs.wrappers.AdversarialWrapper (zero = none)."""

    open_gap: jax.Array  # relative jump of bar t+1's open (and fills/stops there)
    slippage_bps: jax.Array  # extra slippage on every fill of the step

    @staticmethod
    def none() -> Shock:
        z = jnp.zeros((), jnp.float32)
        return Shock(open_gap=z, slippage_bps=z)


def params_as_arrays(params: EnvParams) -> EnvParams:
    """Every numeric knob as a typed device array (so changing a value never recompiles)."""

    def convert(x: Any) -> jax.Array:
        if isinstance(x, bool) or (hasattr(x, "dtype") and x.dtype == bool):
            return jnp.asarray(x, dtype=jnp.bool_)
        if isinstance(x, int) or (hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.integer)):
            return jnp.asarray(x, dtype=jnp.int32)
        return jnp.asarray(x, dtype=jnp.float32)

    knobs = params.replace(market=None)
    knobs = knobs.replace(risk=knobs.risk.replace(
        regime_max_leverage=jnp.asarray(knobs.risk.regime_max_leverage, jnp.float32)))
    knobs = jax.tree_util.tree_map(convert, knobs)
    return knobs.replace(market=params.market)


class TradingEnv(environment.Environment):
    """Single- or multi-asset trading env; shape-changing settings are static attributes."""

    def __init__(
        self,
        market: MarketData,
        *,
        window_bars: int = 32,
        action_mode: str = "discrete",
        discrete_levels: tuple[float, ...] = (-1.0, 0.0, 1.0),
        obs_layout: str = "flat",
        include_portfolio: bool = True,
        final_observation: bool = False,
    ) -> None:
        super().__init__()
        self.window_bars = int(window_bars)
        self.action_mode = action_mode
        self.discrete_levels = tuple(float(x) for x in discrete_levels)
        self.obs_layout = obs_layout
        self.include_portfolio = bool(include_portfolio)
        self.final_observation = bool(final_observation)
        self.num_assets = market.num_assets
        self.num_features = market.num_features
        # Kept only to build default_params; step/reset read the market from params.
        self._default_market = market

    # ---- gymnax surface ------------------------------------------------------------------

    @property
    def name(self) -> str:
        return "trading"

    @property
    def default_params(self) -> EnvParams:
        return params_as_arrays(EnvParams(market=self._default_market))

    @property
    def num_actions(self) -> int:
        if self.action_mode == "discrete":
            return len(self.discrete_levels)
        return self.num_assets

    @property
    def observation_shape(self) -> tuple[int, ...]:
        return obs_lib.observation_shape(
            self.window_bars, self.num_assets, self.num_features, self.obs_layout,
            self.include_portfolio,
        )

    def action_space(self, params: EnvParams | None = None) -> spaces.Space:
        params = self.default_params if params is None else params
        if self.action_mode == "discrete":
            return spaces.Discrete(len(self.discrete_levels))
        high = params.trading.max_leverage
        low = jnp.where(params.trading.long_only, 0.0, -high)
        return spaces.Box(low, high, (self.num_assets,), jnp.float32)

    def observation_space(self, params: EnvParams | None = None) -> spaces.Space:
        return spaces.Box(-jnp.inf, jnp.inf, self.observation_shape, jnp.float32)

    def static_key(self) -> tuple:
        """Everything that changes the compiled program (the market lives in params)."""
        return (self.window_bars, self.action_mode, self.discrete_levels, self.obs_layout,
                self.include_portfolio, self.final_observation, self.num_assets,
                self.num_features)

    def with_action_mode(self, action_mode: str) -> TradingEnv:
        """This env with another action mode: the same market and static settings, and the
        same EnvParams serve both (an ensemble trains discrete and continuous members side
        by side on one market)."""
        if action_mode == self.action_mode:
            return self
        return TradingEnv(self._default_market, window_bars=self.window_bars,
                          action_mode=action_mode, discrete_levels=self.discrete_levels,
                          obs_layout=self.obs_layout, include_portfolio=self.include_portfolio,
                          final_observation=self.final_observation)

    # Equal static settings share compiled programs (jit's cache keys on the static env).
    def __hash__(self) -> int:
        return hash((type(self), self.static_key()))

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.static_key() == self.static_key()

    # ---- API -----------------------------------------------------------------------------

    def reset(self, key: jax.Array, params: EnvParams | None = None):
        params = self.default_params if params is None else params
        return _jit_reset(self, key, params)

    def step(self, key: jax.Array, state: EnvState, action: jax.Array,
             params: EnvParams | None = None):
        params = self.default_params if params is None else params
        return _jit_step(self, key, state, action, params)

    def step_with_shock(self, key, state, action, params, shock):
        """`step` with adversarial perturbations; auto-resets after a done."""
        next_state, reward, terminated, truncated, info = self.transition(
            state, action, params, shock
        )
        done = _shared(terminated | truncated, _runtime_one(next_state))
        # Salting the reset with the finished episode lets a loop reuse one key per env.
        reset_state = self.initial_state(key, params, salt=_episode_salt(next_state))
        # Select the state first and build one observation: cheaper than gymnax's select
        # over two observations, same result.
        state = jax.tree_util.tree_map(
            lambda r, s: jnp.where(done, r, s), reset_state, next_state
        )
        if not self.final_observation:
            return self.get_obs(state, params), state, reward, terminated, truncated, info
        window, portfolio = self._obs_parts(state, params)
        final_window, final_portfolio = self._obs_parts(next_state, params)
        # Where no episode ended both observations describe the same state, but XLA computes
        # the portfolio part twice and may round it differently in the last bits: reuse the
        # returned one there (a select on 3 A + 2 values; the window slices are exact copies).
        if portfolio is not None:
            final_portfolio = jnp.where(done, final_portfolio, portfolio)
        obs = obs_lib.assemble(window, portfolio, self.obs_layout)
        info = {**info, "final_observation": obs_lib.assemble(final_window, final_portfolio,
                                                              self.obs_layout)}
        return obs, state, reward, terminated, truncated, info

    def reset_env(self, key: jax.Array, params: EnvParams):
        state = self.initial_state(key, params)
        return self.get_obs(state, params), state

    def step_env(self, key: jax.Array, state: EnvState, action: jax.Array, params: EnvParams):
        """One step without auto-reset (gymnax's step_env; `is_truncated` gives truncation)."""
        next_state, reward, terminated, _, info = self.transition(
            state, action, params, Shock.none()
        )
        return self.get_obs(next_state, params), next_state, reward, terminated, info

    def is_truncated(self, state: EnvState, params: EnvParams) -> jax.Array:
        return state.t >= state.end

    def is_terminated(self, state: EnvState, params: EnvParams) -> jax.Array:
        return risk_lib.is_bankrupt(state.equity, params.trading.initial_equity, params.risk)

    # ---- episode bounds ------------------------------------------------------------------

    def episode_bounds(self, key: jax.Array, params: EnvParams,
                       salt: jax.Array | int = 0) -> tuple[jax.Array, jax.Array]:
        """(start bar, last bar) of an episode in the chosen split."""
        bounds = params.market.splits[params.split]
        split_start, split_end = bounds[0], bounds[1]
        last_bar = params.market.close.shape[0] - 1
        first = jnp.maximum(split_start, self.window_bars - 1)
        final = jnp.minimum(split_end - 1, last_bar)
        latest_start = jnp.maximum(first, final - params.episode_bars)
        random_start = _uniform_int(key, salt, first, latest_start)
        start = jnp.where(params.eval_mode, first, random_start)
        end = jnp.where(params.eval_mode, final, jnp.minimum(start + params.episode_bars, final))
        return start, jnp.maximum(end, start + 1)

    def initial_state(self, key: jax.Array, params: EnvParams,
                      salt: jax.Array | int = 0) -> EnvState:
        start, end = self.episode_bounds(key, params, salt)
        zeros = jnp.zeros((self.num_assets,), jnp.float32)
        equity = jnp.asarray(params.trading.initial_equity, jnp.float32)
        return EnvState(
            t=start.astype(jnp.int32),
            end=end.astype(jnp.int32),
            time=jnp.zeros((), jnp.int32),
            cash=equity,
            units=zeros,
            entry_price=zeros,
            best_price=zeros,
            bars_in_position=jnp.zeros((self.num_assets,), jnp.int32),
            equity=equity,
            peak_equity=equity,
            breaker_peak=equity,
            pause_left=jnp.zeros((), jnp.int32),
            stats=RewardStats.zeros(),
        )

    # ---- observation ---------------------------------------------------------------------

    def get_obs(self, state: EnvState, params: EnvParams, key: jax.Array | None = None):
        return obs_lib.assemble(*self._obs_parts(state, params), self.obs_layout)

    def _obs_parts(self, state: EnvState, params: EnvParams):
        """(feature window, portfolio vector or None) of the observation at the close of t."""
        market = params.market
        window = obs_lib.feature_window(market.features, state.t, self.window_bars)
        portfolio = None
        if self.include_portfolio:
            portfolio = obs_lib.portfolio_vector(
                state.units, state.entry_price, state.bars_in_position, state.cash,
                state.equity, state.peak_equity, market.close[state.t],
            )
        return window, portfolio

    # ---- compact observations (replay buffers) -------------------------------------------

    def compact_observation(self, obs: jax.Array, bar: jax.Array) -> dict[str, jax.Array]:
        """What `expand_observation` needs to rebuild `obs` exactly: the bar whose close it
        was read at (state.t, or info["bar"] for a final observation) and its portfolio part.
        The market window is not kept: it is a slice of the shared MarketData. Works on
        batches (leading axes of `obs` and `bar` match)."""
        p = obs_lib.portfolio_size(self.num_assets, self.include_portfolio)
        flat_tail = obs[..., obs.shape[-1] - p:] if self.obs_layout == "flat" else \
            obs[..., 0, obs.shape[-1] - p:]
        return {"bar": jnp.asarray(bar, jnp.int32), "portfolio": flat_tail}

    def expand_observation(self, compact: dict[str, jax.Array], params: EnvParams) -> jax.Array:
        """The observation `compact_observation` was made from, bit for bit (one or a batch)."""
        def one(bar: jax.Array, portfolio: jax.Array) -> jax.Array:
            window = obs_lib.feature_window(params.market.features, bar, self.window_bars)
            return obs_lib.assemble(window, portfolio if self.include_portfolio else None,
                                    self.obs_layout)

        bar, portfolio = compact["bar"], compact["portfolio"]
        batch = bar.shape
        rows = int(np.prod(batch, dtype=np.int64))  # explicit: -1 is ambiguous with P = 0
        flat = jax.vmap(one)(bar.reshape(rows), portfolio.reshape((rows, portfolio.shape[-1])))
        return flat.reshape(batch + flat.shape[1:])

    # ---- actions -------------------------------------------------------------------------

    def action_to_weights(self, action: jax.Array, params: EnvParams) -> jax.Array:
        """Raw target weights [A] before the risk manager (leverage cap applied later)."""
        lev = params.trading.max_leverage
        if self.action_mode == "discrete":
            levels = jnp.asarray(self.discrete_levels, jnp.float32)
            index = jnp.clip(jnp.asarray(action, jnp.int32).reshape(()), 0, len(levels) - 1)
            weights = jnp.full((self.num_assets,), levels[index] / self.num_assets)
        else:
            weights = jnp.asarray(action, jnp.float32).reshape((self.num_assets,))
            weights = jnp.clip(jnp.nan_to_num(weights, nan=0.0, posinf=lev, neginf=-lev),
                               -lev, lev)
        return jnp.where(params.trading.long_only, jnp.maximum(weights, 0.0), weights)

    def weights_to_action(self, weights: jax.Array) -> jax.Array:
        """The action that best expresses target weights [A] (baselines use this)."""
        if self.action_mode == "continuous":
            return jnp.asarray(weights, jnp.float32)
        exposure = jnp.sum(weights)
        levels = jnp.asarray(self.discrete_levels, jnp.float32)
        return jnp.argmin(jnp.abs(levels - exposure)).astype(jnp.int32)

    # ---- the transition ------------------------------------------------------------------

    def decision_bar(self, state: EnvState, params: EnvParams) -> DecisionBar:
        """Row t of MarketData (state.t = t): what the accounting uses of bar t."""
        m, t = params.market, state.t
        return DecisionBar(close=m.close[t], atr=m.atr[t], volatility=m.volatility[t],
                           regime=m.regime[t])

    def next_bar(self, state: EnvState, params: EnvParams, shock: Shock) -> NextBar:
        """Row t+1 of MarketData, with the shock's opening gap: the bar that settles a step.

        The env's step is the only caller; a planner must model this bar instead."""
        m, t1 = params.market, state.t + 1
        return NextBar(open=m.open[t1] * (1.0 + shock.open_gap), high=m.high[t1],
                       low=m.low[t1], close=m.close[t1], valid=m.valid[t1])

    def afterstate(self, state: EnvState, action: jax.Array, params: EnvParams,
                   slippage_bps: jax.Array | None = None) -> Afterstate:
        """The exact effect of `action` at the close of t, before bar t+1 is known.

        Reads only row t of MarketData (known at the close of t): the order, its cost rate,
        the target weights after the risk manager and the pause flag (envs/accounting.py).
        `accounting.settle(after, next_bar, params)` then gives the step's result for any
        modelled bar t+1; with the market's own row t+1 it equals `transition` bit for bit
        (but for info["regime"]). For a root state only: below the root, state.t is a bar
        the planner has not seen, so call `accounting.decide` with a modelled DecisionBar.
        """
        return accounting.decide(state, self.action_to_weights(action, params),
                                 self.decision_bar(state, params), params, slippage_bps)

    def transition(self, state: EnvState, action: jax.Array, params: EnvParams, shock: Shock):
        """Pure step from the close of t to the close of t+1 (no reset): read bars t and t+1
        from MarketData, then `accounting.settle(accounting.decide(...))`."""
        after = self.afterstate(state, action, params, shock.slippage_bps)
        next_state, reward, terminated, truncated, info = accounting.settle(
            after, self.next_bar(state, params, shock), params)
        regime = jnp.argmax(params.market.regime[state.t + 1]).astype(jnp.int32)
        return next_state, reward, terminated, truncated, {**info, "regime": regime}


def _uniform_int(key: jax.Array, salt: jax.Array | int, low: jax.Array, high: jax.Array):
    """An integer in [low, high] from the key's bits and a salt.

    The env's only randomness is the episode start. A full threefry draw per env per step
    (the auto-reset is computed every step under vmap) cost more than the whole transition,
    so the start comes from the key's (already pseudo-random) bits passed through the
    murmur3 finalizer, mixed with a salt from the finished episode.
    """
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    bits = key.reshape(-1).astype(jnp.uint32)
    x = bits[0] ^ (bits[-1] * jnp.uint32(0x9E3779B9)) ^ (
        jnp.asarray(salt).astype(jnp.uint32) * jnp.uint32(0x85EBCA6B))
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    x = x ^ (x >> 16)
    span = jnp.maximum(high - low + 1, 1).astype(jnp.uint32)
    return low + (x % span).astype(jnp.int32)


def _episode_salt(state: EnvState) -> jax.Array:
    # Integers only: a float salt would let last-bit rounding (which differs between a
    # vmapped and a single-env program) change episode starts.
    return (state.t.astype(jnp.uint32) * jnp.uint32(0x27D4EB2F)) ^ state.time.astype(
        jnp.uint32)


# module_jit: one compiled program per env object, at most module_jit.max_kept of them kept
@partial(module_jit, static_argnums=(0,))
def _jit_reset(env: TradingEnv, key: jax.Array, params: EnvParams):
    return env.reset_env(key, params)


@partial(module_jit, static_argnums=(0,))
def _jit_step(env: TradingEnv, key, state, action, params):
    return env.step_with_shock(key, state, action, params, Shock.none())
