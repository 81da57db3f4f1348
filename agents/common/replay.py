"""On-device replay for off-policy agents: flashbax buffers of compact transitions.

A buffer item is one env step of one env:

    {"obs": C, "action": a, "reward": r, "terminated": b, "truncated": b, "next_obs": C}

where C is the observation as the env's codec stores it and `next_obs` is the observation the
step reached before any auto-reset (`info["final_observation"]`), so a truncated step
bootstraps from the right state. For jaxtrade's trading env C is the bar index and the
portfolio part of the observation (3 A + 2 floats): the market window is rebuilt from the
shared MarketData at sample time (`TradingEnv.expand_observation`), so 1,000,000 transitions
of the default 1,989-float observation take ~60 MB instead of ~16 GB. Other envs store their
observations as they are.

Items are kept per env in time order (flashbax trajectory buffers, [num_envs, T]) and sampled
as sequences of `n_step` consecutive steps, from which the n-step target is computed
(agents/common/losses.n_step_returns); episode ends inside a sequence cut it. With
prioritized replay the sum tree is part of the buffer state, so it is checkpointed with it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flashbax as fbx
import jax
import jax.numpy as jnp
from flashbax.buffers import prioritised_trajectory_buffer as fbx_prioritised

from jaxtrade.errors import ConfigError


class ObsCodec(NamedTuple):
    """How a buffer stores observations: encode(obs, bar) -> stored; decode(stored, params)."""

    encode: Callable[[jax.Array, Any], Any]
    decode: Callable[[Any, Any], jax.Array]
    current_bar: Callable[[Any], Any]  # env state -> what `encode` needs beside the obs
    final_bar: Callable[[Any], Any]  # step info -> the same for the final observation
    compact: bool


def obs_codec(env: Any) -> ObsCodec:
    """The compact codec for an unwrapped trading env, the identity for any other env.

    Looked up on the env's class, not the instance: a wrapper forwards attributes to the env
    it wraps but may change the observation (normalization), which the codec would not see.
    """
    if hasattr(type(env), "expand_observation") and hasattr(type(env), "compact_observation"):
        return ObsCodec(
            encode=env.compact_observation,
            decode=env.expand_observation,
            current_bar=lambda env_state: env_state.t,
            final_bar=lambda info: info["bar"],
            compact=True,
        )
    return ObsCodec(
        encode=lambda obs, _bar: obs,
        decode=lambda stored, _params: stored,
        current_bar=lambda _state: None,
        final_bar=lambda _info: None,
        compact=False,
    )


def make_item(codec: ObsCodec, step: Any) -> dict[str, Any]:
    """The buffer item of a `collect` step (agents/common/rollout.Step), per env."""
    return {
        "obs": codec.encode(step.obs, codec.current_bar(step.env_state)),
        "action": step.action,
        "reward": step.reward,
        "terminated": step.terminated,
        "truncated": step.truncated,
        "next_obs": codec.encode(step.final_obs, codec.final_bar(step.info)),
    }


class Replay(NamedTuple):
    """A flashbax trajectory buffer (uniform or prioritized) plus the sizes it was made with."""

    buffer: Any
    prioritized: bool
    num_envs: int
    capacity_per_env: int
    priority_exponent: float
    device: str

    def init(self, item: dict[str, Any]) -> Any:
        return self.buffer.init(item)

    def add(self, state: Any, records: dict[str, Any]) -> Any:
        """Add [T, num_envs, ...] records from `collect` (flashbax wants [num_envs, T, ...])."""
        return self.buffer.add(state, jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), records))

    def sample(self, state: Any, key: jax.Array) -> tuple[dict[str, Any], jax.Array, jax.Array]:
        """(items [B, n, ...], indices [B] (zeros when uniform), probabilities [B])."""
        batch = self.buffer.sample(state, key)
        if not self.prioritized:
            size = jnp.asarray(1.0)
            return batch.experience, jnp.zeros((), jnp.int32), size
        return batch.experience, batch.indices, batch.probabilities

    def importance_weights(self, state: Any, probabilities: jax.Array,
                           beta: jax.Array | float) -> jax.Array:
        """PER weights (N P(i))^-beta normalized by their batch maximum (Schaul et al. 2016)."""
        if not self.prioritized:
            return jnp.ones_like(probabilities)
        filled = jnp.where(state.is_full, self.capacity_per_env, state.current_index)
        size = jnp.maximum(filled * self.num_envs, 1).astype(jnp.float32)
        weights = (size * jnp.maximum(probabilities, 1e-12)) ** (-beta)
        return weights / jnp.max(weights)

    def set_priorities(self, state: Any, indices: jax.Array, priorities: jax.Array) -> Any:
        if not self.prioritized:
            return state
        return fbx_prioritised.set_priorities(state, indices, priorities,
                                              self.priority_exponent, self.device)

    def can_sample(self, state: Any) -> jax.Array:
        return self.buffer.can_sample(state)


def buffer_env_axis(state: Any) -> Any:
    """Which leaves of a buffer state lead with the env axis: the stored rows ([num_envs, T,
    ...]); write positions and the prioritized sum tree (over all items) do not."""
    flags = jax.tree.map(lambda _: False, state)
    return flags.replace(experience=jax.tree.map(lambda _: True, state.experience))


def make_replay(buffer_size: int, num_envs: int, batch_size: int, n_step: int,
                prioritized: bool = False, priority_exponent: float = 0.6) -> Replay:
    """A buffer holding `buffer_size` transitions in total (rounded down to whole env rows)."""
    capacity = buffer_size // num_envs
    if capacity < n_step + 1:
        raise ConfigError(f"agent.buffer_size={buffer_size} is not allowed: with "
                          f"env.num_envs={num_envs} each env keeps {capacity} steps, fewer than "
                          f"agent.n_step + 1 = {n_step + 1}")
    if buffer_size < batch_size:
        raise ConfigError(f"agent.buffer_size={buffer_size} is not allowed: smaller than "
                          f"agent.batch_size={batch_size}")
    sizes = dict(add_batch_size=num_envs, sample_batch_size=batch_size,
                 sample_sequence_length=n_step, period=1, min_length_time_axis=n_step,
                 max_length_time_axis=capacity)
    device = "gpu" if jax.default_backend() in ("gpu", "cuda", "rocm") else \
        "tpu" if jax.default_backend() == "tpu" else "cpu"
    if prioritized:
        buffer = fbx.make_prioritised_trajectory_buffer(
            **sizes, priority_exponent=priority_exponent, device=device)
    else:
        buffer = fbx.make_trajectory_buffer(**sizes)
    return Replay(buffer, prioritized, num_envs, capacity, priority_exponent, device)


def buffer_bytes(state: Any) -> int:
    """Device bytes a buffer state holds (items, sum tree, indices)."""
    return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state)))
