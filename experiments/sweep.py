"""`jaxtrade sweep`: hyperparameter search on one machine.

Numeric hyperparameters (`agent.hparams.*`) are vmapped axes of ONE compiled program: every
point (x every seed) trains side by side. Points come from the `sweep` config group (grid,
or random / log-uniform samples) and from comma lists on the command line:

    jaxtrade sweep agent.hparams.learning_rate=1e-4,3e-4 agent.hparams.ent_coef=0,0.01
    jaxtrade sweep sweep=random_lr sweep.num_samples=16 train.num_seeds=2

Any other comma list (a shape-changing setting: env.num_envs, network=..., agent=...) is a
Hydra multirun axis: one training process per combination, one after another (each is
itself a vmapped sweep over the hyperparameter points, or trains the base hyperparameters
when only shapes are swept), in run_dir/job<i>/, with XLA_PYTHON_CLIENT_PREALLOCATE=false so
each process takes only the memory it needs. The summary ranks all trials by validation
Sharpe, states the number of trials and gives the Deflated Sharpe Ratio of the best one.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experiments import common
from jaxtrade.config.compose import parse_overrides
from jaxtrade.errors import ConfigError
from jaxtrade.logging import plural

HELP = """usage: jaxtrade sweep [sweep=NAME] [key=value ...] [key=a,b,c ...]

