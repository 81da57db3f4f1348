"""The host-side training loop shared by `jaxtrade train` and `jaxtrade sweep`.

P points (seeds x hyperparameter points) train side by side: the agent's `init` and
`run_chunk` are vmapped over a leading point axis and jitted once, so the whole batch is one
compiled program. The point axis is sharded over the devices of a mesh (jaxtrade.sharding,
`train.devices`): under `jax.shard_map` each device runs the vmapped chunk on its own points
with its own copy of the market, and the chunk's metrics are gathered for the host; with
more devices than points the agent's env axis (`env_axis`) is split too and the compiler
partitions the vmapped chunk. Between
chunks (K updates each) the host logs, shows progress, checks for
NaN/inf, evaluates on the validation split and checkpoints. Nothing here knows which agent
or env it trains: it works with anything that follows the agent protocol (agents/common/
types.py): `init(key, hparams, env_params)`, `run_chunk(state, env_params)`,
`num_updates`, `updates_per_chunk`, `steps_per_update`, `policy_params(state)`; chunk
metrics are reduced and NaN-checked by the metrics contract written there.

Resume: the checkpoint holds the whole batched TrainState (RNG keys and optimizer state
included), and the loop continues from its update count, so N updates + resume + N more
equals 2N straight updates exactly.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from agents.common.types import find_metric, is_last_value_metric, is_loss_metric
from experiments.common import chunk_update_interval
from jaxtrade.checkpoint import CheckpointManager
from jaxtrade.errors import TrainingError
from jaxtrade.logging import RunLogger
from jaxtrade.progress import Progress
from jaxtrade.runs import init_points
from jaxtrade.sharding import AXIS, PointMesh, single_device
from jaxtrade.xla import compile_options

__all__ = ["LoopResult", "chunk_update_interval", "init_points", "run_loop"]

# Per-point validation metrics of a (placed) state: arrays [P'] or series [P', T].
Evaluate = Callable[[Any], Mapping[str, Any]]


@dataclasses.dataclass
class LoopResult:
    state: Any  # batched TrainState, leading axis = points
    updates_done: int
    last_metrics: dict[str, np.ndarray]  # per point, from the last chunk
    validation: dict[str, np.ndarray]  # per point, from the last evaluation
    finished: bool  # False when stopped early by `stop_after_updates`


def _tree_all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
              if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


# maxsize 2: a run compiles its chunk once; a cache of more would keep earlier runs' compiled
# chunks (hundreds to thousands of XLA:CPU memory maps each) alive for the whole process.
@functools.lru_cache(maxsize=2)
def _batched_chunk(run_chunk: Callable, mesh: PointMesh, env_axis: Any = None,
                   fast_compile: bool = False) -> Callable:
    """(points state, market) -> (points state, metrics on every device), state donated.

    Points only: shard_map rather than letting the compiler partition the vmapped program:
    points are independent, so each device runs exactly the one-device program on its share
    and no collective can appear inside a chunk. check_vma is off because agents' scans start
    carries from constants that become per-device values in the body.

    With the env axis split too (`env_axis`: the agent's leaf flags as a hashable
    `_Flags`), the compiler partitions the vmapped chunk from the state's shardings.

    `fast_compile` (train.fast_compile): XLA:CPU's faster-compiling options (jaxtrade.xla).
    """
    points, shared = mesh.points, mesh.replicated
    options = compile_options(fast_compile)
    if env_axis is not None and mesh.env_shards > 1:
        state_sharding = mesh.state_sharding(env_axis.tree())
        return jax.jit(jax.vmap(run_chunk, in_axes=(0, None)),
                       in_shardings=(state_sharding, shared),
                       out_shardings=(state_sharding, points), donate_argnums=0,
                       compiler_options=options)
    per_device = jax.shard_map(jax.vmap(run_chunk, in_axes=(0, None)), mesh=mesh.mesh,
                               in_specs=(PartitionSpec(AXIS), PartitionSpec()),
                               out_specs=PartitionSpec(AXIS), check_vma=False)
    return jax.jit(per_device, in_shardings=(points, shared), out_shardings=(points, shared),
                   donate_argnums=0, compiler_options=options)


@dataclasses.dataclass(frozen=True)
class _Flags:
    """An agent's env-axis flags in a hashable form (a cache key for the compiled chunk)."""

    treedef: Any
    leaves: tuple[bool, ...]

    @classmethod
    def of(cls, agent: Any, state: Any) -> _Flags | None:
        env_axis = getattr(agent, "env_axis", None)
        if env_axis is None:
            return None
        leaves, treedef = jax.tree_util.tree_flatten(env_axis(state))
        return cls(treedef, tuple(bool(x) for x in leaves))

    def tree(self) -> Any:
        return jax.tree_util.tree_unflatten(self.treedef, list(self.leaves))


