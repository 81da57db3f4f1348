"""The ensemble in one program vs its members run one after another, in one run.

Both sides train the same members with the same settings on the same market (the embedded
synthetic generator, window 32, default features): side A is `agents.make_train` of the
ensemble (default members ppo, cvar_ppo, sac, qrdqn; one compiled program), side B is
`agents.make_train` of each member alone (`EnsembleConfig.member_config`, its own key
`member_key`), one after another. Each side is timed twice: the first call (compile + run,
what a user waits for) and the best of `--repeats` calls of the compiled programs (run only).
The printed ratio is A / B (goal <= 1.0).

With --runner it times the exported ensemble in the numpy runner instead (no JAX in the timed
loop; issue 21's goal: per-bar p99 <= 2 ms): the default members (ppo, cvar_ppo, sac, qrdqn,
their default networks with random weights: latency does not depend on their values) on the
embedded sp500_daily bars (default feature spec, window 32, continuous ensemble env), combined
by `--rule` (default vote, the costliest: the Bayesian vote and the trade probability every
bar), are exported with jaxtrade.export.write_bundle and the runner (jaxtrade/live/engine.py +
jaxtrade/live/ensemble.py) replays `--bars` bars in-process, trading from the first bar it can.
Per bar it prints p50/p99 of the wall time and of the thread's CPU time of the whole bar
(fills, features, the members' forward passes, the combination, risk rules), of the
ensemble's decision alone (members + combination) and of the combination alone (vote, trade
probability, gate). `--members` picks other members for either side; with an mcts member
(e.g. `--members ppo,cvar_ppo,sac,qrdqn,mcts`) the ensemble's decision includes that member's
numpy gumbel search (jaxtrade/live/mcts.py, its default 16 simulations) from the ensemble's
book every bar: issue 24's goal for a search per bar is p99 < 100 ms.

    python scripts/bench_ensemble.py                       # ~10 minutes on 2 loaded CPU cores
    python scripts/bench_ensemble.py --quick               # smoke run (jaxtrade bench ensemble)
    python scripts/bench_ensemble.py --runner [--rule vote] [--bars 1500] [--members ...]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
import jaxtrade  # noqa: E402, F401  (sets XLA:CPU flags before JAX starts)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--total-steps", type=int, default=32_768,
                        help="env steps per member (train.total_steps)")
    parser.add_argument("--num-envs", type=int, default=8, help="envs per member")
    parser.add_argument("--members", default="ppo,cvar_ppo,sac,qrdqn",
                        help="comma-separated members (with --runner too; mcts searches)")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls after the first")
    parser.add_argument("--learning-starts", type=int, default=1_024,
                        help="replay members' learning_starts (env steps)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 4096 env steps per member, one timed call")
    parser.add_argument("--runner", action="store_true",
                        help="time the exported 4-member bundle in the numpy runner per bar")
    parser.add_argument("--rule", default="vote", choices=("equal", "vote", "router", "winner"),
                        help="combination rule of the bundle timed with --runner")
    parser.add_argument("--bars", type=int, default=1500, help="bars replayed with --runner")
    args = parser.parse_args()
    if args.quick:
        args.total_steps, args.repeats, args.learning_starts = 4096, 1, 512
    return args


def timed(fn) -> float:
    import jax

    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def bench_runner(args: argparse.Namespace) -> None:
    import tempfile
    from pathlib import Path

    import jax
    import numpy as np

    import agents
    import envs
    from jaxtrade import market as market_lib
    from jaxtrade.data import load_ohlcv
    from jaxtrade.data.splits import make_splits
    from jaxtrade.evaluate.ensemble import with_rule
    from jaxtrade.export import write_bundle
    from jaxtrade.features import default_spec
    from jaxtrade.live.bars import Bar
    from jaxtrade.live.bundle import load_bundle
    from jaxtrade.live.engine import Runner

    frame = load_ohlcv("sp500_daily").head(args.bars)
    market = market_lib.build(frame, default_spec(), make_splits(frame.height, 0.6, 0.2))
    env, env_params = envs.make("trading", market, action_mode="continuous")
    config = agents.config_from_dict({"name": "ensemble", "members": args.members.split(",")})
    agent = agents.make_agent(config, env, env_params)
    params = agent.policy_params(agent.init(jax.random.key(0), None, env_params))
    members = len(config.members)
    fitted = {"router": np.eye(3, members)[:, ::-1] + np.eye(3, members),  # a table that moves
              "winner": np.eye(members)[0]}
    rows = fitted["router"].sum(axis=1, keepdims=True)  # a row is empty with 2 members
    fitted["router"] = np.where(rows > 0, fitted["router"] / np.maximum(rows, 1e-12),
                                1 / members)
    params = jax.tree.map(np.asarray, with_rule(params, args.rule, fitted))
    bundle = write_bundle(Path(tempfile.mkdtemp(prefix="bench-ensemble-")) / "bundle",
                          params=params, network_config=config, head={"family": "ensemble"},
                          env=env, env_params=env_params)
    runner = Runner(load_bundle(bundle), max_jump_seconds=0)
    policy = runner.ensemble
    decide_times: list[float] = []
    inner = policy.decide

    def timed_decide(*a, **k):
        began = time.perf_counter()
        out = inner(*a, **k)
        decide_times.append(time.perf_counter() - began)
        return out

    policy.decide = timed_decide
    combine_times: list[float] = []
    combine = policy.combination.step

    def timed_combine(*a, **k):
        began = time.perf_counter()
        out = combine(*a, **k)
        combine_times.append(time.perf_counter() - began)
        return out

    policy.combination.step = timed_combine
    stamps = frame["timestamp"].dt.epoch("us").to_list()
    cols = [frame[c].to_list() for c in ("open", "high", "low", "close", "volume")]
    wall, cpu, weights = [], [], []
    for t, *values in zip(stamps, *cols):
        cpu_began, began = time.thread_time(), time.perf_counter()
        decision = runner.process(Bar(t, *values))
        if decision is not None:
            wall.append(time.perf_counter() - began)
            cpu.append(time.thread_time() - cpu_began)
            weights.append(list(decision["member_weights"].values()))
    ms = lambda x, q: float(np.percentile(np.asarray(x) * 1e3, q))
    spread = np.ptp(np.asarray(weights), axis=0).max()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, numpy {np.__version__}; "
          f"load {os.getloadavg()[0]:.1f}; {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} "
          f"UTC; ensemble bundle: members {policy.names}, rule {policy.rule}, vote window "
          f"{policy.combination.window} bars, obs {policy.obs_shape}; {len(wall)} decisions on "
          f"{len(stamps)} bars (largest swing of a member weight: {spread:.2f})")
    for name, x in (("runner bar, wall", wall), ("runner bar, CPU", cpu),
                    ("ensemble decide, wall", decide_times),
                    ("combination alone, wall", combine_times)):
        print(f"{name:>24}: p50 {ms(x, 50):6.2f} ms  p99 {ms(x, 99):6.2f} ms  "
              f"max {ms(x, 100):6.2f} ms  (p99 {ms(x, 99) / 2:.2f}x the 2 ms goal)")


def main() -> None:
    args = parse_args()
    if args.runner:
        bench_runner(args)
        return
    import jax

    import agents
    from agents.ensemble import member_key
    from experiments import common

    cfg = common.compose(["data=synthetic", "agent=ensemble", "run_dir=/tmp/bench-ensemble"])
    frame = common.load_frame(cfg["data"])
    market = common.build_market(cfg, frame)
    env, env_params = common.build_env(cfg, market)
    members = args.members.split(",")
    section = {"name": "ensemble", "members": members, "num_envs": args.num_envs,
               "total_steps": args.total_steps}
    for name in members:
        if hasattr(agents.AGENTS[name].config_class(), "learning_starts"):
            section[name] = {"learning_starts": args.learning_starts}
    config = agents.config_from_dict(section)
    key = jax.random.key(0)

    ensemble_train = agents.make_train(config, env, env_params)
    alone = []
    for name in members:
        member_cfg = config.member_config(name)
        mode = getattr(type(member_cfg), "env_action_mode", "discrete")
        alone.append((name, agents.make_train(member_cfg, env.with_action_mode(mode),
                                              env_params)))

    def run_alone():
        return [train(member_key(key, name)) for name, train in alone]

    first_a = timed(lambda: ensemble_train(key))
    first_b = timed(run_alone)
    run_a = min(timed(lambda: ensemble_train(key)) for _ in range(args.repeats))
    run_b = min(timed(run_alone) for _ in range(args.repeats))
    num_updates, _, repeats = config.schedule()
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, jax {jax.__version__}, "
          f"{jax.devices()[0].platform}; {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"members {members}, {args.num_envs} envs each, {args.total_steps} env steps per "
          f"member; ensemble: {num_updates} updates, member updates per update {repeats}")
    print(f"first call (compile + run): ensemble {first_a:.1f} s, members one after another "
          f"{first_b:.1f} s, ratio {first_a / first_b:.2f}")
    print(f"run only (best of {args.repeats}): ensemble {run_a:.1f} s, members one after "
          f"another {run_b:.1f} s, ratio {run_a / run_b:.2f}")


if __name__ == "__main__":
    main()
