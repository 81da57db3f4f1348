"""The ensemble on the planted two-regime market, one CLI run per training seed.

Runs `jaxtrade train agent=ensemble` with tests/test_ensemble_planted.py's settings
(tests/planted_regimes.py: PLANTED_MARKET, ENSEMBLE_RUN) for each seed and prints one table row
per seed: test-split Sharpe after costs of every rule and every member, the trade-probability
ECE, and per true regime each member's test-split gross paper return per bar (its target
position at t times the return of t -> t+1, from positions.csv), so it shows which member took
which regime. Each member observes one feature only (`agent.<member>.network.observe`), so
its regime is fixed by construction. The last line counts the seeds on which the router and
the vote beat winner-takes-all and every member.

    python scripts/planted_ensemble.py --seeds 0 1 2 3 4 5 6 7
    python scripts/planted_ensemble.py --seeds 3 --market volatile_vol=0.02 \
        --set train.total_steps=32768 --json runs.jsonl --keep /tmp/planted

`--market key=value` changes a `planted_frame` argument, `--set key=value` replaces (or adds)
a CLI override of the run. `--json FILE` appends one JSON line per seed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from planted_regimes import ENSEMBLE_RUN, PLANTED_MARKET, planted_frame  # noqa: E402

from jaxtrade.cli import main  # noqa: E402

RULES = ("router", "vote", "winner", "equal")


def with_overrides(run: list[str], overrides: list[str]) -> list[str]:
    """`run` with each `key=value` of `overrides` replacing the item of the same key."""
    out = list(run)
    for item in overrides:
        key = item.split("=", 1)[0]
        keys = [r.split("=", 1)[0] for r in out]
        if key in keys:
            out[keys.index(key)] = item
        else:
            out.append(item)
    return out


def per_regime(run_dir: Path, regime: np.ndarray, market: pl.DataFrame,
               members: list[str]) -> dict[str, list[float]]:
    """{member: [gross paper return per bar (bp) in regime 0, in regime 1]} on the test split."""
    frame = pl.read_csv(run_dir / "report" / "positions.csv", try_parse_dates=True)
    test = frame.filter(pl.col("split") == "test")
    times = market["timestamp"].dt.replace_time_zone(None).to_numpy()
    stamps = test["timestamp"].dt.replace_time_zone(None).to_numpy().astype(times.dtype)
    rows = np.searchsorted(times, stamps)
    assert (times[rows] == stamps).all()
    close = market["close"].to_numpy()[rows]
    earned = close[1:] / close[:-1] - 1.0
    true = regime[rows[1:]]  # the regime of the bar that earns the return
    out = {}
    for name in members:
        pos = test[f"position_{name}"].to_numpy()[:-1]
        out[name] = [float(1e4 * np.mean(pos[true == r] * earned[true == r])) for r in (0, 1)]
    return out


def run_seed(seed: int, market: dict[str, Any], overrides: list[str],
             keep: Path | None = None) -> dict[str, Any]:
    frame, regime = planted_frame(**market)
    with contextlib.ExitStack() as stack:
        folder = str(keep) if keep else stack.enter_context(tempfile.TemporaryDirectory())
        Path(folder).mkdir(parents=True, exist_ok=True)
        csv = Path(folder) / "bars.csv"
        frame.write_csv(csv)
        run = with_overrides([*ENSEMBLE_RUN, f"seed={seed}"], overrides)
        start = time.perf_counter()
        cpu = time.process_time()
        with contextlib.redirect_stdout(io.StringIO()):
            assert main([*run, f"data.path={csv}", f"run_dir={Path(folder) / 'run'}"]) == 0
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        section = json.loads((Path(folder) / "run" / "report" / "metrics.json").read_text())[
            "ensemble"]
        members = list(section["members"])
        regimes = per_regime(Path(folder) / "run", regime, frame, members)
    test = lambda by_split: by_split["test"]["sharpe"]
    return {"seed": seed, "market": market, "overrides": overrides,
            "rules": {r: test(section["rules"][r]) for r in RULES},
            "members": {m: test(section["members"][m]) for m in members},
            "total_return": {**{r: section["rules"][r]["test"]["total_return"] for r in RULES},
                             **{m: section["members"][m]["test"]["total_return"]
                                for m in members}},
            "winner": section["winner"], "router_table": section["router_table"],
            "ece_test": section["ece_test"], "per_regime_bp": regimes,
            "wall_s": wall, "cpu_s": cpu}


def fmt(x: float | None) -> str:
    return "flat" if x is None else f"{x:.2f}"


def main_cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--market", nargs="*", default=[], help="planted_frame key=value")
    parser.add_argument("--set", nargs="*", default=[], dest="overrides",
                        help="CLI key=value replacing the run's")
    parser.add_argument("--json", type=Path, default=None, help="append JSON lines here")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep each seed's run in KEEP/seed<S> (default: a temporary folder)")
    args = parser.parse_args()
    market = dict(PLANTED_MARKET)
    for item in args.market:
        key, value = item.split("=", 1)
        market[key] = type(market.get(key, 0.0))(value) if key in market else float(value)
    held = {"router": 0, "vote": 0}
    for seed in args.seeds:
        row = run_seed(seed, market, args.overrides,
                       args.keep / f"seed{seed}" if args.keep else None)
        if args.json is not None:
            with args.json.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")
        members = row["members"]
        best = max((v for v in members.values() if v is not None), default=-np.inf)
        beats = {r: (row["rules"][r] or -np.inf) > max(best, row["rules"]["winner"] or -np.inf)
                 for r in ("router", "vote")}
        print(f"seed {seed}: " + " / ".join(f"{r} {fmt(row['rules'][r])}" for r in RULES)
              + " | " + " / ".join(f"{m} {fmt(v)}" for m, v in members.items())
              + f" | winner={row['winner']} ece={row['ece_test']:.3f}"
              + " | per regime bp calm/volatile: "
              + ", ".join(f"{m} {a:+.1f}/{b:+.1f}" for m, (a, b) in row["per_regime_bp"].items())
              + f" | beats all: router {beats['router']} vote {beats['vote']}"
              + f" | {row['cpu_s']:.0f} s cpu, {row['wall_s']:.0f} s wall", flush=True)
        for rule in held:
            held[rule] += int(beats[rule])
    print(f"beat winner-takes-all and every member on test: router on {held['router']} of "
          f"{len(args.seeds)} seeds, vote on {held['vote']} of {len(args.seeds)}")


if __name__ == "__main__":
    main_cli()
