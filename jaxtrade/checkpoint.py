"""Checkpoints of a training run: orbax `CheckpointManager` under `run_dir/checkpoints/`.

Each checkpoint is one step directory holding the whole training state pytree (params,
optimizer state, RNG keys, env and normalization state, replay buffers - whatever the
agent's `TrainState` holds) and a JSON metadata item (resolved config, versions, update,
env steps, metrics). Kept: the last `keep_last` checkpoints plus the `keep_best` best by a
metric (validation Sharpe by default).

Saves are synchronous and atomic: orbax writes into a temporary directory and renames it
when complete, so a process killed mid-save leaves the previous checkpoint intact (the
half-written temporary directory is removed the next time the manager opens; `saved_steps`
counts complete checkpoints only).

Each checkpoint is verified: when a save is on disk, the size and sha256 of every file of
the step go to `<step>/jaxtrade_sha256.json`, and a restore checks them first (a truncated
or altered file is named), then treats any failure to read the step as damage too. Asked
for "latest" or "best", a restore that meets a damaged checkpoint warns and falls back to
the newest intact one; asked for an update number, it stops with one line. A writable
manager moves the damaged step aside to `<checkpoints>.damaged/` (so training can save that
update again). Checkpoints written before checksums existed are restored unverified.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtrade.errors import CheckpointError

BEST_METRIC = "validation_sharpe"
CHECKSUMS = "jaxtrade_sha256.json"


def saved_steps(directory: str | Path) -> list[int]:
    """Update numbers of the complete checkpoints in `directory`, read without orbax (a step
    folder gets its number only when its save is complete)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _step_files(step_dir: Path) -> list[Path]:
    return sorted(p for p in step_dir.rglob("*") if p.is_file() and p.name != CHECKSUMS)


def _warn_stderr(message: str) -> None:
    print(f"jaxtrade: warning: {message}", file=sys.stderr)


class _Damaged(Exception):
    """A checkpoint whose files fail their checksums or cannot be read (the reason)."""


def _is_typed_key(x: Any) -> bool:
    return isinstance(x, (jax.Array, jax.ShapeDtypeStruct)) and jnp.issubdtype(
        x.dtype, jax.dtypes.prng_key)


def _key_data(x: Any) -> Any:
    if isinstance(x, jax.ShapeDtypeStruct):  # an abstract template (`restore`'s `like`)
        return jax.ShapeDtypeStruct(jax.eval_shape(jax.random.key_data, x).shape, jnp.uint32,
                                    sharding=x.sharding)
    return jax.random.key_data(x)


def _to_savable(tree: Any) -> Any:
    # Typed PRNG keys have no on-disk dtype: store their raw key data.
    tree = jax.tree_util.tree_map(lambda x: _key_data(x) if _is_typed_key(x) else x, tree)
    if jax.process_count() > 1:
        # Process 0 alone saves the gathered state of a multi-process run; orbax refuses
        # process-local jax.Arrays there, so they go (and come back) as numpy arrays.
        tree = jax.tree_util.tree_map(
            lambda x: np.asarray(x) if isinstance(x, jax.Array) else x, tree)
    return tree


