"""Time of a QR-DQN training run against DQN's on gymnax CartPole-v1, measured in the same run.

    JAX_PLATFORMS=cpu python scripts/bench_qrdqn_update.py [--steps 50000] [--seeds 5]

Each agent with its defaults runs `make_train_and_evaluate` (training, then 10 greedy
episodes), jitted and vmapped over `--seeds` keys; compilation is timed apart. Prints both
times, the ratio QR-DQN / DQN, and each seed's greedy return (BENCHMARKS.md, issue 19).
"""

from __future__ import annotations

import argparse
import time

import jaxtrade  # noqa: F401  (first: XLA:CPU flags, before gymnax starts JAX)

# isort: split
import gymnax
import jax
import numpy as np

import agents
from agents.common.evaluate import make_train_and_evaluate


def timed(name: str, steps: int, seeds: int) -> float:
    env, env_params = gymnax.make("CartPole-v1")
    config = agents.config_from_dict({"name": name, "total_steps": steps})
    program = jax.jit(jax.vmap(make_train_and_evaluate(config, env, env_params, 10)))
    keys = jax.random.split(jax.random.key(20_261_203), seeds)
    start = time.perf_counter()
    compiled = program.lower(keys).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    _, greedy = compiled(keys)
    greedy = np.asarray(jax.block_until_ready(greedy)).mean(axis=1)
    run_s = time.perf_counter() - start
    print(f"{name:6s} compile {compile_s:5.1f} s  run {run_s:6.1f} s  greedy {np.round(greedy, 1)}",
          flush=True)
    return run_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    dqn = timed("dqn", args.steps, args.seeds)
    qrdqn = timed("qrdqn", args.steps, args.seeds)
    print(f"QR-DQN / DQN run time: {qrdqn / dqn:.2f}x ({args.steps} env steps x {args.seeds} "
          "seeds)")


if __name__ == "__main__":
    main()
