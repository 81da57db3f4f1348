"""`jaxtrade backtest run_dir=RUN [checkpoint=best|latest|N] [point=P] [data.path=NEW out=DIR]`.

Rebuilds the run's market, env and agent from RUN/config.yaml, restores a checkpoint and
writes RUN/report/ (every split beside the baselines). With `data.path=NEW` it evaluates the
same policy on other bars of the same kind: features computed as at training, the
normalization and regime model fitted at training applied as they are (never refitted), splits
by the run's fractions of NEW's bars, the report written to DIR/report/ (default
RUN/backtests/<NEW's name>/), never over RUN/report. `--compare NEW OLD [--factor F]` is the
deploy gate: promote NEW only if its validation Sharpe beats OLD's by the factor and its
drawdown is not worse.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments import common
from jaxtrade.errors import ConfigError

HELP = """usage: jaxtrade backtest run_dir=RUN [checkpoint=best|latest|N] [point=P]
       jaxtrade backtest run_dir=RUN data.path=NEW.csv [out=DIR] [checkpoint=...] [point=...]
       jaxtrade backtest --compare NEW_RUN OLD_RUN [--factor 1.05]

Evaluate a trained run out of sample (train / validation / test beside baselines, with the
run's costs) and write RUN/report/ (report.html, metrics.json, positions.csv, plots).
checkpoint: best (by validation Sharpe, default), latest, or an update number.
point: which vmapped point (seed / sweep trial) to evaluate; default the best one.

data.path=NEW.csv: the run's policy on other bars of the same kind (a CSV or Parquet file
read with the run's data options). Features are computed as at training; normalization and
regimes are the ones fitted on the run's training split, never refitted on NEW; splits are
the run's fractions of NEW's bars. The training bars must still be readable and unchanged
(their fingerprint is checked against the checkpoint), since the fitted statistics are
rebuilt from them. The report goes to DIR/report/ (default RUN/backtests/<NEW's name>/);
RUN/report is never overwritten. metrics.json then names the bars under "bars".
"""

KEYS = ("run_dir", "checkpoint", "point", "data.path", "out")


def parse_keys(argv: Sequence[str]) -> dict[str, str]:
    from jaxtrade.config.validate import unknown_key

    out: dict[str, str] = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            raise ConfigError(f"argument {arg!r} is not allowed: expected key=value "
                              f"({', '.join(KEYS)})")
        if key not in KEYS:
            raise unknown_key(key, value, KEYS)
        out[key] = value
    return out


def main(argv: Sequence[str]) -> int:
    argv = list(argv)
    if common.wants_help(argv):
        print(HELP)
        return 0
    if argv and argv[0] == "--compare":
        return compare(argv[1:])
    args = parse_keys(argv)
    if "run_dir" not in args:
        raise ConfigError("run_dir is required: jaxtrade backtest run_dir=runs/x")
    if "out" in args and "data.path" not in args:
        raise ConfigError("out= is for backtests on other bars (data.path=NEW.csv); the run's "
                          "own backtest goes to RUN/report")
    backtest_run(Path(args["run_dir"]), args.get("checkpoint", "best"), args.get("point"),
                 data_path=args.get("data.path"), out=args.get("out"))
    return 0


def backtest_run(run_dir: Path, checkpoint: str = "best", point: str | None = None, *,
                 data_path: str | Path | None = None, out: str | Path | None = None) -> Path:
    """Write the run's report (RUN/report/), or with `data_path` the report of its policy on
    those bars (`out`/report/); returns the report folder."""
    from experiments.train import restore_run, write_report

    chosen = None if point is None else _int(point, "point")
    if data_path is None:
        prep, restored, points = restore_run(run_dir, checkpoint, chosen)
        print(f"backtest of {run_dir} at update {restored.step}, point {restored.point}")
        return write_report(prep, restored, points, requested=checkpoint)
    data_path = Path(data_path).expanduser()
    if not data_path.exists():
        raise ConfigError(f"data.path={str(data_path)!r} is not allowed: no such file")
    out_dir = backtest_dir(run_dir, data_path, out)
    prep, restored, points = restore_run(run_dir, checkpoint, chosen)
    fresh = on_other_bars(prep, restored.meta, data_path, out_dir)
    print(f"backtest of {run_dir} at update {restored.step}, point {restored.point} on "
          f"{data_path} ({fresh.market.num_bars} bars) -> {out_dir}")
    report_dir = write_report(fresh, restored, points, requested=checkpoint)
    _record_bars(report_dir / "metrics.json", prep, fresh, data_path)
    return report_dir


def backtest_dir(run_dir: Path, data_path: Path, out: str | Path | None) -> Path:
    """DIR for a backtest on other bars; refuses a DIR whose report/ would be RUN/report."""
    run_dir = Path(run_dir).resolve()
    out_dir = (Path(out).expanduser() if out else run_dir / "backtests" / data_path.stem).resolve()
    if out_dir == run_dir or out_dir == run_dir / "report" or run_dir / "report" in \
            out_dir.parents:
        raise ConfigError(f"out={str(out)!r} is not allowed: the report would land in or over "
                          f"{run_dir / 'report'}; choose another folder")
    return out_dir


def fitted_state(prep: Any, checkpoint_meta: dict[str, Any]) -> dict[str, Any]:
    """What the run fitted on its training split, from its rebuilt training market (as
    `jaxtrade export` takes it), after checking the training bars are the ones it saw."""
    from experiments.train import check_training_bars

    check_training_bars(prep, checkpoint_meta)
    extra = prep.market.meta.extra
    return {"normalizer": extra.get("normalizer"), "regime_model": extra.get("regime_model"),
            "bars_per_year": float(prep.market.meta.bars_per_year),
            "data_fingerprint": prep.fingerprint}


def on_other_bars(prep: Any, checkpoint_meta: dict[str, Any], data_path: Path,
                  out_dir: Path) -> Any:
    """The run's `Prepared` rebuilt on the bars of `data_path` with the training fit."""
    import agents
    from jaxtrade import market as market_lib
    from jaxtrade.config import check_eval_splits, check_window

    fitted = fitted_state(prep, checkpoint_meta)
    cfg = copy.deepcopy(prep.cfg)
    cfg["data"]["path"] = str(data_path)
    cfg["data"]["fingerprint"] = None  # other bars: the training bars were checked above
    frame = common.load_frame(cfg["data"])
    cfg["data"]["fingerprint"] = common.data_fingerprint(frame)
    num_bars = common.num_bars_per_symbol(frame)
    splits = common.make_data_splits(cfg, num_bars)
    check_eval_splits(splits, num_bars, cfg["data"])
    train_start, train_end = splits.train
    check_window(int(cfg["env"].get("window_bars", 1)), train_end - train_start)
    regimes = bool(cfg["data"].get("regimes", False))
    if regimes and fitted["regime_model"] is None:
        raise ConfigError("the run uses regimes but its training market holds no regime model")
    market = market_lib.build(
        # The features the run trained on (without the volume ones when its bars had none).
        frame, prep.market.meta.extra.get("feature_spec") or common.feature_spec(cfg), splits,
        normalization="zscore" if fitted["normalizer"] is not None else "none",
        normalizer=fitted["normalizer"],
        regime_model=fitted["regime_model"] if regimes else None,
        bars_per_year=fitted["bars_per_year"])
    if market.meta.symbols != prep.market.meta.symbols:
        raise ConfigError(f"data.path={str(data_path)!r} holds symbols "
                          f"{list(market.meta.symbols)}; the run trades "
                          f"{list(prep.market.meta.symbols)}")
    env, env_params = common.build_env(cfg, market)
    agent = agents.make_agent(prep.agent_config, env, env_params)
    return dataclasses.replace(prep, cfg=cfg, run_dir=out_dir, frame=frame,
                               fingerprint=cfg["data"]["fingerprint"], market=market,
                               env=env, env_params=env_params, agent=agent)


def _record_bars(metrics_path: Path, trained: Any, fresh: Any, data_path: Path) -> None:
    """metrics.json names the bars evaluated and the run whose fit was applied."""
    metrics = json.loads(metrics_path.read_text())
    metrics["bars"] = {
        "path": str(data_path.resolve()),
        "fingerprint": fresh.fingerprint,
        "num_bars": fresh.market.num_bars,
        "splits": fresh.market.meta.extra["splits"],
        "fitted_on": {"run_dir": str(trained.run_dir), "data_fingerprint": trained.fingerprint,
                      "splits": trained.market.meta.extra["splits"]},
    }
    metrics_path.write_text(json.dumps(metrics, indent=2, allow_nan=False))


def _int(value: str, key: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{key}={value!r} is not allowed: expected an integer") from None


def compare(argv: Sequence[str]) -> int:
    """The deploy gate (jaxtrade.evaluate.gate): exit 0 promote, 3 keep the incumbent."""
    from jaxtrade.evaluate.gate import main as gate_main

    try:
        return gate_main(list(argv))
    except SystemExit as done:  # argparse usage errors / --help
        if done.code:
            raise ConfigError("usage: jaxtrade backtest --compare NEW_RUN OLD_RUN "
                              "[--factor F]") from None
        return 0
