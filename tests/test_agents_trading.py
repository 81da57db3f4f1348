"""PPO and CVaR-PPO on jaxtrade's trading env over synthetic markets with known structure.

Markets are built here with numpy + `jaxtrade.market.from_arrays`, so what the agent can learn is
planted and known: an AR(1) return series (momentum worth harvesting after costs), and a pair of
assets where the higher-mean one crashes rarely (a mean-maximizer holds it, a CVaR-constrained
agent should not). Everything is judged out of sample on the test split, after the env's default
costs (commission, spread, volatility-scaled slippage).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import agents
import envs
from agents import CVaRPPOConfig, CVaRPPOHParams, NetworkConfig, PPOConfig, PPOHParams
from agents.cvar_ppo import tail_stats
from jaxtrade.market import from_arrays

WINDOW_BARS = 4


def _market(log_returns: np.ndarray, train_end: int, valid_end: int):
    """MarketData whose only feature per asset is its log return scaled by the train std."""
    num_bars = log_returns.shape[0]
    close = 100.0 * np.exp(np.cumsum(log_returns, axis=0))
    scale = log_returns[:train_end].std(axis=0)
    splits = np.array([[0, train_end], [train_end, valid_end], [valid_end, num_bars]])
    return from_arrays(close, features=(log_returns / scale)[:, :, None], splits=splits)


def _evaluate(env, env_params, policy, num_steps: int, key):
    """Per-bar rewards (net log returns) of `policy(obs, state, key)` over one eval episode on
    a split."""

    def step(carry, key):
        obs, state, alive = carry
        act_key, step_key = jax.random.split(key)
        obs, state, reward, terminated, truncated, _ = env.step(
            step_key, state, policy(obs, state, act_key), env_params
        )
        out = jnp.where(alive, reward, jnp.nan)
        return (obs, state, alive & ~(terminated | truncated)), out

    obs, state = env.reset(key, env_params)
    _, rewards = jax.lax.scan(step, (obs, state, True), jax.random.split(key, num_steps))
    rewards = np.asarray(rewards)
    return rewards[~np.isnan(rewards)]


def _sharpe(rewards: np.ndarray) -> float:
    return float(rewards.mean() / (rewards.std() + 1e-12) * np.sqrt(252.0))


@pytest.mark.slow
def test_ppo_harvests_planted_momentum_out_of_sample_after_costs():
    rng = np.random.default_rng(0)
    num_bars = 3000
    noise = 0.01 * rng.standard_normal((num_bars, 1))
    log_returns = np.zeros_like(noise)
    for t in range(1, num_bars):
        log_returns[t] = 0.3 * log_returns[t - 1] + noise[t]
    log_returns += 0.0002  # a small drift, so buy-and-hold is a real competitor
    market = _market(log_returns, 2000, 2400)
    env, env_params = envs.make("trading", market, window_bars=WINDOW_BARS)
    config = PPOConfig(
        num_envs=16, rollout_len=64, total_steps=16 * 64 * 60, num_minibatches=4,
        update_epochs=4, updates_per_chunk=20,
        hparams=PPOHParams(learning_rate=1e-3, ent_coef=0.003, gamma=0.9),
    )
    out = agents.make_train(config, env, env_params)(jax.random.key(0))
    agent = agents.make_agent(config, env, env_params)

    test_params = env_params.replace(split=jnp.asarray(2), eval_mode=jnp.asarray(True))
    steps = 600
    key = jax.random.key(1)
    learned = _evaluate(env, test_params, lambda o, s, k: agent.act(
        out.state.params, o, s, test_params, k, (), True)[0],
                        steps, key)
    buy_hold = _evaluate(env, test_params, lambda o, s, k: jnp.asarray(2), steps, key)
    random = _evaluate(env, test_params, lambda o, s, k: jax.random.randint(k, (), 0, 3),
                       steps, key)
    assert len(learned) > 500
    sharpe = {"ppo": _sharpe(learned), "buy_hold": _sharpe(buy_hold), "random": _sharpe(random)}
    print(sharpe)
    assert sharpe["ppo"] > 2.0, sharpe
    assert sharpe["ppo"] > sharpe["buy_hold"] + 1.0, sharpe
    assert sharpe["ppo"] > sharpe["random"] + 1.0, sharpe


@pytest.mark.slow
def test_cvar_ppo_cuts_crash_tail_and_meets_constraint():
    rng = np.random.default_rng(1)
    num_bars = 4000
    crash = rng.random(num_bars) < 0.01
    crashy = 0.002 + 0.01 * rng.standard_normal(num_bars) - 0.08 * crash  # mean ~ +12 bps/bar
    steady = 0.0004 + 0.003 * rng.standard_normal(num_bars)  # mean +4 bps/bar, no crashes
    log_returns = np.stack([crashy, steady], axis=1)
    market = _market(log_returns, 3000, 3000)
    env, env_params = envs.make(
        "trading", market, window_bars=WINDOW_BARS, action_mode="continuous", long_only=True
    )
    # The multiplier starts at 0: only dual ascent on the violated constraint can make the agent
    # leave the crashy asset. CVaR is in reward units (per-bar log return, ~1e-2) while the
    # penalty weighs standardized advantages, so the step is large: a 0.005 violation moves
    # lambda by 0.5 per update.
    alpha, threshold, lambda_lr = 0.05, 0.012, 100.0
    base = dict(
        num_envs=16, rollout_len=64, total_steps=16 * 64 * 60, num_minibatches=4,
        update_epochs=4, updates_per_chunk=20, network=NetworkConfig(log_std_init=-0.5),
    )
    common = dict(learning_rate=1e-3, ent_coef=0.0, gamma=0.9)
    ppo_config = PPOConfig(**base, hparams=PPOHParams(**common))
    cvar_config = CVaRPPOConfig(
        **base, cvar_window_steps=1,
        hparams=CVaRPPOHParams(**common, cvar_alpha=alpha, cvar_threshold=threshold,
                               lambda_lr=lambda_lr, lambda_init=0.0),
    )
    ppo_out = agents.make_train(ppo_config, env, env_params)(jax.random.key(0))
    cvar_out = agents.make_train(cvar_config, env, env_params)(jax.random.key(0))
    for name in ("cvar", "lambda", "constraint_violation"):
        assert np.all(np.isfinite(cvar_out.metrics[f"ppo/{name}"])), name

    # Dual ascent from zero: the first batches violate the constraint, so lambda rises from 0
    # by exactly lambda_lr * (CVaR - threshold), projected at 0, update after update.
    lam = np.asarray(cvar_out.metrics["ppo/lambda"], np.float64)
    batch_cvar = np.asarray(cvar_out.metrics["ppo/cvar"], np.float64)
    np.testing.assert_allclose(
        lam[1:], np.maximum(0.0, lam[:-1] + lambda_lr * (batch_cvar[:-1] - threshold)), atol=1e-4)
    first_raised = int(np.argmax(lam > 0.0))
    assert lam[0] == 0.0 and first_raised > 0 and batch_cvar[first_raised - 1] > threshold
    assert lam.max() > 1.0
    # At the end the training batches meet the constraint: the mean of the last 10 batch
    # estimates (1024 steps each, ~51 in the tail) within 10% of the threshold.
    assert float(np.mean(batch_cvar[-10:])) <= threshold * 1.1, batch_cvar[-10:]

    agent = agents.make_agent(ppo_config, env, env_params)  # same network for both param sets
    test_params = env_params.replace(split=jnp.asarray(2), eval_mode=jnp.asarray(True))
    key = jax.random.key(2)
    losses, rewards = {}, {}
    for name, out in (("ppo", ppo_out), ("cvar_ppo", cvar_out)):
        rewards[name] = _evaluate(env, test_params, lambda o, s, k, p=out.state.params: agent.act(
            p, o, s, test_params, k, (), True)[0], 990, key)
        assert len(rewards[name]) > 900
        losses[name] = float(tail_stats(jnp.asarray(-rewards[name]), alpha)[1])
    # Out of sample: a Lagrangian holds CVaR at the threshold, not below it, so the test split's
    # estimate (about 50 tail bars) must not exceed the threshold by more than its own noise:
    # two bootstrap standard errors.
    losses_cvar = -rewards["cvar_ppo"]
    resampled = np.random.default_rng(0).choice(losses_cvar, (400, losses_cvar.size))
    tail = int(np.ceil(alpha * losses_cvar.size))
    boot_se = float(np.sort(resampled, axis=1)[:, -tail:].mean(axis=1).std())
    print(losses, boot_se, batch_cvar[-10:], lam[-10:])
    assert losses["cvar_ppo"] < 0.75 * losses["ppo"], losses
    assert losses["cvar_ppo"] <= threshold + 2.0 * boot_se, (losses, boot_se)


def test_tail_stats_match_sorted_reference():
    rng = np.random.default_rng(3)
    losses = rng.standard_normal(1000)
    for alpha in (0.01, 0.05, 0.2):
        var, cvar = tail_stats(jnp.asarray(losses), jnp.asarray(alpha))
        worst = np.sort(losses)[::-1][: int(np.ceil(alpha * 1000))]
        np.testing.assert_allclose(float(cvar), worst.mean(), rtol=1e-5)
        np.testing.assert_allclose(float(var), worst[-1], rtol=1e-5)
