"""Deploy gate for continuous learning: promote a new run only if it beats the incumbent.

Reads `run_dir/report/metrics.json` of both runs (the shape in DESIGN.md "Run directory")
and compares their VALIDATION metrics (the test split stays untouched for the final word):

  promote  iff  sharpe_new > sharpe_old + (factor - 1) * |sharpe_old|
           and  max_drawdown_new >= max_drawdown_old   (drawdowns are <= 0: not deeper)

For a positive incumbent Sharpe the first rule is sharpe_new > factor * sharpe_old; the
|.| form keeps "better by a margin" meaningful when the incumbent's Sharpe is negative.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

from jaxtrade.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "report" / "metrics.json"
    if not path.is_file():
        raise ConfigError(f"no report metrics at {path} (run the backtest for that run first)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path} is not valid JSON: {err}") from None


def _number(metrics: dict[str, Any], split: str, key: str, run_dir: str | Path) -> float:
    try:
        value = metrics[split][key]
    except (KeyError, TypeError):
        raise ConfigError(f"{run_dir}: metrics.json has no {split}.{key}") from None
    return math.nan if value is None else float(value)


def compare_runs(
    new_run_dir: str | Path,
    old_run_dir: str | Path,
    factor: float = 1.05,
    split: str = "validation",
) -> Decision:
    """Decide whether the run in `new_run_dir` replaces the one in `old_run_dir`."""
    if factor < 1.0:
        raise ConfigError(f"factor must be >= 1.0, got {factor}")
    new, old = read_metrics(new_run_dir), read_metrics(old_run_dir)
    new_sharpe = _number(new, split, "sharpe", new_run_dir)
    old_sharpe = _number(old, split, "sharpe", old_run_dir)
    new_dd = _number(new, split, "max_drawdown", new_run_dir)
    old_dd = _number(old, split, "max_drawdown", old_run_dir)
    if not math.isfinite(new_sharpe):
        return Decision(False, f"new {split} Sharpe is {new_sharpe}; keeping the incumbent")
    if not math.isfinite(old_sharpe):
        return Decision(True, f"incumbent {split} Sharpe is {old_sharpe}; promoting the new run")
    needed = old_sharpe + (factor - 1.0) * abs(old_sharpe)
    sharpe_ok = new_sharpe > needed
    dd_ok = not (new_dd < old_dd)  # NaN drawdowns never block
    facts = (
        f"{split} Sharpe {new_sharpe:.3f} vs incumbent {old_sharpe:.3f} (needs > {needed:.3f}"
        f" at factor {factor:g}); max drawdown {new_dd:.2%} vs {old_dd:.2%}"
    )
    if sharpe_ok and dd_ok:
        return Decision(True, f"promote: {facts}")
    why = []
    if not sharpe_ok:
        why.append("Sharpe not better by the factor")
    if not dd_ok:
        why.append("drawdown is worse")
    return Decision(False, f"keep incumbent ({' and '.join(why)}): {facts}")


def main(argv: list[str] | None = None) -> int:
    """`--compare NEW OLD [--factor F]`: print the decision; exit 0 promote, 3 keep."""
    parser = argparse.ArgumentParser(
        prog="jaxtrade backtest --compare",
        description="Promote NEW over OLD only if its validation Sharpe beats OLD's by a "
        "factor and its max drawdown is not worse.",
    )
    parser.add_argument("new_run_dir")
    parser.add_argument("old_run_dir")
    parser.add_argument("--factor", type=float, default=1.05)
    args = parser.parse_args(argv)
    try:
        decision = compare_runs(args.new_run_dir, args.old_run_dir, factor=args.factor)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(("PROMOTE " if decision.promote else "KEEP ") + decision.reason)
    return 0 if decision.promote else 3