@functools.lru_cache(maxsize=2)  # as _batched_chunk
def _params_finite(policy_params: Callable, mesh: Mesh) -> Callable:
    """Per point: are the policy parameters finite (replay buffers may hold unwritten slots)."""
    return jax.jit(jax.vmap(lambda s: _tree_all_finite(policy_params(s))),
                   out_shardings=NamedSharding(mesh, PartitionSpec()),
                   compiler_options=compile_options())


def run_loop(
    agent: Any,
    env_params: Any,
    state: Any,
    *,
    start_update: int,
    logger: RunLogger,
    checkpoints: CheckpointManager | None,
    checkpoint_every_updates: int,
    metadata: Mapping[str, Any],
    eval_every_updates: int | None = None,
    evaluate: Evaluate | None = None,
    progress: Progress | None = None,
    stop_after_updates: int | None = None,
    mesh: PointMesh | None = None,
    fast_compile: bool = False,
) -> LoopResult:
    """Train the batched `state` from `start_update` to `agent.num_updates` on `mesh` (one
    device when None). `state` holds the real points or is already placed on the mesh;
    metrics, validation, checkpoints and the returned state cover the real points only.

    In a multi-process run every process calls this with the same arguments (checkpoints
    only on process 0, a logger that writes only there): the chunk, gathers and NaN checks
    run everywhere in step.
    """
    if mesh is None:
        mesh = single_device(int(jax.tree_util.tree_leaves(state)[0].shape[0]))
    flags = _Flags.of(agent, state)
    state = mesh.place(state, None if flags is None else flags.tree())
    env_params = mesh.replicate(env_params)
    per_chunk = int(agent.updates_per_chunk)
    steps_per_update = int(agent.steps_per_update)
    num_updates = int(agent.num_updates)
    interval = chunk_update_interval(checkpoint_every_updates, per_chunk)
    eval_interval = chunk_update_interval(eval_every_updates or checkpoint_every_updates,
                                          per_chunk)
    run_chunk = _batched_chunk(agent.run_chunk, mesh, flags, bool(fast_compile))
    params_finite = _params_finite(agent.policy_params, mesh.mesh)

    update = int(start_update)
    stop_at = num_updates if stop_after_updates is None else min(
        num_updates, update + int(stop_after_updates))
    last_metrics: dict[str, np.ndarray] = {}
    validation: dict[str, np.ndarray] = {}
    last_saved = checkpoints.latest_step() if checkpoints is not None else None
    while update < stop_at:
        t0 = time.perf_counter()
        state, metrics = run_chunk(state, env_params)
        metrics = mesh.fetch(metrics)  # [P, K]
        finite = mesh.fetch({"finite": params_finite(state)})["finite"]
        elapsed = time.perf_counter() - t0
        _check_finite(metrics, finite, update, per_chunk, last_saved, checkpoints)
        update += per_chunk
        env_steps = update * steps_per_update
        last_metrics = _reduce_chunk(metrics)
        row = dict(last_metrics, steps_per_second=per_chunk * steps_per_update * metrics_points(
            metrics) / max(elapsed, 1e-9))
        save = update % interval == 0 or update >= stop_at
        if evaluate is not None and (save or update % eval_interval == 0):
            validation = {k: np.asarray(v, np.float64)
                          for k, v in mesh.fetch(evaluate(state)).items()}
            # Per-point scalars are logged; series (e.g. validation returns) are kept.
            row.update({k: v for k, v in validation.items() if v.ndim == 1})
        # The row goes to metrics.jsonl before the checkpoint: a kill between the two then
        # leaves a row above the latest checkpoint, which resume drops and logs again,
        # never a checkpoint whose row is missing.
        logger.log(update, env_steps, row)
        if save and checkpoints is not None:
            sharpe = validation.get("validation_sharpe")
            best = float(np.nanmax(sharpe)) if sharpe is not None and np.isfinite(
                sharpe).any() else None
            checkpoints.save(
                update, mesh.to_local(state),
                metadata=dict(metadata, update=update, env_steps=env_steps,
                              validation={k: v.tolist() for k, v in validation.items()
                                          if v.ndim == 1}),
                metrics=None if best is None else {"validation_sharpe": best},
            )
            last_saved = update
        elif save and mesh.multi_process:
            mesh.to_local(state)  # a gather: process 0 saves only if every process joins
        if progress is not None:
            ret = find_metric(last_metrics, "episode_return")
            sharpe = validation.get("validation_sharpe")
            progress.update(
                env_steps,
                episode_return=None if ret is None else float(np.nanmean(ret)),
                validation_sharpe=None if sharpe is None else float(np.nanmax(sharpe)),
            )
    return LoopResult(mesh.to_local(state), update, last_metrics, validation,
                      finished=update >= num_updates)


