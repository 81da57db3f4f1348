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

With --runner it times the exported search instead (no JAX in the timed loop): the default
mcts agent (relu 64x64, random weights with noise so the tree's decisions vary; 16
simulations, `--runner-simulations`; the gumbel search, or `--runner-search stochastic`) on
the embedded sp500_daily bars (default feature spec, window 32, discrete [-1, 0, 1]) is
exported with jaxtrade.export.write_bundle and the numpy runner (jaxtrade/live/engine.py +
jaxtrade/live/mcts.py) replays `--bars` bars in-process, trading from the first bar it can.
Per bar it prints p50/p99 of the wall time and of the thread's CPU time of the whole bar
(fills, features, search, risk rules) and of the search alone, against the 100 ms goal
(issue 24); on a loaded machine the CPU times are the figures that do not count the wait for
a core.

    python scripts/bench_mcts.py [--batch 256] [--simulations 50] [--repeats 10] [--train]
    python scripts/bench_mcts.py --runner [--runner-simulations 16] [--bars 1500]
        [--runner-search gumbel|stochastic]
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
    parser.add_argument("--runner", action="store_true",
                        help="time the exported numpy search in the live runner per bar")
    parser.add_argument("--runner-simulations", type=int, default=16,
                        help="simulations of the exported search (the agent's default: 16)")
    parser.add_argument("--runner-search", default="gumbel", choices=("gumbel", "stochastic"),
                        help="the exported run's agent.search (--runner)")
    parser.add_argument("--bars", type=int, default=1500, help="bars replayed with --runner")
    args = parser.parse_args(argv)
    if args.runner:
        return bench_runner(args)

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


def bench_runner(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    import jax

    import agents
    import envs
    from jaxtrade import market as market_lib
    from jaxtrade.data import load_ohlcv
    from jaxtrade.data.splits import make_splits
    from jaxtrade.export import write_bundle
    from jaxtrade.features import default_spec
    from jaxtrade.live.bars import Bar
    from jaxtrade.live.bundle import load_bundle
    from jaxtrade.live.engine import Runner

    frame = load_ohlcv("sp500_daily").head(args.bars)
    market = market_lib.build(frame, default_spec(), make_splits(frame.height, 0.6, 0.2))
    env, env_params = envs.make("trading", market)
    config = agents.config_from_dict({"name": "mcts", "search": args.runner_search,
                                      "num_simulations": args.runner_simulations})
    agent = agents.make_agent(config, env, env_params)
    params = agent.policy_params(agent.init(jax.random.key(0), None, env_params))
    leaves, tree = jax.tree.flatten(params.network)
    keys = jax.random.split(jax.random.key(3), len(leaves))
    params = params.replace(network=jax.tree.unflatten(
        tree, [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]))
    bundle = write_bundle(Path(tempfile.mkdtemp(prefix="bench-mcts-")) / "bundle",
                          params=params, network_config=config.network,
                          head=config.export_head(), env=env, env_params=env_params)
    runner = Runner(load_bundle(bundle), max_jump_seconds=0)
    planner = runner.planner
    search_times: list[float] = []
    search_cpu: list[float] = []
    inner = planner.search

    def timed_search(*a, **k):
        cpu_began, began = time.thread_time(), time.perf_counter()
        out = inner(*a, **k)
        search_times.append(time.perf_counter() - began)
        search_cpu.append(time.thread_time() - cpu_began)
        return out

    planner.search = timed_search
    stamps = frame["timestamp"].dt.epoch("us").to_list()
    cols = [frame[c].to_list() for c in ("open", "high", "low", "close", "volume")]
    wall, cpu, actions = [], [], []
    for t, *values in zip(stamps, *cols):
        cpu_began, began = time.thread_time(), time.perf_counter()
        decision = runner.process(Bar(t, *values))
        if decision is not None:
            wall.append(time.perf_counter() - began)
            cpu.append(time.thread_time() - cpu_began)
            actions.append(decision["action"])
    ms = lambda x, q: float(np.percentile(np.asarray(x) * 1e3, q))
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, numpy {np.__version__}; "
          f"load {os.getloadavg()[0]:.1f}; mcts bundle: {planner.kind} search, "
          f"{planner.num_simulations} "
          f"simulations, {planner.num_actions} actions x {planner.num_outcomes} outcomes, "
          f"obs {planner.obs_shape}; {len(wall)} decisions on {len(stamps)} bars "
          f"(actions used: {sorted(set(actions))})")
    for name, x in (("runner bar, wall", wall), ("runner bar, CPU", cpu),
                    ("search alone, wall", search_times), ("search alone, CPU", search_cpu)):
        print(f"{name:>20}: p50 {ms(x, 50):7.2f} ms  p99 {ms(x, 99):7.2f} ms  "
              f"max {ms(x, 100):7.2f} ms  (p99 {ms(x, 99) / 100:.2f}x the 100 ms goal)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
