"""Run N envs split over several devices with `jax.sharding` (same code as one device).

    mesh = envs.parallel.env_mesh()                       # all devices on one "envs" axis
    reset, step = envs.parallel.sharded_fns(env, mesh)
    obs, state = reset(keys, params)                      # keys [N, 2], N divisible by devices
    obs, state, reward, terminated, truncated, info = step(keys, state, actions, params)

Per-env arrays (keys, states, actions, outputs) are sharded along their leading axis; the
params, including the market, are replicated: each device holds one copy of the market and
its share of the envs, so the per-env cost is still only the state.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from envs.trading import TradingEnv

AXIS = "envs"


def env_mesh(devices: list | None = None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (AXIS,))


def shard_envs(tree, mesh: Mesh):
    """Place per-env arrays so that their leading axis is split over the mesh."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec(AXIS)))


def replicate(tree, mesh: Mesh):
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def sharded_fns(env: TradingEnv, mesh: Mesh) -> tuple[Callable, Callable]:
    """Jitted vmapped reset/step whose per-env inputs and outputs are sharded over `mesh`."""
    per_env = NamedSharding(mesh, PartitionSpec(AXIS))
    shared = NamedSharding(mesh, PartitionSpec())
    reset = jax.jit(jax.vmap(env.reset, in_axes=(0, None)), in_shardings=(per_env, shared),
                    out_shardings=per_env)
    step = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)),
                   in_shardings=(per_env, per_env, per_env, shared), out_shardings=per_env)
    return reset, step
