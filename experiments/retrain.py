"""`jaxtrade retrain`: continue training on new bars, promote the result behind a deploy gate.

    jaxtrade retrain run_dir=R bars=NEW [bundle=POINTER] [gate=ratio|psr] [steps=N]
    jaxtrade retrain --history R

One retrain, in order (RUN/retrains/NNNN/ holds everything it writes):
  1. recovery: a retrain killed earlier left a folder without decision.json (removed) or a
     decision not yet in the history (added, promoted only if the pointer names its bundle);
  2. the incumbent: the bundle the pointer names (the first retrain exports R's latest
     checkpoint to retrains/0000/bundle and points at it); its run is the one to continue;
  3. the bars: the incumbent run's bars, then NEW's closed bars after their last one (a file,
     a folder of files, or the runner's SQLite store); a bar stamped t is closed at t + the bar
     interval, and a bar not closed at `now` is never read;
  4. the candidate: the incumbent run's latest checkpoint continued for `steps` more env steps
     on those bars (features, normalization and regimes fitted again on the new training
     split; the validation and test splits roll forward with the run's fractions), exported;
  5. the gate: candidate and incumbent bundles run by the numpy runner on the same newest
     validation window; `ratio` or `psr` (jaxtrade/deploy.py) decides;
  6. decision.json is written (and put in the candidate's report/metrics.json), the pointer
     swapped in one rename when the gate passed, and the record appended to
     RUN/retrains/history.jsonl (history.txt: the same as a table).

The incumbent bundle is never written to: a failure or a kill at any step leaves the pointer
naming a complete bundle, and the next retrain starts cleanly.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import fcntl
import json
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experiments import common
from jaxtrade import deploy
from jaxtrade.errors import ConfigError, DataError

HELP = """usage: jaxtrade retrain run_dir=R bars=NEW [bundle=POINTER] [gate=ratio|psr] [steps=N]
                        [factor=1.05] [psr_threshold=0.95] [now=ISO_TIME]
       jaxtrade retrain --history R

