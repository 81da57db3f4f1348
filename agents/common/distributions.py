"""Policy distributions and the mapping from a policy sample to an env action.

PPO stores the *raw* sample (a category index, or an unsquashed Gaussian vector) and computes
log-probabilities on it. The env receives `to_env_action(raw)`: for continuous actions the raw
vector is squashed to [-1, 1] (hard clip, or tanh) and scaled to the env's [low, high] box. With
tanh the Jacobian term depends only on the raw sample, so it cancels in PPO's probability ratio;
with clipping the ratio is that of the unclipped Gaussian, the usual PPO practice.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from jaxtrade.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class ActionSpec:
    """Static description of an env's action space."""

    kind: str  # "discrete" | "continuous"
    num_actions: int = 0  # discrete only
    shape: tuple[int, ...] = ()  # continuous only
    low: np.ndarray | None = None  # continuous only, broadcast to `shape`
    high: np.ndarray | None = None
    squash: str = "clip"  # "clip" | "tanh"

    @property
    def dim(self) -> int:
        """Width of the policy head's output for this action space."""
        return self.num_actions if self.kind == "discrete" else int(np.prod(self.shape))


def action_spec_from_space(space: Any, squash: str = "clip") -> ActionSpec:
    """Read a gymnax-style space (`Discrete(n)` or `Box(low, high, shape)`)."""
    if hasattr(space, "n"):
        return ActionSpec(kind="discrete", num_actions=int(space.n))
    if hasattr(space, "low") and hasattr(space, "high"):
        shape = tuple(int(s) for s in space.shape) or (1,)
        low = np.broadcast_to(np.asarray(space.low, np.float32), shape).copy()
        high = np.broadcast_to(np.asarray(space.high, np.float32), shape).copy()
        if squash not in ("clip", "tanh"):
            raise ConfigError(f"network.continuous_squash must be 'clip' or 'tanh', got {squash!r}")
        return ActionSpec(kind="continuous", shape=shape, low=low, high=high, squash=squash)
    raise ConfigError(f"unsupported action space {type(space).__name__}: need Discrete or Box")


def make_distribution(spec: ActionSpec, head_out: jax.Array, log_std: jax.Array | None):
    """Categorical over logits, or a diagonal Gaussian over the raw (unsquashed) action."""
    if spec.kind == "discrete":
        return distrax.Categorical(logits=head_out)
    scale = jnp.broadcast_to(jnp.exp(log_std), head_out.shape)
    return distrax.MultivariateNormalDiag(loc=head_out, scale_diag=scale)


def to_env_action(spec: ActionSpec, raw: jax.Array) -> jax.Array:
    """Map a raw policy sample to what `env.step` expects (shape of one env's action)."""
    if spec.kind == "discrete":
        return raw
    unit = jnp.tanh(raw) if spec.squash == "tanh" else jnp.clip(raw, -1.0, 1.0)
    low, high = jnp.asarray(spec.low), jnp.asarray(spec.high)
    action = low + (unit + 1.0) * 0.5 * (high - low)
    return action.reshape(raw.shape[:-1] + spec.shape)


# ------------------------------------------------------------------ tanh-squashed Gaussian
# SAC's policy (Haarnoja et al. 2018, appendix C): u ~ N(mean, std), a = tanh(u) in [-1, 1].
# Its entropy term needs the density of `a`, not of `u`, so the log-probability subtracts the
# log-Jacobian of tanh: log pi(a) = log N(u) - sum_i log(1 - tanh(u_i)^2). PPO above keeps the
# Gaussian of `u` (the Jacobian cancels in its ratio); nothing here changes what PPO computes.

LOG_STD_MIN = -5.0
LOG_STD_MAX = 2.0


def bounded_log_std(head_out: jax.Array) -> jax.Array:
    """A state-dependent log-std head output mapped smoothly into [LOG_STD_MIN, LOG_STD_MAX]
    (a hard clip would stop the gradient at the bounds)."""
    return LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (jnp.tanh(head_out) + 1.0)


def tanh_log_det_jacobian(u: jax.Array) -> jax.Array:
    """sum_i log(1 - tanh(u_i)^2) over the last axis, computed stably as
    2 (log 2 - u - softplus(-2u)) (no log of a number that rounds to 0 at large |u|)."""
    return jnp.sum(2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u)), axis=-1)


def tanh_gaussian_sample(key: jax.Array, mean: jax.Array, log_std: jax.Array
                         ) -> tuple[jax.Array, jax.Array]:
    """(u, log pi(tanh u)) for a reparameterized sample u = mean + std * eps [..., D]: the
    gradient flows through `mean` and `log_std`. The squashed action is tanh(u)."""
    eps = jax.random.normal(key, mean.shape, mean.dtype)
    u = mean + jnp.exp(log_std) * eps
    gaussian = jnp.sum(-0.5 * eps**2 - log_std - 0.5 * jnp.log(2.0 * jnp.pi), axis=-1)
    return u, gaussian - tanh_log_det_jacobian(u)
