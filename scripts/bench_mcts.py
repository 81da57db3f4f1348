"""MCTS search speed: both mctx policies on the same states, in the same run.

Builds the trading env on a random one-asset market with the default window (32 bars) and 8
features per bar, the mcts agent's default network (relu 64x64, random weights: speed does
not depend on their values) and its default 3 x 7 next-bar outcomes, then times the batched
policy call (`Agent.policy`, jitted, self-play settings: exploration noise on) for a batch of
`--batch` env states and `--simulations` simulations with

  gumbel      mctx.gumbel_muzero_policy (expected edge, one sampled outcome per child)
  stochastic  mctx.stochastic_muzero_policy (explicit chance nodes)

It prints, per policy, the median and p90 wall time of one call (after compilation), the
simulations per second (batch x simulations / median), the ratio stochastic / gumbel, and the
median against the 100 ms goal (issue 24: 50 simulations for 256 states).

With --train it also times self-play training on the same env: one `run_chunk` of the mcts
agent (its defaults: 16 envs, 16 simulations, a gradient step per update) against one of PPO
(its defaults, `network` as the mcts agent's), after compilation, in env steps per second.

    python scripts/bench_mcts.py [--batch 256] [--simulations 50] [--repeats 10] [--train]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=256, help="env states per call")
    parser.add_argument("--simulations", type=int, default=50, help="simulations per search")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per policy")
    parser.add_argument("--searches", default="gumbel,stochastic",
                        help="comma-separated: gumbel, stochastic")
    parser.add_argument("--train", action="store_true",
                        help="also time self-play training beside PPO (env steps/s)")
    args = parser.parse_args(argv)

    import jax

    import agents
    import envs
    from jaxtrade.market import from_arrays

    rng = np.random.default_rng(0)
    num_bars, num_features = 2000, 8
    log_returns = 0.01 * rng.standard_normal((num_bars, 1))
    close = 100.0 * np.exp(np.cumsum(log_returns, axis=0))
    features = rng.standard_normal((num_bars, 1, num_features)).astype(np.float32)
    splits = np.array([[0, 1600], [1600, 1800], [1800, 2000]])
    market = from_arrays(close, features=features, splits=splits)
    env, env_params = envs.make("trading", market)
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(
        jax.random.split(jax.random.key(1), args.batch), env_params)

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, jax {jax.__version__} "
          f"({jax.devices()[0].platform}); batch {args.batch} states x {args.simulations} "
          f"simulations, obs {tuple(obs.shape[1:])}")
    medians: dict[str, float] = {}
    for search in args.searches.split(","):
        config = agents.config_from_dict({"name": "mcts", "search": search,
                                          "num_simulations": args.simulations})
        agent = agents.make_agent(config, env, env_params)
        state = jax.jit(agent.init)(jax.random.key(0), None, env_params)
        params = agent.policy_params(state)
        policy = jax.jit(agent.policy, static_argnums=6)
        start = time.perf_counter()
        jax.block_until_ready(policy(params, obs, env_state, env_params, jax.random.key(0),
                                     (), False))
        compile_s = time.perf_counter() - start
        times = []
        for i in range(args.repeats):
            start = time.perf_counter()
            jax.block_until_ready(policy(params, obs, env_state, env_params,
                                         jax.random.key(i + 1), (), False))
            times.append(time.perf_counter() - start)
        median = float(np.median(times))
        medians[search] = median
        sims = args.batch * args.simulations / median
        print(f"{search:>10}: median {median * 1e3:8.1f} ms  p90 "
              f"{np.percentile(times, 90) * 1e3:8.1f} ms  {sims:12,.0f} simulations/s  "
              f"(first call incl. compile {compile_s:.1f} s)  "
              f"{median / 0.1:.2f}x the 100 ms goal")
    if {"gumbel", "stochastic"} <= set(medians):
        print(f"stochastic / gumbel time: {medians['stochastic'] / medians['gumbel']:.2f}")
    if args.train:
        rates = {}
        for name, extra in (("mcts", {"learning_starts": 0, "updates_per_chunk": 100}),
                            ("ppo", {"updates_per_chunk": 10})):
            config = agents.config_from_dict({"name": name, **extra,
                                              "network": {"hidden_sizes": [64, 64],
                                                          "activation": "relu"}})
            agent = agents.make_agent(config, env, env_params)
            state = jax.jit(agent.init)(jax.random.key(0), None, env_params)
            chunk = jax.jit(agent.run_chunk)
            state, _ = jax.block_until_ready(chunk(state, env_params))
            start = time.perf_counter()
            jax.block_until_ready(chunk(state, env_params))
            elapsed = time.perf_counter() - start
            steps = agent.updates_per_chunk * agent.steps_per_update
            rates[name] = steps / elapsed
            print(f"{name:>10} training: {steps} env steps in {elapsed:.2f} s = "
                  f"{rates[name]:,.0f} env steps/s")
        print(f"mcts / ppo training throughput: {rates['mcts'] / rates['ppo']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
