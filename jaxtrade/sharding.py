"""Points of a run over the devices of a mesh, and the multi-host start.

A run trains P points (seeds x sweep points) as one batched state whose leading axis is the
point axis. `PointMesh` splits that axis over the devices of a one-axis `jax.sharding.Mesh`
named "points": each device holds and trains whole points, and the market (env params) is
replicated, one copy per device. The training loop runs the vmapped chunk under
`jax.shard_map`, so during a chunk a device only computes its own points; metrics are
gathered once per chunk.

    mesh = point_mesh("auto", num_points)          # train.devices=auto|N
    state = mesh.assemble(make_point)              # each device initializes its own points
    market = mesh.replicate(env_params)

Padding: when P does not divide by the device count, the last point is repeated until every
device holds the same number of points (jax shards an axis in equal blocks). The copies
train like the point they copy, but never reach logs, validation results, checkpoints or
reports (`unpad`, `fetch`, `to_local`), so a run's numbers do not depend on the device
count. Padding happens only when there are more points than point shards and they do not
divide: with more devices than points, the points axis takes gcd(devices, points) shards.

The env axis: when a run has fewer points than devices (one W&B sweep run on an 8-GPU pod),
the mesh gets a second axis, "envs", and the leaves an agent marks with `Agent.env_axis`
(env states, observations, replay rows) are split over it as well: mesh shape (p, e) with p
the largest device-count divisor that divides the points (no padding) and e = gcd(devices /
p, num_envs). That program is not run under shard_map: PPO shuffles minibatches over all
envs x steps and the replay agents sample rows of every env, so the compiler (GSPMD)
partitions the vmapped chunk and inserts the gathers and gradient reductions; the numbers
equal the one-device run up to float reassociation. Env steps, the main cost of a trading
run with many envs, are split over the devices; an update may gather its batch.

Multi-host: `initialize_distributed` starts `jax.distributed` from `train.distributed` or
the environment before any JAX computation; then `jax.devices()` lists every process's
devices, the mesh spans all of them, and every process runs the same program on its share.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxtrade.errors import ConfigError

AXIS = "points"
ENV_AXIS = "envs"

# Read when the config leaves a setting unset. JAX itself reads JAX_COORDINATOR_ADDRESS and
# JAX_LOCAL_DEVICE_IDS; the process count and id follow the same naming.
ENV_VARS = {"coordinator_address": "JAX_COORDINATOR_ADDRESS",
            "num_processes": "JAX_NUM_PROCESSES", "process_id": "JAX_PROCESS_ID"}


def is_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _is_array(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray))


def _host(x: jax.Array) -> np.ndarray:
    """The whole of a (possibly multi-process) array as numpy on this process."""
    if not isinstance(x, jax.Array):  # already on the host (an evaluate that returns numpy)
        return np.asarray(x)
    if x.is_fully_addressable or x.is_fully_replicated:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _host_leaf(x: Any) -> Any:
    """A leaf as a local value: numpy, or a typed key array on this process's device."""
    if is_key(x):
        return jax.random.wrap_key_data(jnp.asarray(_host(jax.random.key_data(x))),
                                        impl=jax.random.key_impl(x))
    return _host(x) if isinstance(x, jax.Array) else x


