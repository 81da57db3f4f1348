"""End-to-end PPO training throughput: jaxtrade (one compiled program) vs Stable-Baselines3.

Like for like, measured in the same run:
  data         gym-anytrading's bundled GOOGL daily closes
  observation  a window of 30 bars of (close, close difference), nothing else
  actions      two (short / long)
  network      separate actor and critic MLPs, two hidden layers of 64, tanh
  PPO          the same samples per update (2048), epochs (10) and minibatch size (64 samples)
  peer         SB3 PPO("MlpPolicy") on CPU torch over gym-anytrading's StocksEnv
  jaxtrade     agents.make_train(PPOConfig) over envs.make("trading") (which also pays
               commission, spread and slippage every step), 64 envs x 32 steps per update

Also printed: compile time; the network's FLOPs per env step (rollout forward passes plus
epochs x forward+backward ~ 3x forward) and the FLOP/s that implies; wall time of 16 vmapped seeds
vs 1 seed in one program; and the project's default training configuration (configs/,
what `jaxtrade train` runs) with its FLOPs per env-step and FLOP/s.

    python scripts/bench_train.py            # full run (a few minutes on 2 CPU cores)
    python scripts/bench_train.py --quick    # smoke test
    python scripts/bench_train.py --skip-like --skip-seeds --override agent=dqn \
        --override env.num_envs=4096 --json dqn.json   # one agent's default config

--override takes `jaxtrade train` overrides for the default configuration (any agent in
agents.AGENTS that has a configs/agent/ file); --json writes the figures to a file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402

import agents  # noqa: E402
import envs  # noqa: E402
from agents import NetworkConfig, PPOConfig, PPOHParams  # noqa: E402
from jaxtrade.market import from_arrays  # noqa: E402

WINDOW = 30
SAMPLES_PER_UPDATE = 2048
EPOCHS = 10
MINIBATCH = 64


def googl_close() -> np.ndarray:
    from gym_anytrading.datasets import STOCKS_GOOGL

    return STOCKS_GOOGL["Close"].to_numpy(dtype=np.float64)


def jax_env():
    close = googl_close()
    diff = np.insert(np.diff(close), 0, 0.0)
    market = from_arrays(close, features=np.stack([close, diff], axis=-1)[:, None, :])
    return envs.make(
        "trading", market, window_bars=WINDOW, discrete_levels=(-1.0, 1.0),
        include_portfolio=False, episode_bars=len(close) - WINDOW - 1,
        final_observation=True,  # SB3 bootstraps truncated episode ends too
    )


def ppo_config(num_envs: int, rollout_len: int, total_steps: int, minibatch: int) -> PPOConfig:
    batch = num_envs * rollout_len
    return PPOConfig(
        num_envs=num_envs, rollout_len=rollout_len, total_steps=total_steps,
        num_minibatches=batch // minibatch, update_epochs=EPOCHS,
        updates_per_chunk=max(1, total_steps // batch),
        network=NetworkConfig(hidden_sizes=(64, 64), activation="tanh", shared_torso=False),
        hparams=PPOHParams(learning_rate=3e-4, ent_coef=0.0, gae_lambda=0.95),
    )


def mlp_flops(sizes: list[int]) -> int:
    """Multiply-adds x 2 of one forward pass through Dense layers of these widths."""
    return sum(2 * a * b for a, b in zip(sizes[:-1], sizes[1:]))


def flops_per_env_step(obs_dim: int, num_actions: int, epochs: int) -> float:
    critic = mlp_flops([obs_dim, 64, 64, 1])
    forward = mlp_flops([obs_dim, 64, 64, num_actions]) + critic
    # rollout: one forward plus the critic on the final observation (truncation bootstrap);
    # GAE's last value is per update (negligible); update: epochs x (forward + backward).
    return forward * (1 + 3 * epochs) + critic


def time_jax(config: PPOConfig, env, env_params, seeds: int = 1) -> tuple[float, float, int]:
    """(compile seconds, run seconds, env steps per run) of one compiled training program."""
    train = agents.make_train(config, env, env_params)
    keys = jax.random.split(jax.random.key(0), seeds)
    program = jax.jit(jax.vmap(train)) if seeds > 1 else jax.jit(train)
    args = (keys,) if seeds > 1 else (keys[0],)
    start = time.perf_counter()
    compiled = program.lower(*args).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(*args))  # warm-up (allocations, thread pools)
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    run_s = time.perf_counter() - start
    # The agent protocol's sizes, so every registered agent is timed the same way.
    agent = agents.make_agent(config, env, env_params)
    return compile_s, run_s, agent.num_updates * agent.steps_per_update


def time_sb3(steps: int) -> float:
    """Env steps per second of SB3 PPO learn() on StocksEnv (model construction excluded)."""
    import gym_anytrading  # noqa: F401  (registers stocks-v0)
    import gymnasium as gym
    import torch
    from gym_anytrading.datasets import STOCKS_GOOGL
    from stable_baselines3 import PPO

    torch.set_num_threads(1)  # small MLPs: one thread is fastest and avoids contention
    env = gym.make("stocks-v0", df=STOCKS_GOOGL, window_size=WINDOW,
                   frame_bound=(WINDOW, len(STOCKS_GOOGL)))
    model = PPO("MlpPolicy", env, n_steps=SAMPLES_PER_UPDATE, batch_size=MINIBATCH,
                n_epochs=EPOCHS, learning_rate=3e-4, ent_coef=0.0, gae_lambda=0.95,
                device="cpu", seed=0, verbose=0)
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    return model.num_timesteps / (time.perf_counter() - start)


def default_config(num_updates: int, overrides: list[str] | None = None) -> dict:
    """Time `num_updates` updates of the project's default training config (configs/), with
    `jaxtrade train` overrides (agent=..., env.num_envs=...)."""
    from experiments import common

    cfg = common.compose(list(overrides or []))
    frame = common.load_frame(cfg["data"])
    env, env_params = common.build_env(cfg, common.build_market(cfg, frame))
    num_envs = common.resolve_num_envs(cfg, env, env_params)
    config = common.agent_config(cfg, env, env_params, num_envs)
    per_update = agents.make_agent(config, env, env_params).steps_per_update
    changes = {"total_steps": num_updates * per_update}
    if "updates_per_chunk" in {f.name for f in dataclasses.fields(config)}:
        changes["updates_per_chunk"] = num_updates
    config = dataclasses.replace(config, **changes)
    compile_s, run_s, steps = time_jax(config, env, env_params)
    rate = steps / run_s
    net = config.network
    shape = (f"{config.rollout_len} steps, {config.update_epochs} epochs x "
             f"{config.num_minibatches} minibatches, " if hasattr(config, "update_epochs")
             else f"{per_update} env-steps per update, ")
    line = (f"default config ({config.name}, {cfg['data'].get('source', 'data')}, "
            f"{num_envs} envs x {shape}{net.torso} {list(net.hidden_sizes)}, "
            f"final_observation={getattr(env, 'final_observation', False)}): "
            f"{rate:,.0f} env-steps/s, compile {compile_s:.1f} s")
    result = {"agent": config.name, "num_envs": num_envs, "env_steps": steps,
              "env_steps_per_s": rate, "run_s": run_s, "compile_s": compile_s,
              "overrides": list(overrides or [])}
    if net.torso == "mlp" and not net.shared_torso and hasattr(config, "update_epochs"):
        obs_dim = common.observation_size(env, env_params)
        sizes = [obs_dim, *net.hidden_sizes]
        actor = mlp_flops([*sizes, env.num_actions])
        critic = mlp_flops([*sizes, 1])
        # rollout: actor + critic forward, plus the critic on the final observation when
        # truncations are bootstrapped; update: epochs x (forward + backward ~ 3x forward).
        rollout = actor + critic * (2 if getattr(env, "final_observation", False) else 1)
        flops = rollout + 3 * config.update_epochs * (actor + critic)
        line += f", {flops:,.0f} FLOPs/env-step -> {flops * rate / 1e9:.2f} GFLOP/s"
        result["flops_per_env_step"] = flops
    print(line)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke test")
    parser.add_argument("--sb3-steps", type=int, default=3 * SAMPLES_PER_UPDATE)
    parser.add_argument("--jax-updates", type=int, default=40, help="updates of 2048 samples")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="vmapped seed counts timed against 1 seed (default 16; --quick 4)")
    parser.add_argument("--default-updates", type=int, default=8,
                        help="updates of the default training config to time")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="jaxtrade train override for the default config (repeatable)")
    parser.add_argument("--skip-default", action="store_true")
    parser.add_argument("--skip-sb3", action="store_true")
    parser.add_argument("--skip-like", action="store_true",
                        help="skip the like-for-like PPO run (and so the SB3 peer)")
    parser.add_argument("--skip-seeds", action="store_true", help="skip the seeds comparison")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="also write the figures to this JSON file")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress shows up when piped to a file
    if args.quick:
        args.sb3_steps, args.jax_updates, args.default_updates = 2048, 4, 2
    args.seeds = args.seeds or ([4] if args.quick else [16])

    device = jax.devices()[0]
    print(f"device: {device.device_kind} ({jax.default_backend()}), "
          f"{os.cpu_count()} cores, {platform.machine()}; jax {jax.__version__}")
    results: dict = {"device": {"platform": device.platform, "kind": device.device_kind,
                                "count": jax.device_count()}, "jax": jax.__version__}
    env, env_params = jax_env()

    # 1. Like for like: 64 envs x 32 steps = 2048 samples, 10 epochs, minibatch 64.
    if not args.skip_like:
        like = ppo_config(64, 32, args.jax_updates * SAMPLES_PER_UPDATE, MINIBATCH)
        compile_s, run_s, steps = time_jax(like, env, env_params)
        jax_rate = steps / run_s
        flops = flops_per_env_step(WINDOW * 2, 2, EPOCHS)
        print(f"jaxtrade PPO like-for-like: {jax_rate:,.0f} env-steps/s ({steps} steps in "
              f"{run_s:.2f} s), compile {compile_s:.1f} s")
        print(f"  network FLOPs per env-step {flops:,.0f} -> "
              f"{flops * jax_rate / 1e9:.2f} GFLOP/s")
        results["like_for_like"] = {"env_steps_per_s": jax_rate, "env_steps": steps,
                                    "run_s": run_s, "compile_s": compile_s}
        if not args.skip_sb3:
            sb3_rate = time_sb3(args.sb3_steps)
            print(f"SB3 PPO (CPU torch) on gym-anytrading StocksEnv: {sb3_rate:,.0f} "
                  f"env-steps/s ({args.sb3_steps} steps)")
            print(f"RATIO jaxtrade / SB3 = {jax_rate / sb3_rate:.1f}x (goal >= 100x)")
            results["sb3_env_steps_per_s"] = sb3_rate

    # 2. Seeds: S vmapped seeds vs 1 seed, same program shape.
    if not args.skip_seeds:
        seed_cfg = ppo_config(64, 32, max(2, args.jax_updates // 4) * SAMPLES_PER_UPDATE,
                              MINIBATCH)
        _, one_s, _ = time_jax(seed_cfg, env, env_params)
        results["seeds_wall_s"] = {"1": one_s}
        for seeds in args.seeds:
            _, many_s, _ = time_jax(seed_cfg, env, env_params, seeds=seeds)
            print(f"seeds: {seeds} vmapped {many_s:.2f} s vs 1 seed {one_s:.2f} s -> "
                  f"{many_s / one_s:.2f}x wall time for {seeds}x the runs")
            results["seeds_wall_s"][str(seeds)] = many_s

    # 3. The default training configuration (what `jaxtrade train` / `make run` trains).
    if not args.skip_default:
        results["default"] = default_config(args.default_updates, args.override)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")

if __name__ == "__main__":
    main()
