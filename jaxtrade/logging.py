"""One logger interface for training runs: `none`, `console` or `wandb`.

Whatever the kind, every logged row also goes to `run_dir/metrics.jsonl` (one JSON object
per line: `point`, `update`, `env_steps`, `time_s` and the metrics), so nothing depends on
W&B. The console shows one progress line per chunk (jaxtrade.progress); `verbose=True`
(`logger.verbose=true`) prints every metric of each chunk too. A run trains P points side by
side (seeds x hyperparameter points, vmapped); each point is its own W&B run inside one
group, so W&B's comparison views work, and `group_summary` adds one run to the group that
holds the aggregate over its seeds.

W&B runs offline by default (`logger.mode=offline`, files under `run_dir/wandb/`, upload
later with `wandb sync`); `WANDB_MODE` in the environment takes precedence. Secrets never
reach a config, a log or a run directory: keys that look like credentials are dropped from
everything logged (`scrub`).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxtrade.errors import ConfigError

_SECRET_KEY = re.compile(r"(api[_-]?key|token|secret|password|passwd|credential)", re.I)


def scrub(tree: Any) -> Any:
    """A copy of `tree` without keys that look like credentials."""
    if isinstance(tree, Mapping):
        return {k: scrub(v) for k, v in tree.items() if not _SECRET_KEY.search(str(k))}
    if isinstance(tree, (list, tuple)):
        return [scrub(v) for v in tree]
    return tree


def to_jsonable(value: Any) -> Any:
    """Numbers as plain floats/ints (NaN/inf as null), arrays as lists."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        arr = np.asarray(value)
        return to_jsonable(arr.item() if arr.ndim == 0 else arr.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


class _ExpectedOrbaxWarnings:
    """Drops orbax's 'Item "state"/"metadata" was found in the checkpoint, but could not be
    restored' warnings: orbax logs them whenever a fresh CheckpointManager reads a step
    before it has been told the items' handlers (jaxtrade.checkpoint reads the saved shapes
    first, then restores both items with their handlers), so on a clean resume they read
    like a failure while nothing failed. A restore that does fail raises its own error."""

    ITEMS = ("state", "metadata")

    def filter(self, record: Any) -> bool:
        return not (str(record.msg).startswith('Item "%s" was found in the checkpoint, but '
                                               "could not")
                    and record.args and record.args[0] in self.ITEMS)


def silence_expected_orbax_warnings() -> None:
    """Install the filter on absl's logger (orbax logs through absl); idempotent."""
    import logging

    logger = logging.getLogger("absl")
    if not any(isinstance(f, _ExpectedOrbaxWarnings) for f in logger.filters):
        logger.addFilter(_ExpectedOrbaxWarnings())


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """`1 pod`, `2 pods`, `0 trials`: a count with its noun in the right number."""
    return f"{count} {noun if count == 1 else (plural_form or noun + 's')}"


def read_metrics(run_dir: str | Path, warn: Callable[[str], None] | None = None
                 ) -> list[dict[str, Any]]:
    """The rows of run_dir/metrics.jsonl. A line that is not a row (torn by a kill or a full
    disk mid-write) is skipped and reported through `warn` (default: stderr)."""
    rows, bad = _read_rows(Path(run_dir) / "metrics.jsonl")
    if bad:
        (warn or _warn)(_skipped(Path(run_dir) / "metrics.jsonl", bad))
    return rows


def _read_rows(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """(rows, numbers of the lines that are not rows)."""
    if not path.is_file():
        return [], []
    rows, bad = [], []
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
                if not isinstance(row, dict):
                    raise ValueError("not an object")
                row["update"] = int(row.get("update", 0))
            except (ValueError, TypeError, OverflowError, RecursionError):
                bad.append(number)
                continue
            rows.append(row)
    return rows, bad


def _skipped(path: Path, bad: Sequence[int]) -> str:
    shown = ", ".join(str(n) for n in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5
                                                   else "")
    return (f"{path}: skipped {len(bad)} line(s) that are not metrics rows (torn or garbage "
            f"writes): line {shown}")


def _warn(message: str) -> None:
    import sys

    print(f"jaxtrade: warning: {message}", file=sys.stderr)


class RunLogger:
    """Streams per-point metrics at chunk boundaries to metrics.jsonl and the chosen sink."""

    def __init__(
        self,
        run_dir: str | Path,
        *,
        kind: str = "console",
        config: Mapping[str, Any] | None = None,
        points: Sequence[Mapping[str, Any]] = ({},),
        run_info: Mapping[str, Any] | None = None,
        project: str = "jaxtrade",
        entity: str | None = None,
        group: str | None = None,
        mode: str = "offline",
        tags: Sequence[str] = (),
        resume_after_update: int | None = None,
        print_fn: Callable[[str], None] = print,
        write: bool = True,
        verbose: bool = False,
    ) -> None:
        if kind not in ("none", "console", "wandb"):
            raise ConfigError(f"logger.kind={kind!r} is not allowed: choose none, console, wandb")
        self.run_dir = Path(run_dir)
        self.points = [dict(p) for p in points]
        self.print_fn = print_fn
        # Every metric of every chunk on the console (logger.verbose=true); otherwise the
        # progress line says what a reader follows and the rest is in metrics.jsonl.
        self.verbose = verbose
        self._t0 = time.perf_counter()
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self._runs: list[Any] = []
        self._wandb_group: dict[str, Any] = {}  # what group_summary's run is started with
        # write=False: a process of a multi-process run other than process 0 logs nothing
        # (process 0 writes metrics.jsonl and the W&B runs for the whole run).
        self.kind = kind if write else "none"
        self._file: Any = None
        if not write:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume_after_update is not None:
            self._truncate_after(resume_after_update)
        elif self.metrics_path.exists():
            self.metrics_path.unlink()
        self._file = self.metrics_path.open("a")
        if kind == "wandb":
            self._init_wandb(config or {}, run_info or {}, project, entity, group, mode, tags,
                             resume=resume_after_update is not None)

    # --------------------------------------------------------------------- W&B
    def _init_wandb(self, config: Mapping[str, Any], run_info: Mapping[str, Any], project: str,
                    entity: str | None, group: str | None, mode: str, tags: Sequence[str],
                    resume: bool) -> None:
        import wandb

        mode = os.environ.get("WANDB_MODE", mode)
        # Our `agents` package shares its name with an LLM library W&B would suggest
        # tracing tools for; that suggestion is noise here.
        os.environ.setdefault("WANDB_DISABLE_WEAVE", "true")
        (self.run_dir / "wandb").mkdir(exist_ok=True)  # wandb writes run_dir/wandb/
        group = group or self.run_dir.resolve().name
        ids_path = self.run_dir / "wandb_run_ids.json"
        ids = json.loads(ids_path.read_text()) if resume and ids_path.is_file() else {}
        # For the group's summary run, started only when the run ends (group_summary).
        self._wandb_group = dict(config=config, run_info=run_info, project=project,
                                 entity=entity, group=group, mode=mode, tags=list(tags),
                                 summary_id=ids.get("summary"))
        new_ids = {}
        for index, point in enumerate(self.points):
            run_config = scrub(dict(config, point=point, run_info=dict(run_info)))
            label = ",".join(f"{k.split('.')[-1]}={v:g}" if isinstance(v, float) else
                             f"{k.split('.')[-1]}={v}" for k, v in point.items())
            try:
                run = wandb.init(
                    project=project, entity=entity, group=group, job_type="train",
                    name=f"{group}/{index}" + (f" {label}" if label else ""),
                    id=ids.get(str(index)), resume="allow" if resume else None,
                    config=to_jsonable(run_config), dir=str(self.run_dir), mode=mode,
                    tags=list(tags), reinit="create_new",
                    settings=wandb.Settings(silent=True, console="off", save_code=False,
                                            x_disable_stats=True),
                )
            except Exception as err:  # a bad login or mode is a user error, said in one line
                raise ConfigError(f"logger.mode={mode!r}: W&B could not start "
                                  f"({str(err).splitlines()[0]}); run `wandb login` for "
                                  "online mode or use logger.mode=offline") from None
            new_ids[str(index)] = run.id
            self._runs.append(run)
        if "summary" in ids:
            new_ids["summary"] = ids["summary"]
        ids_path.write_text(json.dumps(new_ids))

    # --------------------------------------------------------------------- logging
    def log(self, update: int, env_steps: int, metrics: Mapping[str, Any]) -> None:
        """Log one row per point. `metrics` values are scalars or arrays of length P."""
        if self._file is None:
            return
        elapsed = time.perf_counter() - self._t0
        rows = []
        for p in range(len(self.points)):
            row: dict[str, Any] = {"point": p, "update": int(update),
                                   "env_steps": int(env_steps), "time_s": round(elapsed, 3)}
            for key, value in metrics.items():
                if key in row:  # the loop's counters win over same-named agent metrics
                    continue
                arr = np.asarray(value)
                row[key] = to_jsonable(arr[p] if arr.ndim >= 1 and arr.shape[0] == len(
                    self.points) else arr)
            rows.append(row)
            self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        for run, row in zip(self._runs, rows):
            run.log({k: v for k, v in row.items() if k not in ("point", "update")
                     and isinstance(v, (int, float))}, step=int(update))
        if self.kind == "console" and self.verbose:
            shown = ", ".join(f"{k}={_short(v)}" for k, v in rows[0].items()
                              if k not in ("point", "time_s") and isinstance(v, (int, float)))
            self.print_fn(f"[{update}] {shown}" + (f" (point 0 of {len(rows)})"
                                                    if len(rows) > 1 else ""))

    def summary(self, values: Mapping[str, Any], point: int | None = None) -> None:
        """Final numbers for W&B run summaries (all points, or one)."""
        for index, run in enumerate(self._runs):
            if point is None or point == index:
                for key, value in to_jsonable(dict(values)).items():
                    run.summary[key] = value

    def group_summary(self, values: Mapping[str, Any]) -> None:
        """One more W&B run in the group (job type "summary", named GROUP/summary) holding
        `values`, e.g. the aggregate over the group's seeds, in its summary. A resumed run
        writes to the same summary run again."""
        if not self._runs:
            return
        import wandb

        spec = self._wandb_group
        run = wandb.init(
            project=spec["project"], entity=spec["entity"], group=spec["group"],
            job_type="summary", name=f"{spec['group']}/summary", id=spec["summary_id"],
            resume="allow" if spec["summary_id"] else None,
            config=to_jsonable(scrub(dict(spec["config"], run_info=dict(spec["run_info"])))),
            dir=str(self.run_dir), mode=spec["mode"], tags=spec["tags"], reinit="create_new",
            settings=wandb.Settings(silent=True, console="off", save_code=False,
                                    x_disable_stats=True),
        )
        for key, value in to_jsonable(dict(values)).items():
            run.summary[key] = value
        ids_path = self.run_dir / "wandb_run_ids.json"
        ids = json.loads(ids_path.read_text()) if ids_path.is_file() else {}
        ids_path.write_text(json.dumps(dict(ids, summary=run.id)))
        spec["summary_id"] = run.id
        run.finish()

    def log_artifact(self, path: str | Path, name: str, kind: str, point: int = 0) -> None:
        """Attach a file or directory (report, checkpoint) to point `point`'s W&B run."""
        if not self._runs:
            return
        import wandb

        path = Path(path)
        artifact = wandb.Artifact(name=re.sub(r"[^\w.-]", "-", name), type=kind)
        if path.is_dir():
            artifact.add_dir(str(path))
        else:
            artifact.add_file(str(path))
        self._runs[point].log_artifact(artifact)

    def close(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()
        for run in self._runs:
            run.finish()
        self._runs = []

    def _truncate_after(self, update: int) -> None:
        # Rows written after the checkpoint we resume from would be logged twice.
        # A torn or garbage line (a kill mid-write) is dropped and reported.
        rows, bad = _read_rows(self.metrics_path)
        if bad:
            self.print_fn(f"warning: {_skipped(self.metrics_path, bad)}")
        kept = [json.dumps(row) + "\n" for row in rows if row["update"] <= update]
        if self.metrics_path.is_file():
            self.metrics_path.write_text("".join(kept))

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _short(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}"