def metrics_points(metrics: Mapping[str, np.ndarray]) -> int:
    for value in metrics.values():
        return int(value.shape[0]) if value.ndim >= 1 else 1
    return 1


def _reduce_chunk(metrics: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per point, by the metrics contract (agents/common/types.py): the chunk's last value of
    run states (episode statistics, env steps, exploration rate), the chunk mean of the rest."""
    out = {}
    for key, value in metrics.items():
        if value.ndim < 2:
            out[key] = value
        elif is_last_value_metric(key):
            out[key] = value[:, -1]
        else:
            out[key] = value.mean(axis=1)
    return out


def _check_finite(metrics: Mapping[str, np.ndarray], params_finite: np.ndarray, update: int,
                  per_chunk: int, last_saved: int | None,
                  checkpoints: CheckpointManager | None) -> None:
    """TrainingError naming the first update whose loss (or the chunk whose params) broke."""
    bad_loss = any(is_loss_metric(k) and v.ndim >= 2 and not np.isfinite(v).all()
                   for k, v in metrics.items())
    if not bad_loss and params_finite.all():
        return
    # The checkpoint named as last good is checked against its checksums first.
    kept = "no checkpoint saved yet"
    if last_saved is not None and checkpoints is not None:
        good = checkpoints.newest_intact(last_saved)
        kept = (f"last good checkpoint: update {good} in {checkpoints.directory}"
                if good is not None else f"no intact checkpoint in {checkpoints.directory}")
    for key, value in metrics.items():
        if not is_loss_metric(key) or value.ndim < 2:
            continue
        bad = ~np.isfinite(value)  # [P, K]
        if bad.any():
            point, k = np.argwhere(bad)[np.argmin(np.argwhere(bad)[:, 1])]
            raise TrainingError(
                f"{key} is {value[point, k]} at update {update + int(k) + 1} (point {int(point)});"
                f" training stopped, {kept}"
            )
    if not params_finite.all():
        point = int(np.argmin(params_finite))
        raise TrainingError(
            f"parameters contain NaN/inf after update {update + per_chunk} (point {point}); "
            f"training stopped, {kept}"
        )
