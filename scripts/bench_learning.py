"""How reliably the replay agents learn with their defaults: many seeds, CartPole and Acrobot.

Each row trains one agent configuration on `--seeds` seeds in ONE vmapped program (what
`jaxtrade train train.num_seeds=N` runs) and reports, per seed, the mean return of the
greedy policy over `--eval-episodes` evaluation episodes after training (epsilon 0; SAC's
argmax action), beside the training metric the older proofs read (the last 2% of updates'
sampled episode returns). The goals of the reliability issue are printed with each row:

  CartPole-v1   median >= 475 and every seed >= 400 over 10 seeds (dqn, dqn+prioritized,
                qrdqn, qrdqn+prioritized, sac_discrete)
  Acrobot-v1    mean >= -100 over 5 seeds (dqn, qrdqn)

Seeds are `jax.random.split(jax.random.key(--base-seed), --seeds)`, not 0, 1, 2, ...:
the keys the tests use are not the ones the figures come from.

    python scripts/bench_learning.py                          # every row (~40 min on 2 cores)
    python scripts/bench_learning.py --rows dqn qrdqn --seeds 10
    python scripts/bench_learning.py --rows dqn --set hparams.learning_rate=1e-3
    python scripts/bench_learning.py --quick                  # smoke run (tiny budgets)
    python scripts/bench_learning.py --rows dqn --select-every 5   # also the best checkpoint

`--select-every N` also keeps the best network by greedy validation episodes after every N
chunks (what `jaxtrade export` deploys: the best checkpoint, not the last) and reports its
returns on the same test episodes; the exit status then follows its goal.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any

os.environ.setdefault("JAX_PLATFORMS", "cpu")
import jaxtrade  # noqa: E402, F401  (sets XLA:CPU flags before JAX starts)

ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    # row name -> (gymnax env, config overrides beside total_steps)
    "dqn": ("CartPole-v1", {"name": "dqn"}),
    "dqn-per": ("CartPole-v1", {"name": "dqn", "prioritized": True}),
    "qrdqn": ("CartPole-v1", {"name": "qrdqn"}),
    "qrdqn-per": ("CartPole-v1", {"name": "qrdqn", "prioritized": True}),
    "sac_discrete": ("CartPole-v1", {"name": "sac_discrete"}),
    "dqn-acrobot": ("Acrobot-v1", {"name": "dqn"}),
    "qrdqn-acrobot": ("Acrobot-v1", {"name": "qrdqn"}),
}
GOALS = {"CartPole-v1": "median >= 475, min >= 400", "Acrobot-v1": "mean >= -100"}


def parse_value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def nest(overrides: list[str]) -> dict[str, Any]:
    """['hparams.tau=0.5', 'buffer_size=50000'] -> {'hparams': {'tau': 0.5}, ...}."""
    out: dict[str, Any] = {}
    for item in overrides:
        key, _, value = item.partition("=")
        *path, leaf = key.split(".")
        node = out
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = parse_value(value)
    return out


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def goal_met(env_name: str, finals: Any) -> bool:
    import numpy as np

    if env_name == "CartPole-v1":
        return bool(np.median(finals) >= 475.0 and finals.min() >= 400.0)
    return bool(finals.mean() >= -100.0)


def run_row(name: str, seeds: int, base_seed: int, total_steps: int, eval_episodes: int,
            overrides: dict[str, Any], select_every: int | None = None) -> dict[str, Any]:
    import gymnax
    import jax
    import numpy as np

    import agents
    from agents.common.evaluate import make_train_and_evaluate, make_train_select_and_evaluate
    from agents.common.types import find_metric

    env_name, data = ROWS[name]
    data = merge({**data, "total_steps": total_steps}, overrides)
    env, env_params = gymnax.make(env_name)
    config = agents.config_from_dict(data)
    if select_every:
        selecting = make_train_select_and_evaluate(config, env, env_params, eval_episodes,
                                                   select_every)

        def program(key):
            out = selecting(key)
            return out.metrics, out.final, out.selected, out.selected_chunk
    else:
        plain = make_train_and_evaluate(config, env, env_params, eval_episodes)

        def program(key):
            metrics, greedy = plain(key)
            return metrics, greedy, greedy, jax.numpy.zeros((), jax.numpy.int32)

    def train_and_evaluate(key):
        metrics, *rest = program(key)
        return find_metric(metrics, "episode_return"), *rest

    keys = jax.random.split(jax.random.key(base_seed), seeds)
    start = time.perf_counter()
    returns, greedy, selected, chunk = jax.block_until_ready(
        jax.jit(jax.vmap(train_and_evaluate))(keys))
    seconds = time.perf_counter() - start
    returns, greedy = np.asarray(returns), np.asarray(greedy).mean(axis=1)
    selected = np.asarray(selected).mean(axis=1)
    tail = max(1, returns.shape[1] // 50)
    training = returns[:, -tail:].mean(axis=1)
    extra = {} if not select_every else {
        "select_every_chunks": select_every,
        "selected": [round(float(x), 1) for x in selected],
        "selected_chunk": [int(c) for c in np.asarray(chunk)],
        "selected_median": float(np.median(selected)), "selected_min": float(selected.min()),
        "selected_goal_met": goal_met(env_name, selected),
    }
    return {
        "row": name, "env": env_name, "config": data, "seeds": seeds, "base_seed": base_seed,
        "greedy": [round(float(x), 1) for x in greedy],
        "greedy_median": float(np.median(greedy)), "greedy_min": float(greedy.min()),
        "greedy_mean": float(greedy.mean()),
        "training_tail": [round(float(x), 1) for x in training],
        "goal": GOALS[env_name], "goal_met": goal_met(env_name, greedy),
        "seconds": round(seconds, 1), **extra,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--seeds", type=int, default=None,
                        help="seeds per row (default: 10 on CartPole, 5 on Acrobot)")
    parser.add_argument("--base-seed", type=int, default=1_000)
    parser.add_argument("--total-steps", type=int, default=500_000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides for every row, e.g. hparams.tau=0.5")
    parser.add_argument("--select-every", type=int, default=None, metavar="CHUNKS",
                        help="also keep the best network by greedy validation episodes every "
                             "CHUNKS chunks and test it (what `jaxtrade export` deploys)")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 seeds, tiny budget")
    args = parser.parse_args(argv)
    overrides = nest(args.set)
    if args.quick:
        args.seeds, args.total_steps, args.eval_episodes = 2, 20_000, 2
        overrides = merge({"learning_starts": 1_000, "updates_per_chunk": 100}, overrides)
    import jax

    print(f"# {platform.node()} {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, jax {jax.__version__}, {time.strftime('%Y-%m-%d')}",
          flush=True)
    rows = []
    for name in args.rows:
        env_name = ROWS[name][0]
        seeds = args.seeds or (10 if env_name == "CartPole-v1" else 5)
        row = run_row(name, seeds, args.base_seed, args.total_steps, args.eval_episodes,
                      overrides, args.select_every)
        rows.append(row)
        print(f"{name:14s} {env_name:12s} greedy median {row['greedy_median']:7.1f} "
              f"min {row['greedy_min']:7.1f} mean {row['greedy_mean']:7.1f} "
              f"[{row['goal']}: {'met' if row['goal_met'] else 'NOT met'}] "
              f"{row['seconds']:.0f}s\n  greedy   {row['greedy']}\n"
              f"  training {row['training_tail']}", flush=True)
        if args.select_every:
            print(f"  selected {row['selected']} (median {row['selected_median']:.1f} min "
                  f"{row['selected_min']:.1f}: {'met' if row['selected_goal_met'] else 'NOT met'})"
                  f"\n  chunk    {row['selected_chunk']}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"argv": sys.argv[1:], "rows": rows}, f, indent=1)
    key = "selected_goal_met" if args.select_every else "goal_met"
    return 0 if all(row[key] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
