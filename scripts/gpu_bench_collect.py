"""Gather the parts scripts/bench_gpu.sh ran into one JSON, with the GPU goals checked.

Each part left NAME.status (exit code, seconds, limit), NAME.log and, for the scripts that
write one, NAME.json in --parts. The result holds the machine, the headline figures, every
part's raw figures and the tail of its log, and the goals:
  env_steps_per_s_65536 >= 1e8, ppo_env_steps_per_s_4096 >= 5e6, seeds_64_over_1 <= 2.

    python scripts/gpu_bench_collect.py --parts DIR --out bench_gpu.json --mode gpu
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

GOALS = {"env_steps_per_s_65536": (">=", 1e8), "ppo_env_steps_per_s_4096": (">=", 5e6),
         "seeds_64_over_1": ("<=", 2.0)}
LOG_TAIL_LINES = 15


def gpu_names() -> list[str]:
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def read_part(parts: Path, name: str) -> dict[str, Any]:
    status_path = parts / f"{name}.status"
    part: dict[str, Any] = json.loads(status_path.read_text()) if status_path.is_file() else {}
    log = parts / f"{name}.log"
    text = log.read_text(errors="replace") if log.is_file() else ""
    part["log_tail"] = text.splitlines()[-LOG_TAIL_LINES:]
    figures = parts / f"{name}.json"
    if figures.is_file():
        part["figures"] = json.loads(figures.read_text())
    return part | {"_log": text}


def _last(rows: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    return max(rows, key=lambda r: r["envs"]) if rows else None


def headline(parts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The figures the issue asks for, None where a part did not produce them."""
    out: dict[str, Any] = {}
    env = parts.get("env", {}).get("figures", {})
    row = _last(env.get("default"))
    out["env_envs"] = row["envs"] if row else None
    out["env_steps_per_s_65536"] = row["env_steps_per_s"] if row else None
    train = parts.get("train", {}).get("figures", {})
    default = train.get("default") or {}
    out["ppo_envs"] = default.get("num_envs")
    out["ppo_env_steps_per_s_4096"] = default.get("env_steps_per_s")
    out["ppo_like_for_like_env_steps_per_s"] = (train.get("like_for_like") or {}).get(
        "env_steps_per_s")
    seeds = train.get("seeds_wall_s") or {}
    out["seeds_wall_s"] = seeds
    out["seeds_64_over_1"] = seeds["64"] / seeds["1"] if "64" in seeds and seeds.get("1") \
        else None
    out["agents_env_steps_per_s"] = {
        name.removeprefix("agent_"): (part.get("figures", {}).get("default") or {}).get(
            "env_steps_per_s")
        for name, part in parts.items() if name.startswith("agent_")}
    # bench_backtest prints "jaxtrade evaluation phase, <run>: <seconds> s (...)".
    phases = re.findall(r"evaluation phase, (\w+): ([\d.]+) s", parts.get("sweep_eval", {})
                        .get("_log", ""))
    out["sweep_evaluation_s"] = {run: float(s) for run, s in phases} or None
    return out


def goals(figures: dict[str, Any]) -> dict[str, Any]:
    checked = {}
    for key, (op, target) in GOALS.items():
        value = figures.get(key)
        met = None if value is None else (value >= target if op == ">=" else value <= target)
        checked[key] = {"goal": f"{op} {target:g}", "value": value, "met": met}
    return checked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", type=Path, required=True, help="folder bench_gpu.sh filled")
    parser.add_argument("--out", type=Path, required=True, help="the JSON to write")
    parser.add_argument("--mode", choices=("gpu", "cpu-smoke"), required=True)
    parser.add_argument("--command", default="scripts/bench_gpu.sh")
    parser.add_argument("--elapsed-s", type=float, default=None)
    args = parser.parse_args()

    names = sorted(p.stem for p in args.parts.glob("*.status"))
    parts = {name: read_part(args.parts, name) for name in names}
    figures = headline(parts)
    device = next((p["figures"]["device"] for p in parts.values()
                   if "device" in p.get("figures", {})), None)
    result = {
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "mode": args.mode,
        "command": args.command,
        "elapsed_s": args.elapsed_s,
        "machine": {"host": platform.node(), "cpu_count": os.cpu_count(),
                    "gpus": gpu_names(), "jax_device": device},
        "figures": figures,
        "goals": goals(figures) if args.mode == "gpu" else "not checked on a CPU smoke run",
        "parts": {name: {k: v for k, v in part.items() if k != "_log"}
                  for name, part in parts.items()},
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    failed = [n for n, p in parts.items() if p.get("rc") != 0]
    print(f"wrote {args.out}: {len(parts)} parts"
          + (f", not completed: {', '.join(failed)}" if failed else ", all completed"))
    for key, value in figures.items():
        print(f"  {key}: {value}")


if __name__ == "__main__":
    main()