Continue training run R on its bars plus NEW's (a CSV/Parquet file, a folder of them, or the
live runner's SQLite store), evaluate the candidate and the deployed bundle on the same newest
validation window with the numpy runner, and promote the candidate only if the gate passes.

  bundle=POINTER  the deployed bundle: a symbolic link (or a file naming a bundle folder),
                  default R/deployed; the first retrain creates it, pointing at R's latest
                  checkpoint exported to R/retrains/0000/bundle. Run the live runner with
                  --bundle-pointer POINTER to follow promotions.
  gate=ratio      promote if validation Sharpe > 1.05 x the incumbent's (factor=) and max
                  drawdown not deeper (the rule of `jaxtrade backtest --compare`)
  gate=psr        promote if the Probabilistic Sharpe Ratio that the candidate's Sharpe beats
                  the incumbent's, with the retrains so far as trials, is >= psr_threshold
  steps=N         env steps of further training (default: R's train.total_steps)
  now=ISO_TIME    the clock for "closed" bars (default: this machine's UTC time)

Every retrain writes R/retrains/NNNN/decision.json (both scores, the gate and its inputs, the
bundle paths, the data range, timings), puts it in the candidate's report/metrics.json under
"retrain", and appends it to R/retrains/history.jsonl, which `jaxtrade retrain --history R`
prints (and R/retrains/history.txt holds as a table).
Exit codes: 0 promoted, 3 incumbent kept, 2 bad arguments or data, 1 internal error.

nightly, with cron (22:30 UTC, after the daily close):
  30 22 * * *  cd /srv/trading && jaxtrade retrain run_dir=runs/prod bars=live/replay.sqlite \\
                 >> runs/prod/retrains/cron.log 2>&1
"""

KEYS = ("run_dir", "bars", "bundle", "gate", "steps", "factor", "psr_threshold", "now")
EXIT_KEPT = 3
# Called with the name of each step as it completes (tests raise or kill there).
STAGE_HOOK: Callable[[str], None] | None = None


def _stage(name: str) -> None:
    if STAGE_HOOK is not None:
        STAGE_HOOK(name)


def main(argv: Sequence[str]) -> int:
    argv = list(argv)
    if common.wants_help(argv):
        print(HELP)
        return 0
    if argv and argv[0] == "--history":
        if len(argv) != 2:
            raise ConfigError("usage: jaxtrade retrain --history RUN_DIR")
        print_history(Path(argv[1]))
        return 0
    args = _parse(argv)
    for key in ("run_dir", "bars"):
        if key not in args:
            raise ConfigError(f"{key} is required: jaxtrade retrain run_dir=R bars=NEW")
    gate = args.get("gate", "ratio")
    if gate not in deploy.GATES:
        raise ConfigError(f"gate={gate!r} is not allowed: choose {' or '.join(deploy.GATES)}")
    from jaxtrade.live.errors import BundleError

    try:
        record = _run(args, gate)
    except BundleError as err:  # a pointer or bundle that cannot be used: one line
        raise ConfigError(str(err)) from None
    return 0 if record["decision"] == "promoted" else EXIT_KEPT


def _run(args: Mapping[str, str], gate: str) -> dict[str, Any]:
    return retrain(
        Path(args["run_dir"]),
        Path(args["bars"]),
        pointer=Path(args["bundle"]) if "bundle" in args else None,
        gate=gate,
        steps=_number(args, "steps", int),
        factor=_number(args, "factor", float) or 1.05,
        psr_threshold=_number(args, "psr_threshold", float) or 0.95,
        now=_parse_time(args["now"]) if "now" in args else None,
    )


def _parse(argv: Sequence[str]) -> dict[str, str]:
    from jaxtrade.config.validate import unknown_key

    out: dict[str, str] = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            raise ConfigError(
                f"argument {arg!r} is not allowed: expected key=value ({', '.join(KEYS)})"
            )
        if key not in KEYS:
            raise unknown_key(key, value, KEYS)
        out[key] = value
    return out


def _number(args: Mapping[str, str], key: str, kind: type) -> Any:
    if key not in args:
        return None
    try:
        value = kind(float(args[key])) if kind is int else kind(args[key])
    except ValueError:
        raise ConfigError(f"{key}={args[key]!r} is not allowed: expected a number") from None
    if value <= 0:
        raise ConfigError(f"{key}={args[key]!r} is not allowed: it must be positive")
    return value


def _parse_time(text: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"now={text!r} is not allowed: expected an ISO time") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def print_history(run_dir: Path) -> None:
    retrains = Path(run_dir) / "retrains"
    records = deploy.read_history(retrains, warn=lambda m: print(f"warning: {m}"))
    if not records:
        print(f"no retrains of {run_dir} yet ({retrains / deploy.HISTORY} is empty or missing)")
        return
    print(deploy.format_history(records))
    promoted = sum(r.get("decision") == "promoted" for r in records if r.get("number", 0) > 0)
    print(
        f"{len(records)} record(s), {promoted} promotion(s); deployed now: "
        f"{_deployed_text(run_dir, records)}"
    )


def _deployed_text(run_dir: Path, records: Sequence[Mapping[str, Any]]) -> str:
    from jaxtrade.live.pointer import read_pointer

    pointer = Path(records[-1].get("pointer") or Path(run_dir) / "deployed")
    try:
        return str(read_pointer(pointer))
    except Exception as err:  # noqa: BLE001 - the history prints whatever the pointer is
        return f"unknown ({err})"


# ------------------------------------------------------------------------------ the retrain


@contextlib.contextmanager
def _lock(retrains: Path) -> Iterator[None]:
    """One retrain of a run at a time (the lock goes with the process, kills included)."""
    retrains.mkdir(parents=True, exist_ok=True)
    with (retrains / ".lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"another retrain of {retrains.parent} is running (it holds {retrains / '.lock'})"
            ) from None
        yield


def _numbered(retrains: Path) -> list[Path]:
    return sorted(
        (p for p in retrains.iterdir() if p.is_dir() and p.name.isdigit()),
        key=lambda p: int(p.name),
    )


def recover(retrains: Path, pointer: Path, print_fn: Callable[[str], None] = print) -> None:
    """Leave RUN/retrains as a finished retrain would (see the module doc)."""
    from jaxtrade.live.pointer import clean_pointer_temps, read_pointer

    clean_pointer_temps(pointer)
    recorded = {r.get("number") for r in deploy.read_history(retrains)}
    deployed = None
    if pointer.is_symlink() or pointer.exists():
        deployed = read_pointer(pointer)
    for work in _numbered(retrains):
        decision = work / deploy.DECISION
        if not decision.is_file():
            if deployed is not None and deployed.parent == work.resolve():
                continue  # impossible by the order of the steps; never delete what is live
            print_fn(f"removing {work}: an interrupted retrain (no {deploy.DECISION})")
            shutil.rmtree(work)
            continue
        if int(work.name) in recorded:
            continue
        record = json.loads(decision.read_text())
        live = deployed is not None and deployed == (work / "bundle").resolve()
        if record.get("decision") == "promoted" and not live:
            record["decision"] = "kept"
            record["reason"] = "interrupted before the pointer swap; " + record.get("reason", "")
        record["recovered"] = True
        deploy.append_history(retrains, record)
        print_fn(
            f"recorded retrain {work.name} ({record['decision']}), interrupted before "
            "its history line"
        )


def retrain(
    run_dir: Path,
    bars: Path,
    *,
    pointer: Path | None = None,
    gate: str = "ratio",
    steps: int | None = None,
    factor: float = 1.05,
    psr_threshold: float = 0.95,
    now: dt.datetime | None = None,
    print_fn: Callable[[str], None] = print,
) -> dict[str, Any]:
    """One retrain of `run_dir` on `bars`; returns its decision record."""
    from jaxtrade.live.bundle import load_bundle
    from jaxtrade.live.pointer import read_pointer, swap_pointer

    run_dir = Path(run_dir).expanduser().resolve()
    common.read_run_config(run_dir)  # a clear error for a folder that is not a run
    bars = Path(bars).expanduser()
    if not bars.exists():
        raise ConfigError(f"bars={str(bars)!r} is not allowed: no such file or folder")
    retrains = run_dir / "retrains"
    pointer = (Path(pointer).expanduser() if pointer else run_dir / "deployed").absolute()
    now = now or dt.datetime.now(dt.timezone.utc)
    with _lock(retrains):
        recover(retrains, pointer, print_fn)
        _stage("recovered")
        if not (pointer.is_symlink() or pointer.exists()):
            deploy_initial(run_dir, retrains, pointer, print_fn)
        started = time.perf_counter()
        timings: dict[str, float] = {}

        def lap(name: str, since: float) -> float:
            timings[name] = round(time.perf_counter() - since, 3)
            _stage(name)
            return time.perf_counter()

        incumbent_bundle = read_pointer(pointer)
        incumbent = load_bundle(incumbent_bundle)  # sha256-checked
        incumbent_run = Path((incumbent.manifest.get("source") or {}).get("run_dir") or run_dir)
        if not (incumbent_run / "config.yaml").is_file():
            raise ConfigError(
                f"the deployed bundle {incumbent_bundle} comes from "
                f"{incumbent_run}, which holds no run to continue"
            )
        numbers = [int(p.name) for p in _numbered(retrains)]
        number = max(numbers, default=0) + 1
        work = retrains / f"{number:04d}"
        work.mkdir()
        print_fn(
            f"retrain {number} of {run_dir}: incumbent {incumbent_bundle} (from "
            f"{incumbent_run}), new bars from {bars}"
        )
        t = time.perf_counter()

        saved = common.read_run_config(incumbent_run)
        history = common.load_frame(saved["data"])  # checked against the run's fingerprint
        fresh = read_new_bars(bars, common.read_run_config(run_dir)["data"])
        merged, data = merge_bars(history, fresh, now)
        data["new_source"] = str(bars)
        t = lap("bars", t)
        base = {
            "number": number,
            "run_dir": str(run_dir),
            "pointer": str(pointer),
            "gate": gate,
            "data": data,
            "incumbent": {"bundle": str(incumbent_bundle), "run_dir": str(incumbent_run)},
        }
        if data["new_bars_used"] == 0:
            record = dict(
                base,
                decision="kept",
                reason="no new closed bars after the "
                f"incumbent's last bar {data['history_last_bar']}",
            )
            return _finish(retrains, work, record, started, timings, print_fn)

        bars_path = work / "bars.parquet"
        merged.write_parquet(bars_path)
        cfg = candidate_config(
            saved,
            incumbent_run,
            work,
            bars_path,
            steps or int(common.read_run_config(run_dir)["train"]["total_steps"]),
        )
        t = lap("prepared", t)
        train_candidate(cfg, print_fn)
        t = lap("trained", t)
        from experiments.export import export

        candidate_bundle = export(
            work / "run", work / "bundle", checkpoint="latest", bars=incumbent.manifest.get("bars")
        )
        t = lap("exported", t)
        splits = common.make_data_splits(cfg, merged.height)
        start, end = splits.validation
        if end - start < 3:
            raise DataError(
                "the validation split of the bars has fewer than 3 bars: lower "
                "data.train_frac or bring more bars",
                path=str(bars),
            )
        stamps = _stamps_us(merged)
        window = {
            "first_bar": _iso(stamps[start]),
            "last_bar": _iso(stamps[end - 1]),
            "num_bars": end - start,
        }
        bars_per_year = float(incumbent.manifest.get("bars_per_year", 252.0))
        cand_returns = bundle_returns(candidate_bundle, merged, start, end)
        inc_returns = bundle_returns(incumbent_bundle, merged, start, end)
        size = min(cand_returns.size, inc_returns.size)
        cand_returns, inc_returns = cand_returns[-size:], inc_returns[-size:]
        cand_scores = deploy.scores(cand_returns, bars_per_year)
        inc_scores = deploy.scores(inc_returns, bars_per_year)
        if gate == "ratio":
            result = deploy.ratio_gate(cand_scores, inc_scores, factor)
        else:
            result = deploy.psr_gate(
                cand_returns, inc_returns, trials=number, threshold=psr_threshold
            )
        t = lap("evaluated", t)
        base["data"]["validation"] = window
        base["incumbent"]["scores"] = inc_scores
        base["candidate"] = {
            "bundle": str(candidate_bundle),
            "run_dir": str(work / "run"),
            "scores": cand_scores,
        }
        record = dict(
            base,
            decision="promoted" if result.passed else "kept",
            reason=result.reason,
            gate_inputs=result.inputs,
        )
        record = _finish(
            retrains,
            work,
            record,
            started,
            timings,
            print_fn,
            promote=(lambda: swap_pointer(pointer, candidate_bundle)) if result.passed else None,
        )
        return record


def _finish(
    retrains: Path,
    work: Path,
    record: dict[str, Any],
    started: float,
    timings: dict[str, float],
    print_fn: Callable[[str], None],
    promote: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """decision.json, then the pointer swap (when promoting), then the history line."""
    timings["total"] = round(time.perf_counter() - started, 3)
    record = deploy.clean_number(
        dict(
            record,
            timings_s=timings,
            finished_utc=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
    )
    report = work / "run" / "report" / "metrics.json"
    if report.is_file():  # the candidate's report names the decision made on it
        metrics = json.loads(report.read_text())
        metrics["retrain"] = record
        deploy.write_json_atomic(report, metrics)
    deploy.write_json_atomic(work / deploy.DECISION, record)
    _stage("decided")
    if promote is not None:
        promote()
        _stage("promoted")
    deploy.append_history(retrains, record)
    _stage("recorded")
    (retrains / "history.txt").write_text(
        deploy.format_history(deploy.read_history(retrains)) + "\n", encoding="utf-8"
    )
    deploy.update_report_history(retrains.parent)  # RUN/report/report.html shows it too
    print_fn(f"{record['decision'].upper()}: {record['reason']}")
    print_fn(f"decision: {work / deploy.DECISION}")
    return record


def deploy_initial(
    run_dir: Path, retrains: Path, pointer: Path, print_fn: Callable[[str], None]
) -> Path:
    """Export R's latest checkpoint to retrains/0000/bundle and point `pointer` at it."""
    from experiments.export import export
    from jaxtrade.live.pointer import swap_pointer

    work = retrains / "0000"
    work.mkdir(parents=True)
    print_fn(
        f"no deployed bundle at {pointer}: exporting {run_dir}'s latest checkpoint as the incumbent"
    )
    started = time.perf_counter()
    bundle = export(run_dir, work / "bundle", checkpoint="latest")
    _stage("initial_exported")
    record = {
        "number": 0,
        "run_dir": str(run_dir),
        "pointer": str(pointer),
        "gate": None,
        "candidate": {"bundle": str(bundle), "run_dir": str(run_dir)},
        "decision": "promoted",
        "reason": "initial deployment of the run's latest checkpoint",
    }
    _finish(
        retrains, work, record, started, {}, print_fn, promote=lambda: swap_pointer(pointer, bundle)
    )
    return bundle


# ------------------------------------------------------------------------------ bars


def read_new_bars(source: Path, data_cfg: Mapping[str, Any]) -> Any:
    """New bars as a canonical frame: the runner's SQLite store, a CSV/Parquet file read like
    the run's own files (its column mapping and options), or a folder of such files."""
    import polars as pl

    if source.is_dir():
        files = sorted(
            p
            for p in source.iterdir()
            if p.suffix.lower() in (".csv", ".parquet", ".sqlite", ".db")
        )
        if not files:
            raise DataError("the folder holds no .csv, .parquet or SQLite store", path=str(source))
        frames = [read_new_bars(f, data_cfg) for f in files]
        return pl.concat(frames).unique("timestamp", keep="first").sort("timestamp")
    if _is_sqlite(source):
        return _store_bars(source)
    kind = "parquet" if source.suffix.lower() == ".parquet" else "csv"
    own_files = data_cfg.get("source") in ("csv", "parquet")
    section = {
        "source": kind,
        "path": str(source),
        "fingerprint": None,
        "columns": data_cfg.get("columns") if own_files else None,
        "options": dict(data_cfg.get("options") or {}) if own_files else {},
        "adjust": bool(data_cfg.get("adjust")) if own_files else False,
    }
    return _canonical(common.load_frame(section))


def _is_sqlite(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(16) == b"SQLite format 3\x00"


def _store_bars(path: Path) -> Any:
    """The bars table of the live runner's replay store (read-only)."""
    import sqlite3

    import polars as pl

    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = db.execute(
                "SELECT timestamp_us, open, high, low, close, volume FROM bars "
                "ORDER BY timestamp_us"
            ).fetchall()
        finally:
            db.close()
    except sqlite3.Error as err:
        raise DataError(f"not a readable replay store ({err})", path=str(path)) from None
    columns = list(zip(*rows, strict=True)) if rows else [[]] * 6
    frame = pl.DataFrame(
        {
            "timestamp": pl.Series(columns[0], dtype=pl.Int64),
            **{
                name: pl.Series(values, dtype=pl.Float64)
                for name, values in zip(
                    ("open", "high", "low", "close", "volume"), columns[1:], strict=True
                )
            },
        }
    )
    return frame.with_columns(pl.col("timestamp").cast(pl.Datetime("us", "UTC")))


def _canonical(frame: Any) -> Any:
    if "symbol" in frame.columns:
        if frame["symbol"].n_unique() > 1:
            raise DataError(
                "retrain trades one symbol; the bars hold several "
                f"({', '.join(map(str, frame['symbol'].unique().to_list()[:5]))})"
            )
        frame = frame.drop("symbol")
    return frame.select("timestamp", "open", "high", "low", "close", "volume")


def _stamps_us(frame: Any) -> np.ndarray:
    import polars as pl

    return frame.select(pl.col("timestamp").dt.epoch("us")).to_series().to_numpy()


def _iso(stamp_us: int) -> str:
    return dt.datetime.fromtimestamp(int(stamp_us) / 1e6, dt.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def merge_bars(history: Any, fresh: Any, now: dt.datetime) -> tuple[Any, dict[str, Any]]:
    """History then the closed new bars after its last one; what was used and left out.

    A new bar stamped at or before the history's last bar is left out (the run trained on
    the history as it was; a differing value is counted as a conflict); a bar whose close
    (its stamp + the bar interval) is after `now` is not read."""
    import polars as pl

    history = _canonical(history)
    fresh = _canonical(fresh).sort("timestamp")
    stamps = _stamps_us(history)
    interval_us = int(np.median(np.diff(stamps))) if stamps.size > 1 else 0
    last = int(stamps[-1])
    now_us = int(now.timestamp() * 1e6)
    new_stamps = _stamps_us(fresh)
    later = new_stamps > last
    closed = new_stamps + interval_us <= now_us
    overlap = fresh.filter(~pl.Series(later)).join(
        history, on="timestamp", how="inner", suffix="_old"
    )
    conflicts = 0
    if overlap.height:
        conflicts = int(
            overlap.filter(
                pl.any_horizontal(
                    (pl.col(c) - pl.col(f"{c}_old")).abs()
                    > 1e-9 * pl.col(f"{c}_old").abs().clip(1.0)
                    for c in ("open", "high", "low", "close")
                )
            ).height
        )
    used = fresh.filter(pl.Series(later & closed))
    merged = pl.concat([history, used.cast(history.schema)])
    info = {
        "history_bars": history.height,
        "history_first_bar": _iso(stamps[0]),
        "history_last_bar": _iso(last),
        "new_bars_read": fresh.height,
        "new_bars_used": used.height,
        "new_bars_not_closed": int((later & ~closed).sum()),
        "new_bars_before_history_end": int((~later).sum()),
        "conflicting_bars": conflicts,
        "bar_interval_seconds": interval_us / 1e6,
        "now_utc": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "bars": merged.height,
        "last_bar": _iso(_stamps_us(merged)[-1]),
    }
    return merged, info


# ------------------------------------------------------------------------------ candidate


def candidate_config(
    saved: Mapping[str, Any], incumbent_run: Path, work: Path, bars_path: Path, steps: int
) -> dict[str, Any]:
    """The incumbent run's config on the merged bars, resuming its latest checkpoint (copied
    into work/run/checkpoints) for `steps` more env steps."""
    from jaxtrade.checkpoint import CheckpointManager, saved_steps

    if (saved.get("data") or {}).get("splits"):
        # Fixed ranges would leave the new bars out of every split.
        raise ConfigError(f"{incumbent_run} trains on fixed bar ranges (data.splits, e.g. a "
                          "walk-forward fold); retrain continues runs whose splits roll "
                          "forward with data.train_frac / data.validation_frac")
    source = incumbent_run / "checkpoints"
    done = saved_steps(source)
    if not done:
        raise ConfigError(f"{incumbent_run} has no complete checkpoint to continue")
    latest = done[-1]
    with CheckpointManager(source, read_only=True) as manager:
        env_steps = int(manager.read_metadata(latest).get("env_steps") or 0)
    run = work / "run"
    shutil.copytree(source / str(latest), run / "checkpoints" / str(latest))
    cfg = copy.deepcopy(dict(saved))
    frame = common.load_frame({"source": "parquet", "path": str(bars_path)})
    cfg["data"] = dict(
        cfg["data"],
        source="parquet",
        path=str(bars_path),
        columns=None,
        options={},
        adjust=False,
        fingerprint=common.data_fingerprint(frame),
    )
    cfg["train"] = dict(cfg["train"], total_steps=env_steps + int(steps), stop_after_updates=None)
    cfg["run_dir"], cfg["resume"] = str(run), True
    cfg = common.compose_run_from_saved(cfg)
    common.write_config(run, cfg)
    return cfg


def train_candidate(cfg: dict[str, Any], print_fn: Callable[[str], None]) -> None:
    from experiments.train import train
    from jaxtrade.checkpoint import saved_steps

    checkpoints = Path(cfg["run_dir"]) / "checkpoints"
    resumed = saved_steps(checkpoints)[-1]
    summary = train(cfg, print_fn=print_fn, set_by_user=())
    if not summary.loop.finished:
        raise ConfigError("the candidate's training stopped early")
    if saved_steps(checkpoints)[-1] <= resumed:
        raise ConfigError(
            f"the candidate trained no update past the resumed update {resumed}: steps= is "
            "less than one chunk of updates (agent.updates_per_chunk); give more steps"
        )


# ------------------------------------------------------------------------------ evaluation


def bundle_returns(bundle: Path, frame: Any, start: int, end: int) -> np.ndarray:
    """Per-bar simple returns of `bundle` traded by the numpy runner on rows [start, end) of
    `frame` (bars before `start` warm up its features; nothing after `end` is read)."""
    from jaxtrade.live.bars import Bar
    from jaxtrade.live.bundle import load_bundle
    from jaxtrade.live.engine import Runner

    runner = Runner(load_bundle(bundle), max_ahead_seconds=0, max_jump_seconds=0)
    stamps = _stamps_us(frame)
    prices = frame.select("open", "high", "low", "close", "volume").to_numpy()
    runner.start_us = int(stamps[start])
    for stamp, row in zip(stamps[:end], prices[:end], strict=True):
        runner.process(Bar(int(stamp), *map(float, row)), emit=False)
    equity = np.asarray(runner.equity_curve, dtype=np.float64)
    if equity.size < 2:
        return np.zeros(0)
    return np.nan_to_num(equity[1:] / np.where(equity[:-1] != 0, equity[:-1], np.nan) - 1.0)
