"""CVaR-PPO's dual ascent on its own: lambda <- max(0, lambda + lambda_lr * (CVaR - threshold)).

The env pays a planted loss schedule (loss_t = t / 100 for t = 0..19, then the episode
restarts), so every rollout of 20 steps sees the same known losses whatever the policy does,
and the batch CVaR is a number computed here with numpy. One compiled `run_chunk` of three
updates is run from several (lambda_init, threshold, lambda_lr) settings; the multiplier it
keeps, and the one it logs as used in each update, must follow the recursion exactly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct
from gymnax.environments import spaces

import agents
from agents import CVaRPPOConfig, CVaRPPOHParams, NetworkConfig

EPISODE_STEPS = 20
LOSSES = np.arange(EPISODE_STEPS) / 100.0  # the loss paid at step t of an episode
NUM_ENVS, ALPHA, UPDATES = 2, 0.1, 3


@struct.dataclass
class _Clock:
    t: jax.Array


class PlantedLossEnv:
    """Reward -LOSSES[t] at step t; the episode ends (and restarts) after EPISODE_STEPS steps."""

    def reset(self, key, params=None):
        return jnp.zeros((2,)), _Clock(jnp.zeros((), jnp.int32))

    def step(self, key, state, action, params=None):
        reward = -jnp.asarray(LOSSES, jnp.float32)[state.t]
        t = state.t + 1
        truncated = t >= EPISODE_STEPS
        next_state = _Clock(jnp.where(truncated, 0, t))
        return jnp.zeros((2,)), next_state, reward, jnp.asarray(False), truncated, {}

    def action_space(self, params=None):
        return spaces.Discrete(2)


def _batch_cvar() -> float:
    """CVaR_alpha of the rollout's window losses (window = 1 step), by sorting."""
    batch = np.tile(LOSSES, NUM_ENVS)
    worst = np.sort(batch)[::-1][: int(np.ceil(ALPHA * batch.size))]
    return float(worst.mean())


@pytest.fixture(scope="module")
def run_updates():
    env = PlantedLossEnv()
    config = CVaRPPOConfig(
        num_envs=NUM_ENVS, rollout_len=EPISODE_STEPS,
        total_steps=NUM_ENVS * EPISODE_STEPS * UPDATES, num_minibatches=1,
        update_epochs=1, updates_per_chunk=UPDATES,
        network=NetworkConfig(hidden_sizes=(8,)),
    )
    agent = agents.make_agent(config, env, None)
    run_chunk = jax.jit(agent.run_chunk)

    def run(lambda_init: float, threshold: float, lambda_lr: float):
        hparams = CVaRPPOHParams(cvar_alpha=ALPHA, cvar_threshold=threshold,
                                 lambda_lr=lambda_lr, lambda_init=lambda_init)
        state = agent.init(jax.random.key(0), hparams, None)
        state, metrics = run_chunk(state, None)  # the env has no params
        return (np.asarray(metrics["ppo/lambda"]), float(state.extra["lagrange_multiplier"]),
                np.asarray(metrics["ppo/cvar"]))

    return run


def _expected(lambda_init: float, threshold: float, lambda_lr: float) -> list[float]:
    """Multipliers before each update and after the last, by the dual-ascent recursion."""
    lams = [lambda_init]
    for _ in range(UPDATES):
        lams.append(max(0.0, lams[-1] + lambda_lr * (_batch_cvar() - threshold)))
    return lams


def test_batch_cvar_is_the_planted_tail(run_updates) -> None:
    assert _batch_cvar() == pytest.approx(0.185)  # the 4 worst of 40: 0.19, 0.19, 0.18, 0.18
    _, _, cvar = run_updates(0.0, 0.1, 1.0)
    np.testing.assert_allclose(cvar, _batch_cvar(), rtol=1e-6)


@pytest.mark.parametrize(
    ("lambda_init", "threshold", "lambda_lr"),
    [
        (0.0, 0.085, 2.0),  # violated by 0.1: rises from zero by 0.2 per update
        (0.3, 0.085, 0.5),  # violated: rises by 0.05 per update
        (1.0, 0.285, 2.0),  # satisfied with 0.1 to spare: falls by 0.2 per update
        (0.3, 0.285, 2.0),  # satisfied: falls by 0.2, which would go below 0, so stops at 0
        (0.0, 0.285, 2.0),  # satisfied from zero: stays at 0
    ],
)
def test_multiplier_follows_projected_dual_ascent(run_updates, lambda_init, threshold,
                                                  lambda_lr) -> None:
    used, final, _ = run_updates(lambda_init, threshold, lambda_lr)
    expected = _expected(lambda_init, threshold, lambda_lr)
    np.testing.assert_allclose(used, expected[:-1], atol=1e-6)  # logged: the one each update used
    assert final == pytest.approx(expected[-1], abs=1e-6)
    step = lambda_lr * (_batch_cvar() - threshold)
    if step > 0:
        assert np.all(np.diff([*used, final]) == pytest.approx(step, abs=1e-6))
    else:
        assert min(used.min(), final) >= 0.0
        assert np.all(np.diff([*used, final]) <= 1e-7)
