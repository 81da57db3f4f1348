"""CVaR-constrained PPO (PPO-Lagrangian): maximize return subject to CVaR_alpha(loss) <= threshold.

Risk is measured on window losses: the batch of `num_envs * rollout_len` rewards is cut into
non-overlapping windows of `cvar_window_steps` steps per env, and the loss of a window is minus
its summed (unscaled) reward. For a trading env with per-bar PnL rewards, a window of 1 is the
per-bar loss; a window of `rollout_len` is the loss over each env's rollout segment.

Per update:
  1. CVaR estimate from the batch: VaR = the (1 - alpha) quantile of window losses, CVaR = mean of
     the worst ceil(alpha * n) losses.
  2. Tail cost (Rockafellar-Uryasev): each window pays (loss - VaR)+ / alpha at its last step. Its
     policy gradient is the CVaR gradient with VaR held fixed. Costs are credited backwards to the
     actions that led to them with the discounted cost-to-go inside the rollout (cut at episode
     ends), a critic-free estimate.
  3. The policy advantage becomes (A_reward - lambda * A_cost) / (1 + lambda), both standardized
     over the batch; the value function still fits the reward returns only.
  4. Dual ascent: lambda <- max(0, lambda + lambda_lr * (CVaR - threshold)).

Logged per update: `cvar`, `var`, `lambda` (the multiplier used in that update) and
`constraint_violation` = CVaR - threshold (positive means the constraint is violated).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from agents import ppo
from agents.common.types import Agent, Metrics
from jaxtrade.errors import ConfigError


@struct.dataclass
class CVaRPPOHParams(ppo.PPOHParams):
    cvar_alpha: float = 0.05  # tail probability: CVaR_5% by default
    cvar_threshold: float = 0.02  # constraint: CVaR_alpha of the window loss <= this (reward units)
    # Dual ascent step on (CVaR - threshold), which is in reward units: with per-bar log-return
    # rewards a violation is ~0.005, so the step must be ~50-100 for lambda to reach O(1)
    # within tens of updates (0.05 left it near 0: the constraint did nothing).
    lambda_lr: float = 50.0
    lambda_init: float = 0.0


@dataclasses.dataclass(frozen=True)
class CVaRPPOConfig(ppo.PPOConfig):
    name: str = "cvar_ppo"
    hparams: CVaRPPOHParams = dataclasses.field(default_factory=CVaRPPOHParams)
    cvar_window_steps: int = 1


def tail_stats(losses: jax.Array, alpha: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(VaR, CVaR) of a flat sample of losses at tail probability `alpha` (may be traced)."""
    n = losses.shape[0]
    worst_first = jnp.sort(losses)[::-1]
    k = jnp.clip(jnp.ceil(alpha * n), 1, n).astype(jnp.int32)
    in_tail = jnp.arange(n) < k
    cvar = jnp.sum(jnp.where(in_tail, worst_first, 0.0)) / k
    return worst_first[k - 1], cvar


def _standardize(x: jax.Array) -> jax.Array:
    return (x - x.mean()) / (x.std() + 1e-8)


def make_agent(config: CVaRPPOConfig, env: Any, env_params: Any) -> Agent:
    window = config.cvar_window_steps
    if window < 1 or config.rollout_len % window:
        raise ConfigError(
            f"cvar_window_steps={window} must be >= 1 and divide rollout_len={config.rollout_len}"
        )

    def init_extra(hp: CVaRPPOHParams) -> dict[str, Any]:
        return {"lagrange_multiplier": jnp.asarray(hp.lambda_init, jnp.float32)}

    def adjust_advantages(
        traj: ppo.Transition, advantages: jax.Array, extra: dict[str, Any], hp: CVaRPPOHParams
    ) -> tuple[jax.Array, dict[str, Any], Metrics]:
        steps, num_envs = traj.raw_reward.shape
        window_loss = -traj.raw_reward.reshape(steps // window, window, num_envs).sum(axis=1)
        var, cvar = tail_stats(window_loss.reshape(-1), hp.cvar_alpha)

        excess = jnp.maximum(window_loss - var, 0.0) / hp.cvar_alpha
        cost = jnp.zeros((steps // window, window, num_envs)).at[:, -1].set(excess)
        cost = cost.reshape(steps, num_envs)

        def cost_to_go(next_total, inputs):
            c, done = inputs
            total = c + hp.gamma * (1.0 - done.astype(jnp.float32)) * next_total
            return total, total

        _, cost_adv = jax.lax.scan(
            cost_to_go, jnp.zeros((num_envs,)), (cost, traj.done), reverse=True
        )
        lam = extra["lagrange_multiplier"]
        combined = (_standardize(advantages) - lam * _standardize(cost_adv)) / (1.0 + lam)
        new_lam = jnp.maximum(0.0, lam + hp.lambda_lr * (cvar - hp.cvar_threshold))
        metrics = {
            "cvar": cvar,
            "var": var,
            "lambda": lam,
            "constraint_violation": cvar - hp.cvar_threshold,
        }
        return combined, {**extra, "lagrange_multiplier": new_lam}, metrics

    return ppo.make_agent(
        config, env, env_params, extension=ppo.PPOExtension(init_extra, adjust_advantages)
    )
