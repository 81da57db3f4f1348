"""What the persistent compilation cache saves a user on CPU: the same commands without it
(`compile_cache=false`), with an empty cache, and with the cache the first runs filled, all
measured in this run.

    JAX_PLATFORMS=cpu python scripts/bench_compile_cache.py [--experiment smoke] [--repeats 2]
    JAX_PLATFORMS=cpu python scripts/bench_compile_cache.py --experiment '' --repeats 1

Each command is a fresh `jaxtrade` process, as a user runs it: `jaxtrade train
experiment=E` (training, validation, the report's walks and metrics), then `jaxtrade
backtest run_dir=...` of that run (it follows the run's saved cache setting). Rows: off (no
cache), cold (an empty cache folder: the first run fills it), warm (the same commands
again). Prints wall seconds of each command and the ratio warm / off (below 1: the cache
saves time). BENCHMARKS.md, "The persistent compilation cache on CPU", records the figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def jaxtrade_command() -> list[str]:
    """The installed `jaxtrade` command beside this Python (what users run), else the module."""
    script = Path(sys.executable).with_name("jaxtrade")
    return [str(script)] if script.exists() else [sys.executable, "-m", "jaxtrade.cli"]


def timed(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    out = subprocess.run([*jaxtrade_command(), *args], env=env, cwd=ROOT,
                         capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"`jaxtrade {' '.join(args)}` failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return seconds


def commands(experiment: str, run_dir: Path, cache: list[str]) -> dict[str, float]:
    """Wall seconds of `train` then `backtest` of its run, with the cache settings `cache`."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    env = dict(os.environ, WANDB_MODE="offline")
    chosen = [f"experiment={experiment}"] if experiment else []  # "": the default run
    train = timed(["train", *chosen, f"run_dir={run_dir}", "logger=none", *cache], env)
    backtest = timed(["backtest", f"run_dir={run_dir}"], env)  # the run's own cache setting
    return {"train": train, "backtest": backtest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="smoke",
                        help="configs/experiment/ entry; '' for the default run (`make run`)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="times each row is measured (the minimum is printed)")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"experiment={args.experiment}, min of {args.repeats}")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows: dict[str, dict[str, float]] = {"off": {}, "cold": {}, "warm": {}}
        for _ in range(args.repeats):
            cache_dir = work / "cache"
            shutil.rmtree(cache_dir, ignore_errors=True)
            on = ["compile_cache=true", f"compile_cache_dir={cache_dir}"]
            for row, cache in (("off", ["compile_cache=false"]), ("cold", on), ("warm", on)):
                for name, seconds in commands(args.experiment, work / "run", cache).items():
                    rows[row][name] = min(rows[row].get(name, float("inf")), seconds)
            entries = len(list(cache_dir.glob("*-cache")))
    print(f"{'command':10s} {'off':>8s} {'cold':>8s} {'warm':>8s} {'warm/off':>9s}")
    for name in ("train", "backtest"):
        off, cold, warm = (rows[row][name] for row in ("off", "cold", "warm"))
        print(f"{name:10s} {off:8.1f} {cold:8.1f} {warm:8.1f} {warm / off:9.2f}")
    print(f"cache entries after a cold and a warm pass: {entries}")


if __name__ == "__main__":
    main()
