"""The shared losses and targets (agents/common/losses.py) against closed forms and loops."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from agents.common import losses


def _gae_loop(rewards, values, dones, last_value, gamma, lam):
    advantages = np.zeros_like(rewards)
    next_adv, next_value = np.zeros_like(last_value), last_value
    for t in reversed(range(len(rewards))):
        not_done = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_value * not_done - values[t]
        next_adv = delta + gamma * lam * not_done * next_adv
        advantages[t] = next_adv
        next_value = values[t]
    return advantages


def test_gae_matches_a_python_loop_and_cuts_at_episode_ends() -> None:
    rng = np.random.default_rng(0)
    rewards, values = rng.normal(size=(2, 7, 3)).astype(np.float32)
    dones = (rng.random((7, 3)) < 0.3).astype(np.float32)
    last = rng.normal(size=3).astype(np.float32)
    adv, targets = losses.gae(jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(dones),
                              jnp.asarray(last), 0.9, 0.8)
    want = _gae_loop(rewards, values, dones, last, 0.9, 0.8)
    np.testing.assert_allclose(adv, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(targets, want + values, rtol=1e-5, atol=1e-6)
    # lambda = 1, no episode end: the advantage is the discounted return minus the value.
    adv1, _ = losses.gae(jnp.ones(4), jnp.zeros(4), jnp.zeros(4), jnp.asarray(2.0), 0.5, 1.0)
    np.testing.assert_allclose(adv1[0], 1 + 0.5 + 0.25 + 0.125 + 0.0625 * 2.0, rtol=1e-6)


def test_lambda_returns_interpolate_td_and_monte_carlo() -> None:
    rewards = jnp.asarray([1.0, 2.0, 3.0])
    next_values = jnp.asarray([10.0, 20.0, 30.0])
    discounts = jnp.full(3, 0.5)
    td = losses.lambda_returns(rewards, discounts, next_values, 0.0)
    np.testing.assert_allclose(td, rewards + 0.5 * next_values)
    mc = losses.lambda_returns(rewards, discounts, next_values, 1.0)
    np.testing.assert_allclose(mc, [1 + 0.5 * 2 + 0.25 * 3 + 0.125 * 30, 2 + 1.5 + 0.25 * 30,
                                    3 + 15.0])
    # A terminal step (discount 0) stops everything after it.
    cut = losses.lambda_returns(rewards, jnp.asarray([0.5, 0.0, 0.5]), next_values, 1.0)
    np.testing.assert_allclose(cut[:2], [1 + 0.5 * 2, 2.0])


@pytest.mark.parametrize("terminated,truncated,g,discount,last", [
    ([0, 0, 0], [0, 0, 0], 1 + 0.5 * 2 + 0.25 * 3, 0.125, 2),  # full n-step, bootstrap gamma^3
    ([0, 1, 0], [0, 0, 0], 1 + 0.5 * 2, 0.0, 1),  # terminated at step 1: no bootstrap
    ([0, 0, 0], [1, 0, 0], 1.0, 0.5, 0),  # truncated at once: bootstrap its final obs
    ([1, 0, 0], [1, 0, 0], 1.0, 0.0, 0),  # terminated and truncated: terminal wins
    ([0, 0, 1], [0, 1, 0], 1 + 0.5 * 2, 0.25, 1),  # an end after the cut does not matter
])
def test_n_step_returns_cut_at_the_first_episode_end(terminated, truncated, g, discount,
                                                     last) -> None:
    rewards = jnp.asarray([1.0, 2.0, 3.0])
    got_g, got_discount, got_last = losses.n_step_returns(
        rewards, jnp.asarray(terminated, bool), jnp.asarray(truncated, bool), 0.5)
    assert float(got_g) == pytest.approx(g)
    assert float(got_discount) == pytest.approx(discount)
    assert int(got_last) == last


def test_n_step_returns_batch_axes() -> None:
    rewards = jnp.ones((4, 5))
    term = jnp.zeros((4, 5), bool).at[1, 2].set(True)
    g, discount, last = losses.n_step_returns(rewards, term, jnp.zeros_like(term), 0.9)
    assert g.shape == discount.shape == last.shape == (5,)
    np.testing.assert_allclose(g[2], 1.9, rtol=1e-6)
    assert float(discount[2]) == 0.0 and int(last[2]) == 1
    np.testing.assert_allclose(g[0], 1 + 0.9 + 0.81 + 0.729, rtol=1e-6)
    np.testing.assert_allclose(discount[0], 0.9**4, rtol=1e-6)


def test_huber_and_td_loss_closed_form() -> None:
    x = jnp.asarray([-3.0, -0.5, 0.0, 0.25, 2.0])
    np.testing.assert_allclose(losses.huber(x, 1.0), [2.5, 0.125, 0.0, 0.03125, 1.5])
    np.testing.assert_allclose(losses.huber(x, 1.0), optax.huber_loss(x, delta=1.0))
    loss, errors = losses.td_loss(jnp.asarray([1.0, 2.0]), jnp.asarray([1.5, 0.0]),
                                  jnp.asarray([1.0, 0.5]))
    np.testing.assert_allclose(errors, [0.5, -2.0])
    assert float(loss) == pytest.approx((0.125 + 0.5 * 1.5) / 2)
    mse, _ = losses.td_loss(jnp.asarray([1.0, 2.0]), jnp.asarray([1.5, 0.0]), None, None)
    assert float(mse) == pytest.approx((0.125 + 2.0) / 2)
    # The target is held fixed: no gradient flows into it.
    grad = jax.grad(lambda t: losses.td_loss(jnp.zeros(2), t)[0])(jnp.ones(2))
    np.testing.assert_array_equal(grad, 0.0)


def _quantile_huber_loop(q, t, taus, kappa):
    total = np.zeros(q.shape[0])
    for b in range(q.shape[0]):
        for i in range(q.shape[1]):
            acc = 0.0
            for j in range(t.shape[1]):
                u = t[b, j] - q[b, i]
                h = 0.5 * u * u if abs(u) <= kappa else kappa * (abs(u) - 0.5 * kappa)
                acc += abs(taus[i] - (u < 0)) * h / kappa
            total[b] += acc / t.shape[1]
    return total


def test_quantile_huber_loss_matches_its_definition() -> None:
    rng = np.random.default_rng(1)
    q = rng.normal(size=(3, 4)).astype(np.float32)
    t = rng.normal(size=(3, 5)).astype(np.float32) * 2
    taus = (2 * np.arange(4) + 1) / 8.0
    mean, per_item = losses.quantile_huber_loss(jnp.asarray(q), jnp.asarray(t),
                                                jnp.asarray(taus, jnp.float32), kappa=0.7)
    want = _quantile_huber_loop(q, t, taus, 0.7)
    np.testing.assert_allclose(per_item, want, rtol=1e-5)
    assert float(mean) == pytest.approx(want.mean(), rel=1e-5)


def test_quantile_regression_finds_the_quantiles_of_a_known_distribution() -> None:
    """Minimizing the loss over samples of U(0, 1) puts quantile i at tau_i (closed form)."""
    n = 8
    taus = (2 * jnp.arange(n) + 1) / (2.0 * n)
    targets = jax.random.uniform(jax.random.key(0), (1, 20_000))
    theta = jnp.full((1, n), 0.5)

    def step(theta, _):
        grad = jax.grad(lambda th: losses.quantile_huber_loss(th, targets, taus,
                                                              kappa=1e-3)[0])(theta)
        return theta - 0.05 * grad, None

    theta, _ = jax.lax.scan(step, theta, None, 2000)
    np.testing.assert_allclose(theta[0], taus, atol=0.02)


def test_ppo_clip_and_value_losses() -> None:
    log_prob = jnp.log(jnp.asarray([1.5, 0.5, 1.0]))
    adv = jnp.asarray([1.0, -1.0, 2.0])
    loss, ratio, _ = losses.ppo_clip_loss(log_prob, jnp.zeros(3), adv, 0.2)
    np.testing.assert_allclose(ratio, [1.5, 0.5, 1.0], rtol=1e-6)
    # min(r A, clip(r) A): 1.2 * 1, 0.8 * -1 -> min(-0.5, -0.8) = -0.8, 1 * 2
    assert float(loss) == pytest.approx(-(1.2 - 0.8 + 2.0) / 3, rel=1e-6)
    value = losses.clipped_value_loss(jnp.asarray([2.0]), jnp.asarray([0.0]), jnp.asarray([1.0]),
                                      0.5)
    # unclipped (2-1)^2 = 1, clipped (0.5-1)^2 = 0.25: pessimistic max -> 0.5 * 1
    assert float(value) == pytest.approx(0.5)
    assert float(losses.clipped_value_loss(jnp.asarray([2.0]), jnp.asarray([0.0]),
                                           jnp.asarray([3.0]), 0.5)) == pytest.approx(0.5 * 6.25)


def test_target_updates() -> None:
    online, target = {"w": jnp.asarray(1.0)}, {"w": jnp.asarray(0.0)}
    assert float(losses.polyak_update(online, target, 0.1)["w"]) == pytest.approx(0.1)
    assert float(losses.polyak_update(online, target, 1.0)["w"]) == 1.0
    assert float(losses.periodic_update(online, target, jnp.asarray(3), 4)["w"]) == 0.0
    assert float(losses.periodic_update(online, target, jnp.asarray(8), 4)["w"]) == 1.0
