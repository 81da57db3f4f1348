"""Compile and run time on CPU: XLA's default emitters vs the faster-compiling options jaxtrade
gives the programs a command runs once (jaxtrade/xla.py), both measured in the same run.

    JAX_PLATFORMS=cpu python scripts/bench_compile.py [--agents ppo sac dqn] [--chunks 3]

For each agent's default config (configs/: sp500_daily, the agent's own network) three
programs, each compiled twice in this process (XLA's defaults, then jaxtrade's options for
that program) and then run:
  init   the agent's init, as `jaxtrade train` compiles it (always with
         jaxtrade.xla.LIGHT_COMPILE_CPU on CPU: no LLVM optimization);
  chunk  the training chunk, vmapped over one point as `jaxtrade train` runs it
         (jaxtrade.xla.FAST_COMPILE_CPU with `train.fast_compile=true`);
  walk   the test split's walk of the agent's initial policy, as `jaxtrade backtest` and the
         report run it (always FAST_COMPILE_CPU on CPU).
Prints compile and run seconds and the ratios fast / default (below 1: the fast options take
less time). BENCHMARKS.md, "Faster compiles on CPU", records the figures.
"""

from __future__ import annotations

import argparse
import platform
import time

import jax
import numpy as np

import agents
import jaxtrade  # noqa: F401  (first: XLA:CPU flags)
from experiments import common
from jaxtrade.evaluate.backtest import agent_policy, eval_bounds, eval_params, walk
from jaxtrade.xla import FAST_COMPILE_CPU, LIGHT_COMPILE_CPU


def programs(name: str):
    """(init, init args, chunk, chunk args, walk, walk args) of agent `name`'s default
    config."""
    cfg = common.compose([f"agent={name}"])
    frame = common.load_frame(cfg["data"])
    env, env_params = common.build_env(cfg, common.build_market(cfg, frame))
    config = common.agent_config(cfg, env, env_params, common.resolve_num_envs(
        cfg, env, env_params))
    agent = agents.make_agent(config, env, env_params)
    state = jax.jit(agent.init)(jax.random.key(0), None, env_params)
    points = jax.tree.map(lambda x: x[None], state)
    first, last = eval_bounds(env, env_params, "test")

    def chunk(states, market):
        return jax.vmap(agent.run_chunk, in_axes=(0, None))(states, market)

    def test_walk(params, market):
        return walk(env, eval_params(market, "test"), agent_policy(agent, params), last - first,
                    jax.random.key(1))

    def init(key, market):
        return agent.init(key, None, market)

    return (init, (jax.random.key(0), env_params), chunk, (points, env_params), test_walk,
            (agent.policy_params(state), env_params))


def timed(fun, args, options, repeats: int) -> tuple[float, float]:
    """(compile seconds, run seconds per call) of `fun` jitted with `options`."""
    start = time.perf_counter()
    compiled = jax.jit(fun, compiler_options=options).lower(*args).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(*args))  # first call: buffers, thread pools
    start = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(compiled(*args))
    return compile_s, (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", nargs="+", default=["ppo", "sac", "dqn"])
    parser.add_argument("--chunks", type=int, default=3, help="timed calls of each program")
    args = parser.parse_args()
    print(f"device: {jax.devices()[0].platform}, {jax.device_count()} device(s), "
          f"{platform.machine()}; jax {jax.__version__}; fast = {LIGHT_COMPILE_CPU} for "
          f"init, {FAST_COMPILE_CPU} for chunk and walk")
    jax.jit(lambda x: x + 1).lower(np.ones(3)).compile()  # XLA's one-time start-up, apart
    print(f"{'program':12s} {'compile default':>16s} {'compile fast':>13s} {'ratio':>6s} "
          f"{'run default':>12s} {'run fast':>9s} {'ratio':>6s}")
    for name in args.agents:
        init, init_args, chunk, chunk_args, test_walk, walk_args = programs(name)
        for label, fun, fun_args, options in (
                ("init", init, init_args, LIGHT_COMPILE_CPU),
                ("chunk", chunk, chunk_args, FAST_COMPILE_CPU),
                ("walk", test_walk, walk_args, FAST_COMPILE_CPU)):
            c0, r0 = timed(fun, fun_args, None, args.chunks)
            c1, r1 = timed(fun, fun_args, dict(options), args.chunks)
            print(f"{name + ' ' + label:12s} {c0:15.2f}s {c1:12.2f}s {c1 / c0:6.2f} "
                  f"{r0:11.3f}s {r1:8.3f}s {r1 / r0:6.2f}", flush=True)


if __name__ == "__main__":
    main()
