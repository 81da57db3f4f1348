"""Hand-computed P&L and costs on scripted episodes (long, flip to short, flat)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from jaxtrade.market import from_arrays

CLOSE = np.array([100.0, 100.0, 102.0, 104.0, 101.0, 100.0, 100.0, 100.0])
OPEN = np.array([100.0, 100.0, 101.0, 103.0, 102.0, 100.5, 100.0, 100.0])
FEE, SPREAD, SLIP_MULT, VOL, BORROW = 10.0, 5.0, 0.1, 0.01, 2.0
RATE = (FEE + SPREAD + SLIP_MULT * VOL * 1e4) * 1e-4  # 25 bps per unit of traded notional


# One market object for the module: its host metadata is a static leaf, so sharing it lets
# every test reuse the same compiled step.
MARKET = from_arrays(CLOSE, open=OPEN, volatility=np.full(len(CLOSE), VOL))


def run(env, params, actions):
    obs, state = env.reset(jax.random.PRNGKey(0), params)
    infos, rewards = [], []
    for i, a in enumerate(actions):
        obs, state, r, term, trunc, info = env.step(jax.random.PRNGKey(i), state, a, params)
        infos.append(jax.tree_util.tree_map(np.asarray, info))
        rewards.append(float(r))
    return infos, rewards


def make_env(**kw):
    settings = dict(
        window_bars=2, eval_mode=True, initial_equity=1000.0, fee_bps=FEE,
        half_spread_bps=SPREAD, slippage_vol_mult=SLIP_MULT, slippage_cap_bps=50.0,
        borrow_bps_per_bar=BORROW, min_trade_fraction=0.02,
    )
    return envs.make("trading", MARKET, **{**settings, **kw})


def test_long_flip_flat_by_hand():
    env, params = make_env()
    long, flat, short = 2, 1, 0
    infos, rewards = run(env, params, [long, long, short, flat, flat])

    # Bar 1 -> 2: buy 1000/100 = 10 units (sized at the decision close) at the open of bar 2.
    cash = 1000.0 - 10 * 101.0 - 10 * 101.0 * RATE
    eq2 = cash + 10 * 102.0
    # Bar 2 -> 3: target 1007.475/102 units differs by 12.5 of notional < 2% band: no trade.
    eq3 = cash + 10 * 104.0
    # Bar 3 -> 4: flip to short: target -eq3/104, fill at open 102, borrow on the short.
    short_units = -eq3 / 104.0
    delta = short_units - 10
    cash = cash - delta * 102.0 - abs(delta) * 102.0 * RATE
    cash -= abs(short_units) * 101.0 * BORROW * 1e-4
    eq4 = cash + short_units * 101.0
    # Bar 4 -> 5: flatten at the open of bar 5 (100.5).
    cash = cash + short_units * 100.5 - abs(short_units) * 100.5 * RATE
    eq5 = cash
    expected = [eq2, eq3, eq4, eq5, eq5]
    got = [i["equity"] for i in infos]
    np.testing.assert_allclose(got, expected, rtol=2e-6)
    np.testing.assert_allclose(rewards, np.log(np.array(expected) / np.r_[1000.0, expected[:-1]]),
                               atol=2e-6)
    costs = [i["costs"] for i in infos]
    np.testing.assert_allclose(
        costs,
        [1010 * RATE, 0.0, abs(delta) * 102 * RATE + abs(short_units) * 101 * BORROW * 1e-4,
         abs(short_units) * 100.5 * RATE, 0.0],
        rtol=1e-4, atol=1e-6,
    )
    assert [bool(i["traded"]) for i in infos] == [True, False, True, True, False]
    np.testing.assert_allclose(infos[2]["units"], [short_units], rtol=1e-6)


def test_fill_at_close_uses_next_close():
    env, params = make_env(fill_at_close=True)
    infos, _ = run(env, params, [2])
    cash = 1000.0 - 10 * 102.0 - 10 * 102.0 * RATE
    np.testing.assert_allclose(infos[0]["equity"], cash + 10 * 102.0, rtol=1e-6)


def test_slippage_cap_binds():
    env, params = make_env(slippage_cap_bps=3.0)
    infos, _ = run(env, params, [2])
    rate = (FEE + SPREAD + 3.0) * 1e-4
    np.testing.assert_allclose(infos[0]["costs"], 1010 * rate, rtol=1e-5)


def test_defaults_charge_costs():
    env, params = envs.make("trading", MARKET, window_bars=2, eval_mode=True)
    assert float(params.costs.fee_bps) > 0 and float(params.costs.half_spread_bps) > 0
    infos, _ = run(env, params, [2])
    assert infos[0]["costs"] > 0


@pytest.mark.parametrize("mode", ["discrete", "continuous"])
def test_vmapped_equals_single(mode):
    rng = np.random.default_rng(1)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, 300)))
    market = from_arrays(close)
    env, params = envs.make("trading", market, action_mode=mode, window_bars=8,
                            episode_bars=12, stop_loss_atr=2.0)
    n, steps = 4, 30
    keys = jax.random.split(jax.random.PRNGKey(3), n)
    space = env.action_space(params)
    actions = jax.vmap(jax.vmap(space.sample))(
        jax.random.split(jax.random.PRNGKey(4), n * steps).reshape(n, steps, 2))

    def episode(key, acts):
        obs, state = env.reset(key, params)

        def body(carry, a):
            obs, state, key = carry
            key, sub = jax.random.split(key)
            obs, state, r, te, tr, info = env.step(sub, state, a, params)
            return (obs, state, key), (obs, r, te | tr, info["equity"])

        return jax.lax.scan(body, (obs, state, key), acts)[1]

    batched = jax.jit(jax.vmap(episode))(keys, actions)
    for i in range(n):
        single = jax.jit(episode)(keys[i], actions[i])
        for b, s in zip(batched, single):
            # Fusion may round differently in the batched program: equal up to float32 noise.
            np.testing.assert_allclose(np.asarray(b[i]), np.asarray(s), rtol=1e-5, atol=1e-6)
    assert bool(jnp.any(batched[2]))  # auto-reset happened inside the scan
