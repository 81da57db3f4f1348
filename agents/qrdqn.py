"""QR-DQN: DQN whose head predicts N quantiles of the return per action (Dabney et al. 2018).

Everything but the head is DQN's (agents/dqn.py: replay, n-step targets, double, dueling,
prioritized replay, target network): this file only replaces the value head through
`dqn.make_agent(..., head=...)`.

  quantiles  theta_i(s, a), i = 1..N, at the midpoints tau_i = (2i - 1) / 2N
  target     y_j = G + gamma^m (1 - terminated) theta_j(s_m, a*), a* the greedy action at s_m
  loss       quantile Huber, kappa = `huber_delta` (losses.quantile_huber_loss); prioritized
             replay uses each item's loss as its priority
  acting     `act_on="mean"`: argmax of the mean quantile (the expected return);
             `act_on="cvar"`: argmax of the mean of the lowest ceil(alpha N) quantiles, a
             risk-averse choice of the action whose worst alpha-tail of returns is best.

Logged per update beside DQN's metrics: `quantile_05`, `quantile_25`, `quantile_50`,
`quantile_75`, `quantile_95` (batch means of the taken actions' predicted return quantiles,
nearest level) and `quantile_spread` (95% - 5%), so the learned return distribution reaches
metrics.jsonl, W&B and the report.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from agents import dqn
from agents.common.losses import quantile_huber_loss
from agents.common.types import Agent
from jaxtrade.errors import ConfigError

LOGGED_LEVELS = (0.05, 0.25, 0.5, 0.75, 0.95)


@struct.dataclass
class QRDQNHParams(dqn.DQNHParams):
    # kappa: quadratic for the errors that occur (returns near 100), as DQN's squared error;
    # kappa 1 pulled every error with the same constant force (BENCHMARKS.md, issue 19)
    huber_delta: float = 100.0
    adam_eps: float = 1e-3  # with kappa 100 (BENCHMARKS.md, issue 19); DQN: 1e-2


@dataclasses.dataclass(frozen=True)
class QRDQNConfig(dqn.DQNConfig):
    name: str = "qrdqn"
    n_step: int = 3  # with huber_delta=100 and adam_eps=1e-3 (BENCHMARKS.md, issue 19)
    priority_exponent: float = 0.2  # its priorities are losses ~ u^2: DQN's 0.4 on |u|
    num_quantiles: int = 32
    act_on: str = "mean"  # "mean" | "cvar"
    act_cvar_alpha: float = 0.25  # tail fraction for act_on="cvar"
    hparams: QRDQNHParams = dataclasses.field(default_factory=QRDQNHParams)

    def check(self, episode_steps: int | None = None) -> None:
        super().check(episode_steps)
        if self.num_quantiles < 1:
            raise ConfigError(f"agent.num_quantiles={self.num_quantiles} is not allowed: "
                              "must be >= 1")
        if self.act_on not in ("mean", "cvar"):
            raise ConfigError(f"agent.act_on={self.act_on!r} is not allowed: 'mean' or 'cvar'")
        if not 0.0 < self.act_cvar_alpha <= 1.0:
            raise ConfigError(f"agent.act_cvar_alpha={self.act_cvar_alpha} is not allowed: "
                              "must be in (0, 1]")

    def export_head(self) -> dict[str, Any]:
        return {"family": "q", "head": self.head, "num_quantiles": self.num_quantiles,
                "act_on": self.act_on, "act_cvar_alpha": self.act_cvar_alpha}


def quantile_midpoints(n: int) -> jax.Array:
    return (2.0 * jnp.arange(n, dtype=jnp.float32) + 1.0) / (2.0 * n)


def lower_tail_mean(quantiles: jax.Array, alpha: float) -> jax.Array:
    """CVaR_alpha of the return from N equally weighted quantiles [..., N]: the mean of the
    lowest ceil(alpha N) (sorted, since a network's quantiles need not be monotone)."""
    n = quantiles.shape[-1]
    k = max(1, min(n, math.ceil(alpha * n)))
    return jnp.sort(quantiles, axis=-1)[..., :k].mean(axis=-1)


def quantile_head(config: QRDQNConfig) -> dqn.ValueHead:
    n = config.num_quantiles
    taus = quantile_midpoints(n)
    levels = [min(n - 1, int(level * n)) for level in LOGGED_LEVELS]

    def action_values(out: jax.Array, hp: Any) -> jax.Array:
        if config.act_on == "cvar":
            return lower_tail_mean(out, config.act_cvar_alpha)
        return out.mean(axis=-1)

    def loss(chosen, target, weights, hp):
        return quantile_huber_loss(chosen, target, taus, weights, hp.huber_delta)

    def metrics(out: jax.Array) -> dict[str, jax.Array]:
        # Quantiles of the greedy action's return distribution: the batch mean of its N
        # quantiles, sorted (a network's quantiles need not be monotone). Sorting the [N]
        # mean, not each of the B rows: a [B, N] sort per update cost as much as the
        # quantile loss on CPU (BENCHMARKS.md, issue 13).
        greedy = jnp.argmax(action_values(out, None), axis=-1)
        chosen = jnp.take_along_axis(out, greedy[:, None, None], axis=1)[:, 0]
        means = jnp.sort(chosen.mean(axis=0))
        found = {f"quantile_{round(100 * lv):02d}": means[i]
                 for lv, i in zip(LOGGED_LEVELS, levels)}
        found["quantile_spread"] = means[levels[-1]] - means[levels[0]]
        return found

    return dqn.ValueHead(n, action_values, loss, metrics)


def make_agent(config: QRDQNConfig, env: Any, env_params: Any) -> Agent:
    return dqn.make_agent(config, env, env_params, head=quantile_head(config))
