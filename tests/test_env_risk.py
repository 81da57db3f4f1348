"""Risk manager on crafted paths: stop-loss, trailing stop, circuit breaker, bankruptcy,
leverage caps (any continuous action), regime caps and ATR sizing."""

import jax
import jax.numpy as jnp
import numpy as np

import envs
from jaxtrade.market import from_arrays

NO_COSTS = dict(fee_bps=0.0, half_spread_bps=0.0, slippage_vol_mult=0.0,
                borrow_bps_per_bar=0.0, min_trade_fraction=0.05)  # band: hold, no rebalancing
T = 12


META = from_arrays(np.full(T, 100.0)).meta


def path(close, open_=None, atr=2.0, regime=None):
    close = np.r_[close, np.full(T - len(close), close[-1])]
    if open_ is not None:
        open_ = np.r_[open_, np.full(T - len(open_), close[-1])]
    market = from_arrays(close, open=open_, atr=np.full(T, atr), regime=regime)
    # Same host metadata (a static leaf) for every path: one compiled step serves them all.
    return market.replace(meta=META)


def run(market, actions, mode="continuous", **kw):
    env, params = envs.make("trading", market, window_bars=2, eval_mode=True,
                            initial_equity=1000.0, action_mode=mode, **{**NO_COSTS, **kw})
    obs, state = env.reset(jax.random.PRNGKey(0), params)
    out = []
    for i, a in enumerate(actions):
        obs, state, r, term, trunc, info = env.step(jax.random.PRNGKey(i), state,
                                                    jnp.asarray(a), params)
        out.append({**jax.tree_util.tree_map(np.asarray, info), "terminated": bool(term)})
    return out


def test_stop_loss_exits_at_level():
    # Long 10 units from the open of bar 2 at 100; stop = 100 - 2 x ATR(2) = 96.
    market = path([100, 100, 100, 99, 97, 94, 95])
    out = run(market, [[1.0]] * 4, stop_loss_atr=2.0)
    assert [bool(o["stopped"]) for o in out] == [False, False, False, True]
    np.testing.assert_allclose(out[3]["equity"], 1000 + 10 * (96 - 100), rtol=1e-6)
    assert out[3]["units"][0] == 0.0
    without = run(market, [[1.0]] * 4)
    np.testing.assert_allclose(without[3]["equity"], 940.0, rtol=1e-6)


def test_stop_loss_gap_fills_at_open():
    close = [100, 100, 100, 99, 97, 94]
    market = path(close, open_=[100, 100, 100, 100, 99, 95])
    out = run(market, [[1.0]] * 4, stop_loss_atr=2.0)
    assert bool(out[3]["stopped"])
    np.testing.assert_allclose(out[3]["equity"], 1000 + 10 * (95 - 100), rtol=1e-6)


def test_short_stop_loss():
    market = path([100, 100, 100, 102, 106])
    out = run(market, [[-1.0]] * 3, stop_loss_atr=2.0)
    assert [bool(o["stopped"]) for o in out] == [False, False, True]
    np.testing.assert_allclose(out[2]["equity"], 1000 - 10 * (104 - 100), rtol=1e-6)


def test_trailing_stop_follows_the_high():
    # Best price reaches 108 (high of bar 4); trail 1 x ATR = 2 -> level 106 hit on bar 6.
    market = path([100, 100, 100, 104, 108, 107, 105, 105])
    out = run(market, [[1.0]] * 6, trailing_stop_atr=1.0)
    assert [bool(o["stopped"]) for o in out] == [False] * 4 + [True, False]
    np.testing.assert_allclose(out[4]["equity"], 1000 + 10 * (106 - 100), rtol=1e-6)
    # Decision after the stop re-enters: the stopped asset stays flat only until then.
    assert out[5]["units"][0] > 0


