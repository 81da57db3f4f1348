"""The env step is reading bars + envs.accounting; the numpy ledger agrees with it; no
MarketData row after t+1 reaches the reward at t; the planner's afterstate is exact."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs import accounting
from envs.accounting import DecisionBar, EnvState, NextBar
from envs.costs import TransactionConfig
from envs.rewards import RewardConfig, RewardStats
from envs.risk import RiskConfig
from envs.trading import EnvParams, Shock, TradingConfig, params_as_arrays
from jaxtrade.live.bars import Bar
from jaxtrade.live.ledger import Ledger
from jaxtrade.market import from_arrays

T = 120
N = 64  # random states per check


def random_market(num_assets: int, seed: int = 0, bars: int = T):
    rng = np.random.default_rng(seed)
    shape = (bars, num_assets)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, shape), 0))
    open_ = close * np.exp(rng.normal(0, 0.01, shape))
    high = np.maximum(close, open_) * (1 + np.abs(rng.normal(0, 0.01, shape)))
    low = np.minimum(close, open_) * (1 - np.abs(rng.normal(0, 0.01, shape)))
    return from_arrays(close, open=open_, high=high, low=low,
                       valid=(rng.random(shape) > 0.05).astype(np.float32),
                       regime=rng.dirichlet(np.ones(3), bars),
                       volatility=np.abs(rng.normal(0.02, 0.01, shape)),
                       atr=np.abs(rng.normal(2.0, 0.5, shape)))


SETTINGS = {
    "defaults": {},
    "stops_breaker_funding": dict(stop_loss_atr=1.0, trailing_stop_atr=1.5, max_leverage=2.0,
                                  circuit_breaker_drawdown=0.03, pause_bars=3,
                                  funding_bps_per_bar=2.0),
    "fill_at_close_sizing_rewards": dict(fill_at_close=True, stop_loss_atr=0.5, atr_sizing=True,
                                         regime_caps=True, max_leverage=3.0, w_dsr=0.5,
                                         w_ddr=0.3, drawdown_penalty=1.0,
                                         turnover_penalty=0.1, tail_penalty=2.0),
}


def random_states(env, params, key, n=N):
    """Consistent but arbitrary portfolios at random bars (positions, stops, pauses, stats)."""
    m, a = params.market, env.num_assets
    k = jax.random.split(key, 10)
    t = jax.random.randint(k[0], (n,), env.window_bars - 1, T - 1)
    close_t = m.close[t]
    units = jax.random.normal(k[1], (n, a)) * 5 * (jax.random.uniform(k[2], (n, a)) > 0.3)
    held = units != 0
    entry = jnp.where(held, close_t * (1 + 0.03 * jax.random.normal(k[3], (n, a))), 0.0)
    best = jnp.where(held, entry * (1 + 0.02 * jax.random.normal(k[4], (n, a))), 0.0)
    cash = 1000.0 * jax.random.uniform(k[5], (n,), minval=0.2, maxval=2.0)
    equity = cash + jnp.sum(units * close_t, axis=1)
    peak = equity * (1 + 0.1 * jax.random.uniform(k[6], (n,)))
    pause = jax.random.choice(k[7], jnp.asarray([0, 0, 0, 1, 3], jnp.int32), (n,))
    stats = RewardStats(mean=1e-3 * jax.random.normal(k[8], (n,)),
                        var=1e-4 * jax.random.uniform(k[9], (n,)),
                        down2=1e-4 * jax.random.uniform(k[9], (n,)) ** 2)
    return EnvState(
        t=t.astype(jnp.int32), end=(t + 1 + t % 5).astype(jnp.int32),
        time=(t % 7).astype(jnp.int32), cash=cash, units=units, entry_price=entry,
        best_price=best,
        bars_in_position=jnp.where(held, t[:, None] % 9, 0).astype(jnp.int32),
        equity=equity, peak_equity=peak, breaker_peak=peak, pause_left=pause, stats=stats)


def make_env(market, mode, **kw):
    return envs.make("trading", market, window_bars=4, action_mode=mode,
                     initial_equity=1000.0, **kw)


def read_and_account(env, state, action, params, shock):
    """The step spelled out: rows t and t+1 of MarketData, then the accounting function."""
    m, t = params.market, state.t
    decision = DecisionBar(close=m.close[t], atr=m.atr[t], volatility=m.volatility[t],
                           regime=m.regime[t])
    nxt = NextBar(open=m.open[t + 1] * (1.0 + shock.open_gap), high=m.high[t + 1],
                  low=m.low[t + 1], close=m.close[t + 1], valid=m.valid[t + 1])
    knobs = params.replace(market=None)  # the accounting never sees MarketData
    return accounting.account(state, env.action_to_weights(action, params), decision, nxt,
                              knobs, shock.slippage_bps)


@pytest.mark.parametrize("setting", sorted(SETTINGS))
@pytest.mark.parametrize("mode", ["discrete", "continuous"])
def test_env_transition_is_reading_bars_plus_accounting(mode, setting):
    market = random_market(2)
    env, params = make_env(market, mode, **SETTINGS[setting])
    key = jax.random.key(1)
    states = random_states(env, params, key)
    if mode == "discrete":
        actions = jax.random.randint(jax.random.fold_in(key, 1), (N,), 0, 3)
    else:
        actions = jax.random.uniform(jax.random.fold_in(key, 1), (N, 2), minval=-2.5,
                                     maxval=2.5)
    shocks = Shock(open_gap=0.03 * jax.random.normal(jax.random.fold_in(key, 2), (N,)),
                   slippage_bps=jnp.abs(jax.random.normal(jax.random.fold_in(key, 3), (N,))))
    for shock in (jax.vmap(lambda _: Shock.none())(jnp.arange(N)), shocks):
        env_out = jax.jit(jax.vmap(env.transition, in_axes=(0, 0, None, 0)))(
            states, actions, params, shock)
        acc_out = jax.jit(jax.vmap(read_and_account, in_axes=(None, 0, 0, None, 0)),
                          static_argnums=0)(env, states, actions, params, shock)
        env_info = dict(env_out[4])
        regime = env_info.pop("regime")
        np.testing.assert_array_equal(
            regime, np.argmax(np.asarray(market.regime)[np.asarray(states.t) + 1], axis=1))
        for a, b in zip(jax.tree_util.tree_leaves((*env_out[:4], env_info)),
                        jax.tree_util.tree_leaves(acc_out), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The random states exercise what they should: stops, pauses, trades, dropped orders.
    info = env_out[4]
    assert np.any(info["traded"]) and np.any(info["paused"])
    if SETTINGS[setting].get("stop_loss_atr"):
        assert np.any(info["stopped"])


@pytest.mark.parametrize("mode", ["discrete", "continuous"])
def test_afterstate_then_settle_is_the_step_and_scores_chance_outcomes(mode):
    market = random_market(2, seed=3)
    env, params = make_env(market, mode, **SETTINGS["stops_breaker_funding"])
    states = random_states(env, params, jax.random.key(5))
    actions = jnp.arange(N) % 3 if mode == "discrete" else \
        jax.random.uniform(jax.random.key(6), (N, 2), minval=-2, maxval=2)

    def exact(state, action, params):  # params as an argument, as in `want`: no constant folding
        after = env.afterstate(state, action, params)
        nxt = env.next_bar(state, params, Shock.none())
        return accounting.settle(after, nxt, params.replace(market=None))

    got = jax.jit(jax.vmap(exact, in_axes=(0, 0, None)))(states, actions, params)
    want = jax.jit(jax.vmap(env.transition, in_axes=(0, 0, None, None)))(
        states, actions, params, Shock.none())
    want_info = {k: v for k, v in want[4].items() if k != "regime"}
    for a, b in zip(jax.tree_util.tree_leaves((*want[:4], want_info)),
                    jax.tree_util.tree_leaves(got), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    # One afterstate, a batch of modelled next bars (a planner's chance outcomes).
    state = jax.tree_util.tree_map(lambda x: x[0], states)
    after = env.afterstate(state, actions[0], params)
    moves = jnp.linspace(-0.05, 0.05, 11)[:, None]
    close_t = market.close[state.t]
    outcomes = NextBar(open=close_t * (1 + moves / 2), high=close_t * (1 + jnp.abs(moves)),
                       low=close_t * (1 - jnp.abs(moves)), close=close_t * (1 + moves),
                       valid=jnp.ones((11, 2)))
    settled = jax.jit(jax.vmap(accounting.settle, in_axes=(None, 0, None)))(
        after, outcomes, params.replace(market=None))
    for i in (0, 5, 10):
        one = accounting.settle(after, jax.tree_util.tree_map(lambda x, i=i: x[i], outcomes),
                                params.replace(market=None))
        np.testing.assert_allclose(settled[0].equity[i], one[0].equity, rtol=1e-6)
        np.testing.assert_allclose(settled[1][i], one[1], rtol=1e-5, atol=1e-7)
    assert int(settled[0].t[0]) == int(state.t) + 1


def market_arrays(market):
    return {name: getattr(market, name) for name in
            ("open", "high", "low", "close", "atr", "volatility", "regime", "valid", "features")}


@pytest.mark.parametrize("mode", ["discrete", "continuous"])
def test_reward_at_t_ignores_market_rows_after_t_plus_1(mode):
    market = random_market(2, seed=7)
    env, params = make_env(market, mode, **SETTINGS["stops_breaker_funding"])
    states = random_states(env, params, jax.random.key(8), n=8)
    actions = jnp.arange(8) % 3 if mode == "discrete" else \
        jax.random.uniform(jax.random.key(9), (8, 2), minval=-2, maxval=2)
    arrays = market_arrays(market)

    def reward(arrays, state, action):
        p = params.replace(market=params.market.replace(**arrays))
        return env.step(jax.random.key(0), state, action, p)[2]

    grads = jax.jit(jax.vmap(jax.grad(reward), in_axes=(None, 0, 0)))(arrays, states, actions)
    info = jax.vmap(env.step, in_axes=(None, 0, 0, None))(jax.random.key(0), states, actions,
                                                          params)[5]
    marked = np.asarray(info["units"]).any(axis=1) & (np.asarray(info["equity"]) > 1e-3)
    assert marked.sum() >= 2  # (stops, pauses and flat actions leave the others flat)
    for i in range(8):
        t = int(states.t[i])
        for name, g in grads.items():
            assert not np.any(np.asarray(g[i, t + 2:])), (name, t)
        # The gradient is real where the step reads: the close of t+1 marks a held book.
        if marked[i]:
            assert np.any(np.asarray(grads["close"][i, t + 1])), i

    # And the stronger statement: replacing every row after t+1 changes nothing at t.
    rng = np.random.default_rng(0)
    scrambled = {k: jnp.where((jnp.arange(T) > states.t[0] + 1).reshape((T,) + (1,) * (v.ndim - 1)),
                              jnp.asarray(rng.uniform(1, 200, v.shape), v.dtype), v)
                 for k, v in arrays.items()}
    state0 = jax.tree_util.tree_map(lambda x: x[0], states)
    step = jax.jit(env.transition)
    a = step(state0, actions[0], params, Shock.none())
    b = step(state0, actions[0], params.replace(market=market.replace(**scrambled)),
             Shock.none())
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ---- the live runner's numpy ledger ---------------------------------------------------------

LEDGER_SETTINGS = {
    "defaults": ({}, {}, {}),
    "stops_breaker_funding": (
        dict(funding_bps_per_bar=2.0, borrow_bps_per_bar=1.0),
        dict(max_leverage=2.0),
        dict(stop_loss_atr=1.0, trailing_stop_atr=1.5, circuit_breaker_drawdown=0.03,
             pause_bars=3),
    ),
    "fill_at_close_sizing_caps": (
        dict(fee_bps=3.0, half_spread_bps=2.0, slippage_vol_mult=0.1, min_trade_fraction=0.01),
        dict(fill_at_close=True, max_leverage=3.0),
        dict(stop_loss_atr=0.5, atr_sizing=True, risk_per_trade=0.02, regime_caps=True),
    ),
    "long_only_trailing": (
        {}, dict(long_only=True, max_leverage=1.5),
        dict(trailing_stop_atr=1.0, circuit_breaker_drawdown=0.02, pause_bars=2),
    ),
}


@pytest.mark.parametrize("setting", sorted(LEDGER_SETTINGS))
@pytest.mark.parametrize("mode", ["discrete", "continuous"])
def test_numpy_ledger_agrees_with_the_accounting_function(mode, setting):
    costs, trading, risk = LEDGER_SETTINGS[setting]
    trading = {"initial_equity": 1000.0, **trading}
    bars = 200
    market = random_market(1, seed=11, bars=bars)
    m = {k: np.asarray(v, np.float32) for k, v in market_arrays(market).items()}
    levels = (-1.0, -0.5, 0.0, 0.5, 1.0)
    env, _ = envs.make("trading", market, window_bars=4, action_mode=mode,
                       discrete_levels=levels)
    params = params_as_arrays(EnvParams(
        market=None, costs=TransactionConfig(**costs), reward=RewardConfig(),
        trading=TradingConfig(**trading), risk=RiskConfig(**risk)))
    rng = np.random.default_rng(12)
    actions = (rng.integers(0, len(levels), bars - 1) if mode == "discrete"
               else rng.uniform(-2.0, 2.0, (bars - 1, 1)).astype(np.float32))

    # The accounting function over the whole path, one scan.
    def step(state, xs):
        t, action = xs
        decision = DecisionBar(close=market.close[t], atr=market.atr[t],
                               volatility=market.volatility[t], regime=market.regime[t])
        nxt = NextBar(open=market.open[t + 1], high=market.high[t + 1], low=market.low[t + 1],
                      close=market.close[t + 1], valid=jnp.ones((1,), jnp.float32))
        state, reward, _, _, info = accounting.account(
            state, env.action_to_weights(action, params), decision, nxt, params)
        return state, (state, info)

    equity0 = jnp.asarray(1000.0, jnp.float32)
    zeros = jnp.zeros((1,), jnp.float32)
    start = EnvState(t=jnp.int32(0), end=jnp.int32(10 * bars), time=jnp.int32(0), cash=equity0,
                     units=zeros, entry_price=zeros, best_price=zeros,
                     bars_in_position=jnp.zeros((1,), jnp.int32), equity=equity0,
                     peak_equity=equity0, breaker_peak=equity0,
                     pause_left=jnp.int32(0), stats=RewardStats.zeros())
    _, (states, infos) = jax.jit(lambda a: jax.lax.scan(step, start, (jnp.arange(bars - 1), a)))(
        jnp.asarray(actions))
    states, infos = jax.tree_util.tree_map(np.asarray, (states, infos))

    # The ledger, bar by bar, as the live runner drives it.
    action_cfg = {"mode": mode, "discrete_levels": levels}
    ledger = Ledger(costs, trading, risk, action_cfg)
    rows = []
    for t in range(bars - 1):
        weight = ledger.decide(t, m["close"][t, 0], m["atr"][t, 0], m["volatility"][t, 0],
                               m["regime"][t], actions[t])
        before = ledger.total_costs
        fills = ledger.on_bar(Bar(t + 1, *(float(m[k][t + 1, 0]) for k in
                                           ("open", "high", "low", "close")), 0.0))
        rows.append(dict(
            weight=weight, cash=ledger.cash, units=ledger.units, equity=ledger.equity,
            entry=ledger.entry_price, best=ledger.best_price, bars=ledger.bars_in_position,
            peak=ledger.peak_equity, breaker_peak=ledger.breaker_peak,
            pause=ledger.pause_left, costs=ledger.total_costs - before,
            notional=sum(abs(f["to_position"] - f["from_position"]) * f["price"]
                         for f in fills)))
    got = {k: np.asarray([r[k] for r in rows]) for k in rows[0]}

    # Float32 tolerance on the book's scale: cash is equity minus the position's notional, so
    # its rounding is that of numbers the size of the book (a few ulps of ~2e3 = 2.4e-4).
    book = np.abs(states.equity) + np.abs(states.units[:, 0] * m["close"][1:, 0])

    def close_on_book(name, ours, theirs):
        err = np.abs(np.asarray(ours, np.float64) - np.asarray(theirs, np.float64))
        assert np.all(err <= 4e-6 * book), (name, np.max(err / book), int(np.argmax(err / book)))

    np.testing.assert_allclose(got["weight"], infos["target_weights"][:, 0], rtol=2e-6,
                               atol=1e-7)
    np.testing.assert_allclose(got["units"], states.units[:, 0], rtol=2e-6, atol=1e-6)
    for name, field in (("cash", states.cash), ("equity", states.equity),
                        ("peak", states.peak_equity), ("breaker_peak", states.breaker_peak)):
        close_on_book(name, got[name], field)
    np.testing.assert_allclose(got["entry"], states.entry_price[:, 0], rtol=2e-6)
    np.testing.assert_allclose(got["best"], states.best_price[:, 0], rtol=2e-6)
    np.testing.assert_array_equal(got["bars"], states.bars_in_position[:, 0])
    np.testing.assert_array_equal(got["pause"], states.pause_left)
    np.testing.assert_allclose(got["costs"], infos["costs"], rtol=1e-5, atol=1e-6)
    # The fills report positions before and after; their difference, times the price,
    # rounds like the book (a 0.03-unit trade out of 20 units keeps ~4 digits of float32).
    close_on_book("notional", got["notional"], infos["traded_notional"])
    # The path exercises what the setting turns on.
    assert np.count_nonzero(infos["traded"]) > 10
    if risk.get("stop_loss_atr") or risk.get("trailing_stop_atr"):
        assert np.any(infos["stopped"])
    if risk.get("circuit_breaker_drawdown"):
        assert np.any(infos["paused"])