Numeric agent.hparams.* axes are vmapped in one compiled program (grid over comma lists or
the sweep group's grid; sweep=random_lr samples log-uniform/uniform points). Comma lists on
other keys run one process per combination (Hydra multirun), one after another.
Every other key=value is a `jaxtrade train` override (see jaxtrade train --help).

examples:
  jaxtrade sweep agent.hparams.learning_rate=1e-4,3e-4 agent.hparams.ent_coef=0,0.01
  jaxtrade sweep sweep=lr_ent_grid train.num_seeds=3 logger=wandb
  jaxtrade sweep sweep=random_lr sweep.num_samples=16
  jaxtrade sweep env.num_envs=32,64 agent.hparams.learning_rate=1e-4,3e-4
  jaxtrade sweep agent=ensemble agent.sac.hparams.tau=0.005,0.02 (a member's hparams)

Writes run_dir/sweep_summary.json and .csv (all trials ranked by validation Sharpe).
"""

HPARAM_PREFIX = "agent.hparams."
MULTIRUN_JOB_ENV = "JAXTRADE_MULTIRUN_JOB"  # set by run_multirun for the processes it starts


def split_sweep_overrides(argv: Sequence[str]) -> tuple[list[str], dict[str, list[Any]],
                                                         dict[str, list[str]]]:
    """(plain overrides, vmapped numeric axes, multirun axes as override strings)."""
    plain: list[str] = []
    vmapped: dict[str, list[Any]] = {}
    multirun: dict[str, list[str]] = {}
    for text, ov in zip(argv, parse_overrides(argv), strict=True):
        if not ov.is_sweep_override():
            plain.append(text)
            continue
        key = ov.get_key_element()
        values = list(ov.sweep_string_iterator())
        if is_hparam_key(ov.key_or_group):
            try:
                vmapped[ov.key_or_group] = [float(v) for v in values]
            except ValueError:
                raise ConfigError(f"{text!r} is not allowed: agent.hparams values must be "
                                  "numbers") from None
        else:
            multirun[key] = [f"{key}={v}" for v in values]
    return plain, vmapped, multirun


def is_hparam_key(key: str) -> bool:
    """agent.hparams.<name>, or a composite agent's agent.<member>.hparams.<name>."""
    parts = key.split(".")
    return key.startswith(HPARAM_PREFIX) or (
        len(parts) == 4 and parts[0] == "agent" and parts[2] == "hparams")


def check_hparam_axes(cfg: Mapping[str, Any], axes: Mapping[str, list[float]]) -> None:
    """Every swept agent.hparams.* key (agent.<member>.hparams.* for the ensemble) must be a
    hyperparameter of the chosen agent."""
    for key in axes:
        parts = key.split(".")
        section = cfg["agent"] if len(parts) == 3 else (cfg["agent"].get(parts[1]) or {})
        known = list(section.get("hparams", {}) if isinstance(section, Mapping) else [])
        if parts[-1] not in known:
            from jaxtrade.config.validate import unknown_key

            raise unknown_key(key, axes[key], known)


def sample_points(sweep: Mapping[str, Any], cli_axes: Mapping[str, list[float]]
                  ) -> list[dict[str, float]]:
    """Hyperparameter points: grid product, or random samples (log-uniform where `log`)."""
    grid_axes: dict[str, list[float]] = {}
    random_params = []
    for param in sweep.get("params") or []:
        if param.get("values"):
            grid_axes[param["key"]] = [float(v) for v in param["values"]]
        elif sweep["method"] == "random":
            random_params.append(param)
    grid_axes.update(cli_axes)
    grid = [dict(zip(grid_axes, combo, strict=True))
            for combo in itertools.product(*grid_axes.values())] or [{}]
    if not random_params:
        return grid if grid_axes else []
    rng = np.random.default_rng(int(sweep.get("sample_seed", 0)))
    points = []
    for base in grid:
        for _ in range(int(sweep["num_samples"])):
            point = dict(base)
            for param in random_params:
                low, high = float(param["low"]), float(param["high"])
                if param.get("log"):
                    point[param["key"]] = float(np.exp(rng.uniform(np.log(low), np.log(high))))
                else:
                    point[param["key"]] = float(rng.uniform(low, high))
            points.append(point)
    return points


def main(argv: Sequence[str], print_fn: Callable[[str], None] = print) -> int:
    if common.wants_help(argv):
        print(HELP)
        return 0
    plain, vmapped, multirun = split_sweep_overrides(common.split_flags(argv))
    if multirun:
        return run_multirun(plain, vmapped, multirun, print_fn)
    from experiments.train import start_distributed

    # Before the config is validated (validation starts JAX): a vmapped sweep over hosts
    # is one `train` program whose points span every process's devices.
    start_distributed(plain)
    cfg = common.compose(plain)
    check_hparam_axes(cfg, vmapped)
    points = sample_points(cfg["sweep"], vmapped)
    # A job of a multirun whose only axes change shapes has no hyperparameter points: it
    # trains the base hyperparameters (its seeds are its trials).
    if not points and os.environ.get(MULTIRUN_JOB_ENV) != "1":
        raise ConfigError("sweep has no points: give sweep=<name> (e.g. sweep=lr_ent_grid) or "
                          "comma lists such as agent.hparams.learning_rate=1e-4,3e-4")
    cfg["sweep"]["points"] = points
    summary = run_vmapped(cfg, points, print_fn, set_by_user=common.override_keys(argv))
    from jaxtrade import sharding  # JAX: imported once the config is valid (a typo is quick)

    if sharding.is_primary():
        print_fn(summary_table(summary))
    return 0


def run_vmapped(cfg: dict[str, Any], points: list[dict[str, float]],
                print_fn: Callable[[str], None] = print,
                set_by_user: Collection[str] | None = None) -> dict[str, Any]:
    from experiments.train import train

    result = train(cfg, hparam_points=points, command="sweep", print_fn=print_fn,
                   set_by_user=set_by_user)
    trials = []
    returns = result.loop.validation.get("validation_returns")
    for index, point in enumerate(result.points):
        trial = {"trial": index, **point}
        for key, value in result.loop.validation.items():
            if value.ndim == 1:
                trial[key] = float(value[index])
        trials.append(trial)
    summary = summarize(trials, returns, result.run_dir)
    from jaxtrade import sharding

    if sharding.is_primary():  # process 0 owns the run directory
        write_summary(result.run_dir, summary, returns)
    return summary


def summarize(trials: list[dict[str, Any]], returns: np.ndarray | None,
              run_dir: Path) -> dict[str, Any]:
    """Trials ranked by validation Sharpe, with the Deflated Sharpe of the best one."""
    def key(t: Mapping[str, Any]) -> float:
        value = t.get("validation_sharpe")
        return -np.inf if value is None or not np.isfinite(value) else float(value)

    ranked = sorted(trials, key=key, reverse=True)
    significance = None
    if returns is not None and len(trials) > 0:
        from jaxtrade.metrics import sweep_significance

        significance = sweep_significance(np.asarray(returns, np.float64))
    return {"run_dir": str(run_dir), "num_trials": len(trials), "trials": ranked,
            "significance": significance}


def write_summary(run_dir: Path, summary: Mapping[str, Any], returns: np.ndarray | None) -> None:
    (run_dir / "sweep_summary.json").write_text(json.dumps(summary, indent=2, default=float))
    if returns is not None:
        np.save(run_dir / "sweep_validation_returns.npy", np.asarray(returns))
    keys = list(dict.fromkeys(k for t in summary["trials"] for k in t))
    with (run_dir / "sweep_summary.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(summary["trials"])


def summary_table(summary: Mapping[str, Any], limit: int = 20) -> str:
    trials = summary["trials"]
    axes = [k for k in (trials[0] if trials else {}) if k == "seed" or k.startswith(
        HPARAM_PREFIX) or k == "job"]
    shown = trials[:limit]
    # Each axis column is as wide as its name or its widest value (a multirun's `job` holds
    # whole override strings), at least 14.
    widths = {a: max([14, len(a.removeprefix(HPARAM_PREFIX))]
                     + [len(_cell(t.get(a))) for t in shown]) for a in axes}
    head = f"{'rank':>4} {'trial':>5} " + " ".join(
        f"{a.removeprefix(HPARAM_PREFIX):>{widths[a]}}" for a in axes)
    head += f" {'val Sharpe':>11} {'val return':>11} {'val max DD':>11}"
    lines = [f"sweep: {plural(summary['num_trials'], 'trial')} (ranked by validation Sharpe) in "
             f"{summary['run_dir']}", head]
    for rank, t in enumerate(shown, 1):
        cells = " ".join(f"{_cell(t.get(a)):>{widths[a]}}" for a in axes)
        lines.append(f"{rank:>4} {t['trial']:>5} {cells} {_cell(t.get('validation_sharpe')):>11}"
                     f" {_cell(t.get('validation_total_return'), pct=True):>11}"
                     f" {_cell(t.get('validation_max_drawdown'), pct=True):>11}")
    if len(trials) > limit:
        lines.append(f"... {len(trials) - limit} more in sweep_summary.csv")
    sig = summary.get("significance")
    if sig:
        lines.append(f"best trial: per-bar Sharpe {sig['sharpe_per_bar']:.4f}, PSR "
                     f"{sig['psr']:.3f}, Deflated Sharpe {sig['dsr']:.3f} over "
                     f"{plural(sig['num_trials'], 'trial')} (probability the best is not luck)")
    return "\n".join(lines)


def _cell(value: Any, pct: bool = False) -> str:
    if isinstance(value, (int, np.integer)):
        return str(value)
    if value is None or not isinstance(value, float) or not np.isfinite(value):
        return "-" if value is None or isinstance(value, float) else str(value)
    return f"{100 * value:.1f}%" if pct else f"{value:.4g}"


def run_multirun(plain: list[str], vmapped: Mapping[str, list[float]],
                 multirun: Mapping[str, list[str]], print_fn: Callable[[str], None]) -> int:
    """One process per combination of the shape-changing axes, then one ranked summary."""
    cfg = common.compose(plain)
    base = common.resolve_run_dir(cfg, "sweep")
    vmapped_args = [f"{k}={','.join(repr(v) for v in vs)}" for k, vs in vmapped.items()]
    plain = [o for o in plain if not o.startswith("run_dir=")]
    combos = list(itertools.product(*multirun.values()))
    # Every job's config is composed and validated before the first one trains, so a bad
    # value late in a list (env.num_envs=64,6O) stops the sweep now, not after hours.
    for combo in combos:
        check_hparam_axes(common.compose([*plain, *combo]), vmapped)
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false", **{MULTIRUN_JOB_ENV: "1"})
    all_trials: list[dict[str, Any]] = []
    all_returns = []
    for index, combo in enumerate(combos):
        job_dir = base / f"job{index}"
        print_fn(f"multirun job {index + 1}/{len(combos)}: {' '.join(combo)}")
        code = subprocess.call([sys.executable, "-m", "jaxtrade.cli", "sweep", *plain,
                                *vmapped_args, *combo, f"run_dir={job_dir}"], env=env)
        if code != 0:
            print_fn(f"multirun job {index + 1}/{len(combos)} ({job_dir}) failed with exit "
                     f"code {code}")
            return code
        job = json.loads((job_dir / "sweep_summary.json").read_text())
        for trial in sorted(job["trials"], key=lambda t: t["trial"]):
            all_trials.append(dict(trial, job=" ".join(combo), trial=len(all_trials)))
        returns_path = job_dir / "sweep_validation_returns.npy"
        if returns_path.is_file():
            all_returns.append(np.load(returns_path))
    same_length = all_returns and len({r.shape[1] for r in all_returns}) == 1
    returns = np.concatenate(all_returns) if same_length else None
    base.mkdir(parents=True, exist_ok=True)
    summary = summarize(all_trials, returns, base)
    write_summary(base, summary, returns)
    print_fn(summary_table(summary))
    return 0
