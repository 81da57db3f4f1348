"""Checkpoints of a training run: orbax `CheckpointManager` under `run_dir/checkpoints/`.

Each checkpoint is one step directory holding the whole training state pytree (params,
optimizer state, RNG keys, env and normalization state, replay buffers - whatever the
agent's `TrainState` holds) and a JSON metadata item (resolved config, versions, update,
env steps, metrics). Kept: the last `keep_last` checkpoints plus the `keep_best` best by a
metric (validation Sharpe by default).

Saves are synchronous and atomic: orbax writes into a temporary directory and renames it
when complete, so a process killed mid-save leaves the previous checkpoint intact (the
half-written temporary directory is removed the next time the manager opens).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtrade.errors import CheckpointError

BEST_METRIC = "validation_sharpe"


def _is_typed_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_savable(tree: Any) -> Any:
    # Typed PRNG keys have no on-disk dtype: store their raw key data.
    tree = jax.tree_util.tree_map(lambda x: jax.random.key_data(x) if _is_typed_key(x) else x,
                                  tree)
    if jax.process_count() > 1:
        # Process 0 alone saves the gathered state of a multi-process run; orbax refuses
        # process-local jax.Arrays there, so they go (and come back) as numpy arrays.
        tree = jax.tree_util.tree_map(
            lambda x: np.asarray(x) if isinstance(x, jax.Array) else x, tree)
    return tree


def _from_savable(tree: Any, like: Any) -> Any:
    def back(saved: Any, template: Any) -> Any:
        if _is_typed_key(template):
            return jax.random.wrap_key_data(saved, impl=jax.random.key_impl(template))
        return saved

    return jax.tree_util.tree_map(back, tree, like)


def _finite_metric(value: Any) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return -1e30
    return value if math.isfinite(value) else -1e30


class CheckpointManager:
    """Save / restore a training-state pytree with JSON metadata, keep-last-N + best."""

    def __init__(
        self,
        directory: str | Path,
        *,
        keep_last: int = 2,
        keep_best: int = 1,
        best_metric: str = BEST_METRIC,
        read_only: bool = False,
    ) -> None:
        import orbax.checkpoint as ocp
        from orbax.checkpoint import checkpoint_managers as policies

        self.directory = Path(directory).resolve()
        self.best_metric = best_metric
        if not read_only and jax.process_index() != 0:
            raise CheckpointError("only process 0 of a multi-process run writes checkpoints "
                                  f"(this is process {jax.process_index()})")
        if read_only and not self.directory.is_dir():
            raise CheckpointError(f"no checkpoints in {self.directory}")
        if read_only:  # orbax warns that a read-only manager will not save: we know
            logging.getLogger("absl").setLevel(logging.ERROR)
        keep = [policies.LatestN(n=keep_last)]
        if keep_best > 0:
            keep.append(policies.BestN(
                get_metric_fn=lambda m: _finite_metric(m.get(best_metric)),
                n=keep_best, keep_checkpoints_without_metrics=False,
            ))
        alone = {}
        if jax.process_count() > 1:
            # The manager lives in this process alone (in a multi-process run, process 0
            # saves the gathered state), so orbax must not wait for the others; it then
            # leaves creating the directory to us.
            alone["multiprocessing_options"] = ocp.options.MultiprocessingOptions(
                primary_host=jax.process_index(), active_processes={jax.process_index()})
            if not read_only:
                self.directory.mkdir(parents=True, exist_ok=True)
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policies.AnyPreservationPolicy(keep),
            enable_async_checkpointing=False,
            create=not read_only and not alone,
            read_only=read_only,
            cleanup_tmp_directories=not read_only,
            **alone,
        )
        self._ocp = ocp
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "metadata")
        )

    # ------------------------------------------------------------------ queries
    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        """Step with the highest `best_metric` among kept checkpoints (None if none has it)."""
        best, best_value = None, -math.inf
        for step in self.all_steps():
            value = self.metrics(step).get(self.best_metric)
            if value is not None and _finite_metric(value) > best_value:
                best, best_value = step, _finite_metric(value)
        return best

    def metrics(self, step: int) -> dict[str, Any]:
        meta = self.read_metadata(step)
        return dict(meta.get("metrics") or {})

    def step_dir(self, step: int) -> Path:
        return self.directory / str(step)

    # ------------------------------------------------------------------ save / restore
    def save(self, step: int, state: Any, *, metadata: dict[str, Any],
             metrics: dict[str, float] | None = None) -> None:
        """Write checkpoint `step` (an update count); returns when it is on disk."""
        ocp = self._ocp
        clean = {k: _finite_metric(v) for k, v in (metrics or {}).items()}
        meta = dict(metadata, step=int(step), metrics=clean)
        self._manager.save(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(_to_savable(state)),
                metadata=ocp.args.JsonSave(meta),
            ),
            metrics=clean if clean else None,
            force=True,
        )
        self._manager.wait_until_finished()

    def read_metadata(self, step: int) -> dict[str, Any]:
        ocp = self._ocp
        restored = self._manager.restore(
            int(step), args=ocp.args.Composite(metadata=ocp.args.JsonRestore())
        )
        return dict(restored["metadata"])

    def resolve_step(self, step: int | str | None = None) -> int:
        """The saved update number of `step`: "latest"/None, "best" (by validation Sharpe;
        the latest when no checkpoint has a score yet) or an update number."""
        if step == "best":
            step = self.best_step()
        if step in (None, "latest"):
            step = self.latest_step()
        if step is None or int(step) not in self.all_steps():
            raise CheckpointError(
                f"no checkpoint {'to restore' if step is None else step} in {self.directory}"
                f" (have: {self.all_steps() or 'none'})"
            )
        return int(step)

    def restore(self, like: Any, step: int | str | None = None) -> tuple[Any, dict[str, Any]]:
        """The state saved at `step` ("latest"/None, "best" or an int), shaped like `like`.

        `like` is a state of the same structure (e.g. a freshly initialized one): it gives
        shapes, dtypes and shardings; its values are ignored.
        """
        ocp = self._ocp
        step = self.resolve_step(step)
        template = jax.tree_util.tree_map(
            lambda x: ocp.utils.to_shape_dtype_struct(np.asarray(x) if not isinstance(
                x, jax.Array) else x),
            _to_savable(like),
        )
        saved = self._saved_shapes(int(step))
        wanted = sorted(tuple(x.shape) for x in jax.tree_util.tree_leaves(template))
        if saved is not None and saved != wanted:
            # Checked before orbax starts reading: a mismatch found mid-restore leaves its
            # pending reads behind (they surface later as ignored-coroutine warnings).
            raise CheckpointError(
                f"checkpoint {step} in {self.directory} does not match this run's state "
                f"(different agent, network or num_envs?): the shapes of its {len(saved)} arrays "
                f"differ from those of this run's {len(wanted)}")
        try:
            restored = self._manager.restore(
                int(step),
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(template),
                    metadata=ocp.args.JsonRestore(),
                ),
            )
        except (ValueError, KeyError, TypeError) as err:
            raise CheckpointError(
                f"checkpoint {step} in {self.directory} does not match this run's state "
                f"(different agent, network or num_envs?): {str(err).splitlines()[0]}"
            ) from None
        return _from_savable(restored["state"], like), dict(restored["metadata"])

    def _saved_shapes(self, step: int) -> list[tuple[int, ...]] | None:
        """Sorted shapes of the arrays saved at `step`, from orbax's metadata (None if
        it cannot be read; the restore then does the checking)."""
        try:
            tree = self._manager.item_metadata(step)["state"]
            leaves = jax.tree_util.tree_leaves(getattr(tree, "tree", tree),
                                               is_leaf=lambda x: hasattr(x, "shape"))
            # A manager that has not handled this item yet may get no tree back.
            return sorted(tuple(leaf.shape) for leaf in leaves) if leaves else None
        except Exception:  # noqa: BLE001 - an optional early check, never a failure
            return None

    def close(self) -> None:
        self._manager.close()

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
