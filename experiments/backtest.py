"""`jaxtrade backtest run_dir=RUN [checkpoint=best|latest|N] [point=P]`.

Rebuilds the run's market, env and agent from RUN/config.yaml, restores a checkpoint and
writes RUN/report/ (every split beside the baselines). `--compare NEW OLD [--factor F]` is
the deploy gate: promote NEW only if its validation Sharpe beats OLD's by the factor and its
drawdown is not worse.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
    import jax

    from experiments.loop import init_points
    from experiments.train import point_list, prepare, write_report
    from jaxtrade.checkpoint import CheckpointManager

    cfg = common.read_run_config(run_dir)
    cfg["run_dir"] = str(run_dir)
    cfg = common.compose_run_from_saved(cfg)
    prep = prepare(cfg, "backtest")
    manager = CheckpointManager(run_dir / "checkpoints", read_only=True)
    step: Any = checkpoint if checkpoint in ("best", "latest") else _int(checkpoint, "checkpoint")
    if step == "best" and manager.best_step() is None:
        step = "latest"
    points = cfg["sweep"].get("points") or []
    all_points = point_list(cfg, points)
    keys = jax.numpy.stack([jax.random.key(p["seed"]) for p in all_points])
    hparams = None
    if points:
        from agents import stack_hparams

        hparams = stack_hparams([
            common.replace_hparams(prep.agent_config.hparams, {
                k.rsplit(".", 1)[-1]: v for k, v in p.items() if k != "seed"})
            for p in all_points])
    like = init_points(prep.agent, keys, hparams, prep.env_params)
    state, meta = manager.restore(like, step)
    manager.close()
    if point is None:
        sharpe = (meta.get("validation") or {}).get("validation_sharpe") or [0.0]
        chosen = max(range(len(sharpe)), key=lambda i: float(sharpe[i]) if sharpe[i]
                     is not None else float("-inf"))
    else:
        chosen = _int(point, "point")
        if not 0 <= chosen < len(all_points):
            raise ConfigError(f"point={chosen} is not allowed: the run has points "
                              f"0..{len(all_points) - 1}")
    print(f"backtest of {run_dir} at update {meta['update']}, point {chosen}")
    return write_report(prep, state, chosen, all_points)


def _int(value: str, key: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{key}={value!r} is not allowed: expected an integer") from None


def compare(argv: Sequence[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="jaxtrade backtest --compare")
    parser.add_argument("new_run")
    parser.add_argument("old_run")
    parser.add_argument("--factor", type=float, default=1.05)
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as done:
        if done.code:
            raise ConfigError("usage: jaxtrade backtest --compare NEW_RUN OLD_RUN "
                              "[--factor F]") from None
        return 0
    try:
        from jaxtrade.evaluate.gate import compare_runs
    except ImportError:
        raise ConfigError("the deploy gate (jaxtrade.evaluate.gate) is not available in "
                          "this build") from None
    decision = compare_runs(args.new_run, args.old_run, args.factor)
    print(decision)
    return 0
