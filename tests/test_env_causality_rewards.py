"""No look-ahead (observations and rewards at <= t ignore bars after t; fills use t+1) and
the reward terms against direct recomputations (DSR, downside variant, penalties)."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

import envs
from jaxtrade.market import from_arrays

T, K = 120, 60  # bars; the last bar left untouched in the perturbed market
RNG = np.random.default_rng(7)
CLOSE = 100 * np.exp(np.cumsum(RNG.normal(0, 0.01, T)))
OPEN = CLOSE * np.exp(RNG.normal(0, 0.003, T))


def perturbed(first_bar):
    close, open_ = CLOSE.copy(), OPEN.copy()
    close[first_bar:] *= np.exp(RNG.normal(0, 0.05, T - first_bar))
    open_[first_bar:] *= np.exp(RNG.normal(0, 0.05, T - first_bar))
    return close, open_


BASE = from_arrays(CLOSE, open=OPEN)
META = BASE.meta


def market(close, open_):
    return from_arrays(close, open=open_).replace(meta=META)


@partial(jax.jit, static_argnums=0)
def scan_episode(env, params, actions):
    obs, state = env.reset(jax.random.PRNGKey(0), params)

    def body(carry, a):
        obs, state = carry
        obs2, state2, r, te, tr, info = env.step(jax.random.PRNGKey(1), state, a, params)
        return (obs2, state2), (obs, state.t, r, info["bar"], info["log_return"])

    return jax.lax.scan(body, (obs, state), actions)[1]


def walk(m, actions, **kw):
    """(obs at t, t, reward, bar the reward is for, log return) for every step."""
    env, params = envs.make("trading", m, window_bars=5, eval_mode=True, stop_loss_atr=1.5,
                            trailing_stop_atr=2.0, min_trade_fraction=0.0, **kw)
    return jax.tree_util.tree_map(np.asarray, scan_episode(env, params, actions))


ACTIONS = jnp.asarray(RNG.integers(0, 3, T - 6))


def test_changing_bars_after_k_changes_nothing_at_or_before_k():
    base = walk(BASE, ACTIONS)
    other = walk(market(*perturbed(K + 1)), ACTIONS)
    obs_bar, reward_bar = base[1], base[3]
    seen = obs_bar <= K
    np.testing.assert_array_equal(base[0][seen], other[0][seen])
    done_by_k = reward_bar <= K
    np.testing.assert_array_equal(base[2][done_by_k], other[2][done_by_k])
    assert np.any(base[2][reward_bar == K + 1] != other[2][reward_bar == K + 1])
    assert np.any(base[0][obs_bar == K + 1] != other[0][obs_bar == K + 1])


def test_fill_uses_the_next_open():
    # Only the open of bar K+1 changes: the step K -> K+1 (which trades) must see it, nothing
    # earlier, and nothing observed at K.
    actions = jnp.asarray([2 if i % 2 else 0 for i in range(T - 6)])
    open_ = OPEN.copy()
    open_[K + 1] *= 1.03
    base = walk(BASE, actions)
    other = walk(market(CLOSE, open_), actions)
    step = base[3] == K + 1
    assert not np.allclose(base[2][step], other[2][step])
    np.testing.assert_array_equal(base[2][base[3] <= K], other[2][base[3] <= K])
    np.testing.assert_array_equal(base[0][base[1] <= K], other[0][base[1] <= K])


def ema_reference(r, eta, floor):
    """Textbook DSR / DDR with A, B and DD2 as plain exponential averages (float64)."""
    a = b = dd2 = 0.0
    dsr, ddr = [], []
    for x in r:
        var = max(b - a * a, floor)
        dsr.append((b * (x - a) - 0.5 * a * (x * x - b)) / var**1.5)
        d2 = max(dd2, floor)
        if x > 0:
            ddr.append((x - 0.5 * a) / np.sqrt(d2))
        else:
            ddr.append((d2 * (x - 0.5 * a) - 0.5 * a * x * x) / d2**1.5)
        a += eta * (x - a)
        b += eta * (x * x - b)
        dd2 += eta * (min(x, 0.0) ** 2 - dd2)
    return np.array(dsr), np.array(ddr)


def test_dsr_and_ddr_match_direct_recomputation():
    eta, floor = 0.05, 1e-8
    kw = dict(w_log_return=0.0, dsr_eta=eta, moment_floor=floor)
    dsr_run = walk(BASE, ACTIONS, w_dsr=1.0, **kw)
    ddr_run = walk(BASE, ACTIONS, w_ddr=1.0, **kw)
    r = dsr_run[4].astype(np.float64)
    ref_dsr, ref_ddr = ema_reference(r, eta, floor)
    # Skip the warm-up where the variance sits on the floor (values ~1e4, float32 noise).
    settled = np.arange(len(r)) >= 10
    np.testing.assert_allclose(dsr_run[2][settled], ref_dsr[settled], rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(ddr_run[2][settled], ref_ddr[settled], rtol=2e-3, atol=2e-3)
    assert np.corrcoef(dsr_run[2][settled], r[settled])[0, 1] > 0.5


def test_penalties_subtract_their_terms():
    plain = walk(BASE, ACTIONS)
    turnover = walk(BASE, ACTIONS, turnover_penalty=0.01)
    tail = walk(BASE, ACTIONS, tail_penalty=2.0, tail_threshold=0.001)
    r = plain[4]
    np.testing.assert_allclose(plain[2], r, atol=1e-7)
    assert np.all(turnover[2] <= plain[2] + 1e-9) and np.any(turnover[2] < plain[2] - 1e-6)
    np.testing.assert_allclose(tail[2], r - 2.0 * np.maximum(-r - 0.001, 0.0), atol=1e-6)