def _from_savable(tree: Any, like: Any) -> Any:
    def back(saved: Any, template: Any) -> Any:
        if not _is_typed_key(template):
            return saved
        if isinstance(template, jax.Array):
            return jax.random.wrap_key_data(saved, impl=jax.random.key_impl(template))
        # An abstract template names no implementation: the default one, checked by dtype.
        key = jax.random.wrap_key_data(saved)
        if key.dtype != template.dtype:
            raise CheckpointError(f"the checkpoint's PRNG keys are {template.dtype}, this "
                                  f"process's default implementation makes {key.dtype}")
        return key

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
        warn: Callable[[str], None] | None = None,
    ) -> None:
        import orbax.checkpoint as ocp
        from orbax.checkpoint import checkpoint_managers as policies

        self.directory = Path(directory).resolve()
        self.best_metric = best_metric
        self.read_only = read_only
        self.warn = warn or _warn_stderr
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
        """The metrics saved with `step` ({} when its metadata cannot be read)."""
        try:
            meta = self.read_metadata(step)
        except Exception:  # noqa: BLE001 - a damaged step has no score; restore reports it
            return {}
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
        self._write_checksums(int(step))

    # ------------------------------------------------------------------ verification
    def _write_checksums(self, step: int) -> None:
        step_dir = self.step_dir(step)
        if not step_dir.is_dir():  # not kept by the preservation policy
            return
        files = {str(p.relative_to(step_dir)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
                 for p in _step_files(step_dir)}
        tmp = step_dir / (CHECKSUMS + ".tmp")
        tmp.write_text(json.dumps({"files": files}, indent=1))
        os.replace(tmp, step_dir / CHECKSUMS)

    def damage(self, step: int) -> str | None:
        """Why checkpoint `step` is damaged (a file missing, truncated or altered since it was
        written), or None when its files match their checksums (or it has none to check)."""
        step_dir = self.step_dir(step)
        path = step_dir / CHECKSUMS
        if not path.is_file():
            return None if step_dir.is_dir() else "its folder is missing"
        try:
            files = json.loads(path.read_text())["files"]
        except (OSError, ValueError, KeyError, TypeError):
            return f"{CHECKSUMS} is unreadable"
        for name, want in files.items():
            found = step_dir / name
            if not found.is_file():
                return f"{name} is missing"
            size = found.stat().st_size
            if size != want["bytes"]:
                return f"{name} holds {size} bytes, {want['bytes']} were written"
            if _sha256(found) != want["sha256"]:
                return f"{name} differs from what was written (sha256 mismatch)"
        return None

    def newest_intact(self, at_most: int | None = None) -> int | None:
        """The newest checkpoint (<= `at_most`) whose files pass their checksums."""
        for step in reversed(self.all_steps()):
            if (at_most is None or step <= at_most) and self.damage(step) is None:
                return step
        return None

    def _set_aside(self, step: int) -> None:
        """Move a damaged step out of the way (writable managers only): training may then
        save that update again, and nothing restores it by accident."""
        if self.read_only or not self.step_dir(step).is_dir():
            return
        aside = self.directory.parent / f"{self.directory.name}.damaged"
        aside.mkdir(parents=True, exist_ok=True)
        target, n = aside / str(step), 1
        while target.exists():
            target, n = aside / f"{step}-{n}", n + 1
        os.replace(self.step_dir(step), target)
        self._manager.reload()
        self.warn(f"moved damaged checkpoint {step} to {target}")

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

        `like` is a state of the same structure: a freshly initialized one, or its
        `jax.ShapeDtypeStruct`s (jaxtrade.runs.abstract_points); it gives shapes, dtypes and
        shardings (a leaf without one is restored onto the default device); its values are
        ignored. A damaged checkpoint asked for
        by name ("latest", "best") gives way to the newest intact one, with a warning; asked
        for by number, it is a CheckpointError.
        """
        first = self.resolve_step(step)
        named = step is None or step in ("latest", "best")
        candidates = [first] + ([s for s in reversed(self.all_steps()) if s != first]
                                if named else [])
        damaged: list[str] = []
        for candidate in candidates:
            try:
                reason = self.damage(candidate)
                if reason is not None:
                    raise _Damaged(reason)
                restored = self._restore_step(like, candidate)
            except _Damaged as err:
                damaged.append(f"checkpoint {candidate} in {self.directory} is damaged ({err})")
                self._set_aside(candidate)
                continue
            if damaged:
                self.warn(f"{'; '.join(damaged)}; using checkpoint {candidate}, the newest "
                          "intact one")
            return restored
        if not named:
            raise CheckpointError(f"{damaged[0]}; choose another checkpoint "
                                  f"(have: {self.all_steps() or 'none'})")
        raise CheckpointError(f"no intact checkpoint: {'; '.join(damaged)}")

    def _restore_step(self, like: Any, step: int) -> tuple[Any, dict[str, Any]]:
        ocp = self._ocp
        template = jax.tree_util.tree_map(
            lambda x: ocp.utils.to_shape_dtype_struct(x if isinstance(
                x, (jax.Array, jax.ShapeDtypeStruct)) else np.asarray(x)),
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
        except Exception as err:  # noqa: BLE001 - orbax raises bare Exceptions on bad files
            first_line = (str(err).splitlines() or [type(err).__name__])[0]
            first_line = first_line.split(" See full TensorStore details")[0][:200]
            if saved is None and isinstance(err, (ValueError, KeyError, TypeError)):
                raise CheckpointError(
                    f"checkpoint {step} in {self.directory} does not match this run's state "
                    f"(different agent, network or num_envs?): {first_line}") from None
            # The shapes matched (or could not be read): the files are what failed.
            raise _Damaged(f"unreadable: {first_line}") from None
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
