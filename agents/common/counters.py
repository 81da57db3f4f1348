"""Env-step clocks of the replay agents, counted so they cannot wrap.

An agent's state counts updates in int32 (JAX's default integer; the config validator
refuses runs with more updates than int32 holds). Env steps are `update_step *
steps_per_update`, which in int32 wraps past 2**31 env steps (40,000 updates of 65,536 envs):
a gate on env steps then switched learning off and DQN's epsilon jumped back to its start.
So gates compare update counts against thresholds worked out in Python in update units,
schedules read env steps as float32, taken from the exact int32 product while it fits, and the
protocol's `Agent.env_steps` counts them exactly in int64 on the host (`env_steps_exact`),
without JAX's 64-bit mode.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

INT32_MAX = 2**31 - 1


def updates_to_reach(env_steps: int, steps_per_update: int) -> int:
    """The fewest updates after which at least `env_steps` env steps are done:
    ceil(env_steps / steps_per_update), 0 when `env_steps` <= 0, and INT32_MAX (a count the
    int32 update counter never passes) when it is larger.

    `update_step * steps_per_update >= env_steps` holds exactly when
    `update_step >= updates_to_reach(env_steps, steps_per_update)`."""
    if steps_per_update < 1:
        raise ValueError(f"steps_per_update={steps_per_update} must be >= 1")
    updates = -(-env_steps // steps_per_update)
    return min(max(updates, 0), INT32_MAX)


def env_steps_done(update_step: jax.Array, steps_per_update: int) -> jax.Array:
    """Env steps done after `update_step` updates, as float32.

    While the product fits int32 it is `(update_step * steps_per_update).astype(float32)`,
    bit for bit what the agents computed before; past that, the float32 product (one
    rounding each way, far below what a schedule over the run can resolve) instead of the
    wrapped int32 one."""
    update_step = jnp.asarray(update_step, jnp.int32)
    exact = update_step <= INT32_MAX // steps_per_update
    # The int32 product is computed for every step but only chosen where it does not wrap.
    product = (update_step * steps_per_update).astype(jnp.float32)
    scaled = update_step.astype(jnp.float32) * jnp.float32(steps_per_update)
    return jnp.where(exact, product, scaled)


def env_steps_exact(update_step: jax.Array, steps_per_update: int) -> np.ndarray:
    """Env steps done after `update_step` updates, exactly: an int64 numpy array (a scalar
    for one state, [P] for a batch of points), multiplied on the host so it needs no JAX
    64-bit mode. `update_step` is int32, so the product is below 2**31 * steps_per_update
    and never wraps. Host side only: inside a compiled program read `env_steps_done`."""
    return np.asarray(jax.device_get(update_step), np.int64) * np.int64(steps_per_update)
