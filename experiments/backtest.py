"""`jaxtrade backtest run_dir=RUN [checkpoint=best|latest|N] [point=P]`.

Rebuilds the run's market, env and agent from RUN/config.yaml, restores a checkpoint and
writes RUN/report/ (every split beside the baselines). `--compare NEW OLD [--factor F]` is
the deploy gate: promote NEW only if its validation Sharpe beats OLD's by the factor and its
drawdown is not worse.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from experiments import common
from jaxtrade.errors import ConfigError

HELP = """usage: jaxtrade backtest run_dir=RUN [checkpoint=best|latest|N] [point=P]
       jaxtrade backtest --compare NEW_RUN OLD_RUN [--factor 1.05]

Evaluate a trained run out of sample (train / validation / test beside baselines, with the
run's costs) and write RUN/report/ (report.html, metrics.json, positions.csv, plots).
checkpoint: best (by validation Sharpe, default), latest, or an update number.
point: which vmapped point (seed / sweep trial) to evaluate; default the best one.
"""

KEYS = ("run_dir", "checkpoint", "point")


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
    backtest_run(Path(args["run_dir"]), args.get("checkpoint", "best"), args.get("point"))
    return 0


def backtest_run(run_dir: Path, checkpoint: str = "best", point: str | None = None) -> Path:
    from experiments.train import restore_run, write_report

    chosen = None if point is None else _int(point, "point")
    prep, restored, points = restore_run(run_dir, checkpoint, chosen)
    print(f"backtest of {run_dir} at update {restored.step}, point {restored.point}")
    return write_report(prep, restored, points, requested=checkpoint)


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
