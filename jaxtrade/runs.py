"""Points of a run and restoring one of them from its checkpoints.

A run trains P points side by side (seeds x sweep hyperparameter points, seed-major), as one
batched TrainState with a leading point axis. `jaxtrade train` (its report), `jaxtrade
backtest` and `jaxtrade export` all restore a checkpoint through `restore_point`, so the same
checkpoint name gives the same parameters and the same point everywhere:

    like = abstract_points(agent, point_keys(points), hparams, env_params)  # or init_points
    restored = restore_point(run_dir / "checkpoints", like, "best")   # or "latest", or 40
    restored.step, restored.point, restored.params

Rebuilding the agent and env from a run's config.yaml is the experiment layer's job
(experiments.train.restore_run); this module only needs what that produced.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from jaxtrade.checkpoint import CheckpointManager
from jaxtrade.errors import ConfigError
from jaxtrade.sharding import PointMesh, broadcast_from_primary
from jaxtrade.xla import jit_light


def point_list(cfg: Mapping[str, Any], hparam_points: Sequence[Mapping[str, float]] = ()
               ) -> list[dict[str, Any]]:
    """Seeds x hyperparameter points, seed-major: [{"seed": s, "agent.hparams.x": v}, ...]."""
    seeds = [int(cfg["seed"]) + i for i in range(int(cfg["train"]["num_seeds"]))]
    hps = list(hparam_points) or [{}]
    return [dict(seed=s, **hp) for hp in hps for s in seeds]


def point_keys(points: Sequence[Mapping[str, Any]]) -> jax.Array:
    """One PRNG key per point, from its seed."""
    return jnp.stack([jax.random.key(int(p["seed"])) for p in points])


@functools.lru_cache(maxsize=2)
def _jitted_init(init: Callable) -> Callable:
    # Cached per agent function so repeated runs in one process reuse the compiled program;
    # only the last 2: each holds hundreds of XLA:CPU memory maps (jaxtrade.xla.module_jit).
    # Compiled the light way on CPU: init runs once and does almost no work (jaxtrade.xla).
    return jit_light(init)


def init_points(agent: Any, keys: jax.Array, hparams: Any, env_params: Any,
                mesh: PointMesh | None = None) -> Any:
    """Batched initial TrainState: one point per key (and hparams row, when given).

    Points are initialized one by one and stacked: initialization runs once per run, and a
    vmapped network init over 3+ keys was seen to hang in XLA:CPU (jax 0.10.2). Training
    (`run_chunk`) is vmapped over the points. With a `mesh`, the state comes back padded
    and sharded over it, each device stacking only its own points (jaxtrade.sharding).
    """
    init = _jitted_init(agent.init)

    def make_point(i: int) -> Any:
        return init(keys[i], None if hparams is None else jax.tree.map(lambda x: x[i], hparams),
                    env_params)

    if mesh is not None:
        return mesh.assemble(make_point, getattr(agent, "env_axis", None))
    states = [make_point(i) for i in range(keys.shape[0])]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *states)


def abstract_points(agent: Any, keys: jax.Array, hparams: Any, env_params: Any) -> Any:
    """The shapes and dtypes of `init_points(agent, keys, hparams, env_params)`'s state, as
    `jax.ShapeDtypeStruct`s on the default device, without compiling or running `agent.init`:
    a restore template (`restore_point`'s `like`) for backtest, export and the report."""
    row = None if hparams is None else jax.tree.map(lambda x: x[0], hparams)
    point = jax.eval_shape(agent.init, keys[0], row, env_params)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct((keys.shape[0], *x.shape), x.dtype,
                                                       sharding=device), point)


def resume_points(checkpoints: CheckpointManager | None, state: Any, mesh: PointMesh,
                  env_axis: Callable[[Any], Any] | None = None,
                  step: int | None = None) -> tuple[Any, int]:
    """(the latest checkpoint's state, or checkpoint `step`'s, placed on `mesh` like `state`,
    its update number).

    Process 0 reads the checkpoint (`checkpoints` is None on the others) and hands it to
    every process; a checkpoint holds the real points only, so a run may resume on another
    number of devices. `env_axis` (the agent's) splits env axes as `init_points` did.
    Without a complete checkpoint (a kill during the first save) the run starts over:
    `state` as given, update 0.
    """
    like = mesh.to_local(state)
    restored, update = like, 0
    if checkpoints is not None and checkpoints.all_steps():
        restored, saved = checkpoints.restore(like, step)
        update = int(saved["update"])
    if mesh.multi_process:
        restored, update = broadcast_from_primary((restored, jnp.int32(update)))
    return mesh.place(restored, None if env_axis is None else env_axis(restored)), int(update)


def _state_params(state: Any) -> Any:
    return state.params


def point_params(state: Any, point: int,
                 policy_params: Callable[[Any], Any] = _state_params) -> Any:
    """The policy parameters of one point of a batched agent state (`agent.policy_params`)."""
    return jax.tree_util.tree_map(lambda x: x[point], policy_params(state))


def resolve_checkpoint(manager: CheckpointManager, checkpoint: str | int) -> int:
    """The update number of `checkpoint`: "best" (by validation Sharpe; "latest" when no
    checkpoint has a score), "latest", or an update number."""
    step: Any = checkpoint
    if step not in ("best", "latest"):
        try:
            step = int(step)
        except (TypeError, ValueError):
            raise ConfigError(f"checkpoint={checkpoint!r} is not allowed: best, latest or "
                              "an update number") from None
    return manager.resolve_step(step)


def choose_point(meta: Mapping[str, Any], num_points: int, point: int | None = None) -> int:
    """`point`, checked; by default the best validation Sharpe saved with the checkpoint
    (points without a finite score rank last; ties go to the first)."""
    if point is None:
        sharpe = (meta.get("validation") or {}).get("validation_sharpe") or []
        scores = [float(x) if x is not None and math.isfinite(float(x)) else -math.inf
                  for x in sharpe]
        point = max(range(len(scores)), key=scores.__getitem__) if scores else 0
    if not 0 <= point < num_points:
        raise ConfigError(f"point={point} is not allowed: the run has points "
                          f"0..{num_points - 1}")
    return int(point)


@dataclasses.dataclass
class RestoredPoint:
    state: Any  # the whole batched TrainState of the checkpoint
    meta: dict[str, Any]  # what the training loop saved with it (update, validation, ...)
    step: int  # the checkpoint's update number
    point: int  # the chosen point
    policy_params: Callable[[Any], Any] = _state_params  # the agent's accessor

    @property
    def params(self) -> Any:
        return point_params(self.state, self.point, self.policy_params)


def restore_point(checkpoints: str | Path | CheckpointManager, like: Any,
                  checkpoint: str | int = "best", point: int | None = None,
                  policy_params: Callable[[Any], Any] = _state_params) -> RestoredPoint:
    """Restore `checkpoint` (best | latest | update number) shaped like `like` and pick a point
    (by default the best validation Sharpe at that checkpoint). `checkpoints` is the run's
    checkpoints/ folder, or the manager that is writing it (training's own report)."""
    if isinstance(checkpoints, CheckpointManager):
        step = resolve_checkpoint(checkpoints, checkpoint)
        state, meta = checkpoints.restore(like, step)
    else:
        with CheckpointManager(Path(checkpoints), read_only=True) as manager:
            step = resolve_checkpoint(manager, checkpoint)
            state, meta = manager.restore(like, step)
    num_points = int(jax.tree_util.tree_leaves(policy_params(state))[0].shape[0])
    return RestoredPoint(state, meta, step, choose_point(meta, num_points, point),
                         policy_params)