@dataclasses.dataclass(frozen=True)
class PointMesh:
    """A (points, envs) mesh over which the `num_points` points of a run (and, when the
    envs axis is longer than 1, the env axis of each point) are sharded."""

    mesh: Mesh
    num_points: int

    @property
    def num_devices(self) -> int:
        return int(self.mesh.size)

    @property
    def point_shards(self) -> int:
        return int(self.mesh.shape[AXIS])

    @property
    def env_shards(self) -> int:
        return int(self.mesh.shape[ENV_AXIS])

    @property
    def padded_points(self) -> int:
        return -(-self.num_points // self.point_shards) * self.point_shards

    @property
    def padding(self) -> int:
        return self.padded_points - self.num_points

    @property
    def points(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec(AXIS))

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    def state_sharding(self, env_axis: Any = None, tree: Any = None) -> Any:
        """Per leaf of a points state: its points axis over "points" and, for leaves
        `env_axis` marks (a pytree of bools like the state), its env axis over "envs"."""
        if env_axis is None or self.env_shards == 1:
            return self.points if tree is None else jax.tree.map(lambda _: self.points, tree)
        both = NamedSharding(self.mesh, PartitionSpec(AXIS, ENV_AXIS))
        return jax.tree.map(lambda flag: both if flag else self.points, env_axis)

    @property
    def multi_process(self) -> bool:
        return jax.process_count() > 1

    def describe(self) -> dict[str, Any]:
        """What run metadata records about the mesh."""
        return {"devices": self.num_devices,
                "shape": {k: int(v) for k, v in self.mesh.shape.items()},
                "axis_names": list(self.mesh.axis_names),
                "device_ids": [int(d.id) for d in self.mesh.devices.flat],
                "process_count": jax.process_count(), "points": self.num_points,
                "padding_points": self.padding}

    # ------------------------------------------------------------------ placing
    def assemble(self, make_point: Callable[[int], Any],
                 env_axis: Callable[[Any], Any] | None = None) -> Any:
        """The padded batched state, each device's points built by `make_point(i)` and
        stacked on that device: no device ever holds more than its own share. With an env
        axis to split (`env_axis`, the agent's), the points are built here and then split."""
        if env_axis is not None and self.env_shards > 1:
            rows = [make_point(min(row, self.num_points - 1))
                    for row in range(self.padded_points)]
            stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *rows)
            return self.place(stacked, env_axis(stacked))
        index_map = self.points.addressable_devices_indices_map((self.padded_points,))
        shards, treedef = {}, None
        for device, (rows,) in index_map.items():
            made: dict[int, Any] = {}
            states = []
            for row in range(*rows.indices(self.padded_points)):
                source = min(row, self.num_points - 1)  # padding repeats the last point
                if source not in made:
                    made[source] = make_point(source)
                states.append(made[source])
            stacked = jax.device_put(jax.tree.map(lambda *xs: jnp.stack(xs), *states), device)
            leaves, treedef = jax.tree_util.tree_flatten(stacked)
            shards[device] = leaves
        devices = list(shards)
        global_leaves = [
            jax.make_array_from_single_device_arrays(
                (self.padded_points, *shards[devices[0]][j].shape[1:]), self.points,
                [shards[d][j] for d in devices])
            for j in range(len(shards[devices[0]]))
        ]
        return jax.tree_util.tree_unflatten(treedef, global_leaves)

    def place(self, tree: Any, env_axis: Any = None) -> Any:
        """A local tree of P (or padded) points, padded and sharded over the mesh (env axes
        too, for the leaves `env_axis` marks; see `state_sharding`)."""
        def put(x: Any, sharding: NamedSharding) -> Any:
            if not _is_array(x):
                return x
            if isinstance(x, jax.Array) and x.shape[0] == self.padded_points and \
                    x.sharding.is_equivalent_to(sharding, x.ndim):
                return x
            if self.padding and x.shape[0] == self.num_points:
                x = jnp.concatenate([jnp.asarray(x), jnp.repeat(
                    jnp.asarray(x)[-1:], self.padding, axis=0)])
            return self._put(x, sharding)

        return jax.tree.map(put, tree, self.state_sharding(env_axis, tree))

    def replicate(self, tree: Any) -> Any:
        """A copy of `tree`'s arrays on every device of the mesh (the market, once each)."""
        def put(x: Any) -> Any:
            if not _is_array(x) or (isinstance(x, jax.Array) and x.sharding.is_equivalent_to(
                    self.replicated, x.ndim)):
                return x
            return self._put(x, self.replicated)

        return jax.tree.map(put, tree)

    def _put(self, x: Any, sharding: NamedSharding) -> jax.Array:
        if not self.multi_process:
            return jax.device_put(x, sharding)
        # device_put cannot target other processes' devices: every process holds the same
        # value and hands over the blocks of its own devices.
        key = is_key(x)
        host = np.asarray(jax.random.key_data(x) if key else x)
        out = jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
        return jax.random.wrap_key_data(out, impl=jax.random.key_impl(x)) if key else out

    # ------------------------------------------------------------------ reading back
    def unpad(self, tree: Any) -> Any:
        """The real points only (drops the padding copies)."""
        if not self.padding:
            return tree
        return jax.tree.map(lambda x: x[:self.num_points] if _is_array(x) else x, tree)

    def to_local(self, tree: Any) -> Any:
        """The real points as arrays this process can read and save on its own. Every
        process must call it together in a multi-process run (it gathers)."""
        tree = self.unpad(tree)
        if not self.multi_process:
            return tree
        return jax.tree.map(_host_leaf, tree)

    def fetch(self, tree: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Per-point outputs (metrics, validation) as numpy, real points only."""
        return {k: _host(v)[:self.num_points] if np.ndim(v) >= 1 else np.asarray(v)
                for k, v in tree.items()}


# ---------------------------------------------------------------------------- choosing


def resolve_devices(setting: int | str, num_points: int, env_shardable: bool = False
                    ) -> list[Any]:
    """The devices of `train.devices`: auto (on one host every device, at most one per point
    unless the env axis can be split too; across hosts every device of every process) or a
    count N <= the devices available."""
    available = jax.devices()
    multi = jax.process_count() > 1
    if setting == "auto":
        if multi or env_shardable:
            return available
        return available[:max(1, min(len(available), num_points))]
    count = int(setting)
    if count > len(available):
        raise ConfigError(
            f"train.devices={count} is not allowed: {len(available)} "
            f"{available[0].platform} device(s) available; use train.devices=auto or <= "
            f"{len(available)}")
    if multi and count != len(available):
        raise ConfigError(
            f"train.devices={count} is not allowed across {jax.process_count()} processes: "
            f"the mesh spans every device ({len(available)}); use train.devices=auto")
    return available[:count]


def mesh_shape(num_devices: int, num_points: int, num_envs: int | None) -> tuple[int, int]:
    """(point shards, env shards) for a run: only points unless there are more devices than
    points and an env axis to split (`num_envs`); then as many point shards as divide both
    the devices and the points, and gcd(rest, num_envs) env shards."""
    if not num_envs or num_devices <= num_points:
        return num_devices, 1
    p = math.gcd(num_devices, num_points)
    return p, math.gcd(num_devices // p, int(num_envs))


def point_mesh(setting: int | str, num_points: int, num_envs: int | None = None) -> PointMesh:
    """The mesh of `train.devices` for `num_points` points; `num_envs` (None: the agent
    does not mark its env axis) lets surplus devices split each point's envs."""
    devices = resolve_devices(setting, num_points, env_shardable=bool(num_envs))
    p, e = mesh_shape(len(devices), num_points, num_envs)
    if p * e < len(devices) and jax.process_count() > 1:
        p, e = len(devices), 1  # the mesh must span every process: pad points instead
    grid = np.asarray(devices[:p * e]).reshape(p, e)
    return PointMesh(Mesh(grid, (AXIS, ENV_AXIS)), int(num_points))


def single_device(num_points: int) -> PointMesh:
    """The mesh of one device (callers that do not choose devices)."""
    return point_mesh(1, num_points)


# ---------------------------------------------------------------------------- many hosts


def distributed_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """train.distributed with unset values taken from the environment."""
    out = dict(settings or {})
    for key, var in ENV_VARS.items():
        if out.get(key) is None and os.environ.get(var):
            value = os.environ[var]
            try:
                out[key] = value if key == "coordinator_address" else int(value)
            except ValueError:
                raise ConfigError(f"{var}={value!r} is not allowed: expected an integer") \
                    from None
    return out


def initialize_distributed(settings: Mapping[str, Any] | None) -> bool:
    """Start `jax.distributed` when a coordinator is named (train.distributed or
    JAX_COORDINATOR_ADDRESS); otherwise do nothing. Must run before any JAX computation.
    Returns whether this process belongs to a multi-process run."""
    found = distributed_settings(settings)
    address = found.get("coordinator_address")
    if not address:
        return False
    if jax.distributed.is_initialized():
        return jax.process_count() > 1
    local = found.get("local_device_ids")
    try:
        # Unset count / id are left to JAX's cluster detection (Slurm, Open MPI, ...).
        jax.distributed.initialize(
            coordinator_address=str(address), num_processes=found.get("num_processes"),
            process_id=found.get("process_id"),
            local_device_ids=None if local is None else [int(i) for i in local],
            initialization_timeout=int(found.get("initialization_timeout_s") or 300))
    except (RuntimeError, ValueError) as err:
        raise ConfigError(f"train.distributed.coordinator_address={address!r}: jax.distributed"
                          f" could not start ({str(err).splitlines()[0]}); it starts before "
                          "JAX does, from the `jaxtrade train` command line or the "
                          "environment") from None
    return jax.process_count() > 1


def broadcast_from_primary(tree: Any) -> Any:
    """Process 0's values of `tree` on every process (all processes call it together)."""
    from jax.experimental import multihost_utils

    leaves, treedef = jax.tree_util.tree_flatten(tree)
    data = [jax.random.key_data(x) if is_key(x) else x for x in leaves]
    got = jax.tree_util.tree_leaves(multihost_utils.broadcast_one_to_all(data))
    return jax.tree_util.tree_unflatten(treedef, [
        jax.random.wrap_key_data(jnp.asarray(g), impl=jax.random.key_impl(x)) if is_key(x)
        else jnp.asarray(g) for g, x in zip(got, leaves)])


def is_primary() -> bool:
    """Process 0 writes the run directory (config, metrics, checkpoints, report, W&B)."""
    return jax.process_index() == 0
