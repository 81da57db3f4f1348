"""The ensemble in one program vs its members run one after another, in one run.

Both sides train the same members with the same settings on the same market (the embedded
synthetic generator, window 32, default features): side A is `agents.make_train` of the
ensemble (default members ppo, cvar_ppo, sac, qrdqn; one compiled program), side B is
`agents.make_train` of each member alone (`EnsembleConfig.member_config`, its own key
`member_key`), one after another. Each side is timed twice: the first call (compile + run,
what a user waits for) and the best of `--repeats` calls of the compiled programs (run only).
The printed ratio is A / B (goal <= 1.0).

    python scripts/bench_ensemble.py                       # ~10 minutes on 2 loaded CPU cores
    python scripts/bench_ensemble.py --quick               # smoke run (jaxtrade bench ensemble)
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
    parser.add_argument("--members", default="ppo,cvar_ppo,sac,qrdqn")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls after the first")
    parser.add_argument("--learning-starts", type=int, default=1_024,
                        help="replay members' learning_starts (env steps)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 4096 env steps per member, one timed call")
    args = parser.parse_args()
    if args.quick:
        args.total_steps, args.repeats, args.learning_starts = 4096, 1, 512
    return args


def timed(fn) -> float:
    import jax

    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def main() -> None:
    args = parse_args()
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