def test_circuit_breaker_flattens_and_pauses():
    market = path([100, 100, 100, 95, 88, 85, 90, 95, 100])
    out = run(market, [[1.0]] * 8, circuit_breaker_drawdown=0.1, pause_bars=3)
    paused = [bool(o["paused"]) for o in out]
    assert paused == [False, False, False, True, True, True, False, False]
    np.testing.assert_allclose(out[2]["equity"], 880.0, rtol=1e-6)  # 12% down: trips here
    for o in out[3:6]:
        assert o["units"][0] == 0.0
        np.testing.assert_allclose(o["equity"], 880.0, rtol=1e-6)  # flattened at 88
    assert out[6]["units"][0] > 0  # trading resumes


def test_bankruptcy_terminates():
    # 5x long from 100: a fall to 80.5 leaves 1000 - 50 x 19.5 = 25 < 5% of 1000.
    market = path([100, 100, 100, 80.5, 85])
    out = run(market, [[5.0]] * 2, max_leverage=5.0, bankruptcy_fraction=0.05)
    assert [o["terminated"] for o in out] == [False, True]
    np.testing.assert_allclose(out[1]["equity"], 25.0, atol=1e-3)


def test_leverage_cap_holds_for_any_continuous_action():
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, (200, 3)), axis=0))
    market = from_arrays(close)
    lev = 2.0
    env, params = envs.make("trading", market, action_mode="continuous", window_bars=4,
                            max_leverage=lev, min_trade_fraction=0.0, episode_bars=50)
    n, steps = 64, 40
    actions = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (n, steps, 3))) * 10.0 ** (
        rng.integers(-2, 6, (n, steps, 1)))
    actions[0, :5] = np.inf
    actions[1, :5] = -np.inf
    actions[2, :5] = np.nan

    def episode(key, acts):
        obs, state = env.reset(key, params)

        def body(state, a):
            # Gross exposure of the order, at the decision close and equity that size it.
            _, nxt, _, _, _, info = env.step(key, state, a, params)
            return nxt, (info["target_weights"], nxt.units, state.t, state.equity, nxt.t)

        return jax.lax.scan(body, state, acts)[1]

    target, units, t_dec, eq_dec, t_next = jax.jit(jax.vmap(episode))(
        jax.random.split(jax.random.PRNGKey(2), n), jnp.asarray(actions))
    gross_target = np.abs(np.asarray(target)).sum(-1)
    assert np.all(np.isfinite(gross_target)) and gross_target.max() <= lev * (1 + 1e-6)
    assert gross_target.max() > 0.99 * lev  # the cap binds
    # The filled units, valued at the decision close, respect the cap as well.
    reset_next = np.asarray(t_next) <= np.asarray(t_dec)
    close_dec = np.asarray(market.close)[np.asarray(t_dec)]
    gross_units = (np.abs(np.asarray(units)) * close_dec).sum(-1) / np.asarray(eq_dec)
    assert gross_units[~reset_next].max() <= lev * (1 + 1e-5)


def test_long_only_and_regime_caps():
    close = [100, 100, 100, 101, 102, 103]
    defensive = np.tile([0.1, 0.1, 0.8], (T, 1))
    market = path(close, regime=defensive)
    out = run(market, [[-1.0], [3.0]], long_only=True, max_leverage=3.0, regime_caps=True)
    assert out[0]["units"][0] == 0.0  # the short is clipped to flat
    np.testing.assert_allclose(out[1]["target_weights"], [1.0], rtol=1e-6)  # defensive: 1x
    trend = np.tile([0.8, 0.1, 0.1], (T, 1))
    out = run(path(close, regime=trend), [[3.0]], max_leverage=3.0, regime_caps=True)
    np.testing.assert_allclose(out[0]["target_weights"], [3.0], rtol=1e-6)  # 5x cap, 3x max


def test_atr_sizing_risks_a_fraction_of_equity():
    market = path([100, 100, 100, 100], atr=4.0)
    out = run(market, [[1.0]], atr_sizing=True, risk_per_trade=0.02, stop_loss_atr=2.0)
    # 2% of 1000 = 20 at risk over a stop distance of 2 x 4 = 8 -> 2.5 units.
    np.testing.assert_allclose(out[0]["units"], [2.5], rtol=1e-6)
