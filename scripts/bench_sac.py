"""Continuous off-policy training throughput: jaxtrade SAC / TD3 vs Stable-Baselines3 and rejax.

Like for like, measured in the same run, every side with the same settings (`Shared`):
  network   actor and two critics MLP 256 x 256, ReLU
  replay    100,000 transitions, uniform, minibatch 256, 1-step targets
  clock     1 env; one gradient step per env step after `learning_starts` env steps;
            Polyak tau 0.005 every gradient step (TD3: every second, with its actor)
  optimizer Adam 3e-4 (actor, critics, SAC's temperature)

1. SAC and TD3 on Pendulum-v1: SB3 on Gymnasium's Pendulum-v1 (torch, CPU, one thread) vs
   jaxtrade's `agents.make_train` on gymnax's Pendulum-v1 (num_envs 1, rollout_len 1,
   gradient_steps 1).
   The dense bound: SAC's gradient-step FLOPs over this machine's measured matmul rate,
   the most env-steps/s any implementation reaches here at one gradient step per env step.
2. rejax's SAC on gymnax Pendulum-v1 with the same settings, when `--rejax-python` names a venv
   where rejax is installed (it pins other jax/gymnax versions, so it runs as a subprocess).
3. Vmapped seeds: jaxtrade SAC with 1, 8 and 32 seeds in one program (`jax.vmap(train)`),
   wall time relative to one seed; replay-based agents gain less from vmap than PPO since each
   seed's minibatch steps are serial.

    python scripts/bench_sac.py                       # ~6 minutes on 2 loaded CPU cores
    python scripts/bench_sac.py --rejax-python /tmp/rejax-venv/bin/python
    python scripts/bench_sac.py --quick               # smoke run

Env steps per second exclude compilation (printed separately); a jaxtrade figure is the best
of `--repeats` runs of the compiled program after a warm-up. SB3 figures time `learn()`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("JAX_PLATFORMS", "cpu")
import jaxtrade  # noqa: E402, F401  (sets XLA:CPU flags before JAX starts)

REJAX_WORKER = "--rejax-worker"


@dataclasses.dataclass(frozen=True)
class Shared:
    hidden: tuple[int, ...] = (256, 256)
    buffer_size: int = 100_000
    batch_size: int = 256
    learning_starts: int = 1_000
    learning_rate: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005


def jaxtrade_config(algo: str, shared: Shared, steps: int) -> Any:
    import agents

    lr = shared.learning_rate
    hparams: dict[str, Any] = {"actor_lr": lr, "critic_lr": lr, "gamma": shared.gamma,
                               "tau": shared.tau}
    if algo == "sac":
        hparams["alpha_lr"] = lr
    return agents.config_from_dict({
        "name": algo, "num_envs": 1, "rollout_len": 1, "gradient_steps": 1,
        "total_steps": steps, "batch_size": shared.batch_size,
        "buffer_size": shared.buffer_size, "learning_starts": shared.learning_starts,
        "updates_per_chunk": 1_000,
        "network": {"hidden_sizes": list(shared.hidden), "activation": "relu"},
        "hparams": hparams})


def time_jaxtrade(algo: str, shared: Shared, steps: int, repeats: int,
                  seeds: int = 1) -> dict[str, float]:
    """Compile, warm up and time `repeats` runs of jaxtrade's `algo` (vmapped over `seeds`)."""
    import gymnax
    import jax
    import numpy as np

    import agents
    from agents.common.types import find_metric

    env, env_params = gymnax.make("Pendulum-v1")
    config = jaxtrade_config(algo, shared, steps)
    train = agents.make_train(config, env, env_params)
    program = jax.jit(jax.vmap(train)) if seeds > 1 else jax.jit(train)
    keys = (lambda i: jax.random.split(jax.random.key(i), seeds)) if seeds > 1 else \
        (lambda i: jax.random.key(i))
    start = time.perf_counter()
    compiled = program.lower(keys(0)).compile()
    compile_s = time.perf_counter() - start
    out = jax.block_until_ready(compiled(keys(0)))
    best = float("inf")
    for i in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(compiled(keys(i + 1)))
        best = min(best, time.perf_counter() - start)
    agent = agents.make_agent(config, env, env_params)
    done = agent.num_updates * agent.steps_per_update
    returns = np.asarray(find_metric(out.metrics, "episode_return")).reshape(seeds, -1)
    tail = returns[:, -max(1, returns.shape[1] // 10):]
    return {"compile_s": compile_s, "run_s": best, "env_steps": done * seeds,
            "rate": done * seeds / best, "final_return": float(tail.mean())}


def time_sb3(algo: str, shared: Shared, steps: int) -> float:
    """Env steps per second of SB3 SAC / TD3 learn() on Gymnasium's Pendulum-v1."""
    import gymnasium as gym
    import torch
    from stable_baselines3 import SAC, TD3

    torch.set_num_threads(1)  # small MLPs on 1 env: one thread is fastest and avoids contention
    model_class = SAC if algo == "sac" else TD3
    extra: dict[str, Any] = {"policy_delay": 2} if algo == "td3" else {}
    model = model_class(
        "MlpPolicy", gym.make("Pendulum-v1"), learning_rate=shared.learning_rate,
        buffer_size=shared.buffer_size, learning_starts=shared.learning_starts,
        batch_size=shared.batch_size, tau=shared.tau, gamma=shared.gamma, train_freq=1,
        gradient_steps=1, policy_kwargs={"net_arch": list(shared.hidden)}, device="cpu",
        seed=0, verbose=0, **extra)
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    return model.num_timesteps / (time.perf_counter() - start)


def dense_bound(shared: Shared, obs_dim: int = 3, action_dim: int = 1) -> dict[str, float]:
    """What this machine's dense-layer rate allows: SAC's gradient-step FLOPs (counted) over
    the measured GFLOP/s of a [batch, hidden] x [hidden, hidden] matmul chain.

    Per gradient step SAC runs (forward-pass equivalents, backward = 2 forwards): the target
    actor + 2 target critics (3), 2 critics forward and backward (6), the actor forward and
    backward (3) and the 2 critics forward and back to the action for the actor loss (4):
    4 actor + 12 critic forwards of the batch.
    """
    import jax
    import jax.numpy as jnp

    def mlp_flops(sizes: list[int]) -> int:
        return 2 * shared.batch_size * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))

    hidden = list(shared.hidden)
    actor = mlp_flops([obs_dim, *hidden, 2 * action_dim])
    critic = mlp_flops([obs_dim + action_dim, *hidden, 1])
    step_flops = 4 * actor + 12 * critic
    width, links = hidden[-1], 64
    x = jnp.ones((shared.batch_size, width), jnp.float32)
    w = jnp.full((width, width), 1.0 / width, jnp.float32)
    chain = jax.jit(lambda x, w: jax.lax.fori_loop(0, links, lambda _, h: h @ w, x))
    jax.block_until_ready(chain(x, w))
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        jax.block_until_ready(chain(x, w))
        best = min(best, time.perf_counter() - start)
    rate = links * 2 * shared.batch_size * width * width / best
    return {"step_mflop": step_flops / 1e6, "dense_gflops": rate / 1e9,
            "max_gradient_steps_per_s": rate / step_flops}


# ---- rejax side (runs in its own venv) -------------------------------------------------------


def rejax_worker(raw: str) -> None:
    """Time rejax's SAC on gymnax Pendulum-v1; print one JSON line. Imports only rejax's deps."""
    from importlib.metadata import version

    import jax
    import jax.numpy as jnp
    import rejax

    args = json.loads(raw)
    shared = Shared(**{**args["shared"], "hidden": tuple(args["shared"]["hidden"])})
    steps, repeats = args["steps"], args["repeats"]
    algo = rejax.get_algo("sac").create(
        env="Pendulum-v1", agent_kwargs={"activation": "relu"},
        hidden_layer_sizes=shared.hidden, num_envs=1, buffer_size=shared.buffer_size,
        fill_buffer=shared.learning_starts, batch_size=shared.batch_size, num_epochs=1,
        learning_rate=shared.learning_rate, gamma=shared.gamma, total_timesteps=steps,
        eval_freq=steps, skip_initial_evaluation=True,
        polyak=1.0 - shared.tau,  # rejax's polyak is the weight kept on the target
    )
    # Evaluation is not training: the default callback would play greedy episodes.
    algo = algo.replace(eval_callback=lambda _algo, _ts, _rng: jnp.zeros(()))
    key = jax.random.key(0)
    start = time.perf_counter()
    compiled = jax.jit(algo.train).lower(key).compile()
    compile_s = time.perf_counter() - start
    ts, _ = jax.block_until_ready(compiled(key))
    best = float("inf")
    for i in range(repeats):
        start = time.perf_counter()
        ts, _ = jax.block_until_ready(compiled(jax.random.key(i + 1)))
        best = min(best, time.perf_counter() - start)
    done = int(ts.global_step)
    print(json.dumps({"env_steps": done, "run_s": best, "compile_s": compile_s,
                      "rate": done / best, "jax": jax.__version__,
                      "rejax": version("rejax"), "gymnax": version("gymnax")}))


def time_rejax(python: str, shared: Shared, steps: int, repeats: int) -> dict[str, Any] | None:
    payload = json.dumps({"shared": dataclasses.asdict(shared), "steps": steps,
                          "repeats": repeats})
    done = subprocess.run([python, str(Path(__file__).resolve()), REJAX_WORKER, payload],
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        print(f"rejax side failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == REJAX_WORKER:
        rejax_worker(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10_000,
                        help="env steps per timed run, every side (default 10,000)")
    parser.add_argument("--seed-steps", type=int, default=5_000,
                        help="env steps per seed in the vmapped-seeds scaling (default 5,000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--repeats", type=int, default=2,
                        help="timed runs of each compiled jaxtrade/rejax program (best counts)")
    parser.add_argument("--rejax-python", default=None,
                        help="python of a venv with rejax installed (skipped when absent)")
    parser.add_argument("--skip-sb3", action="store_true")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    shared = Shared()
    if args.quick:
        shared = dataclasses.replace(shared, hidden=(32, 32), learning_starts=200)
        args.steps, args.seed_steps, args.seeds, args.repeats = 1_000, 1_000, [1, 2], 1

    import jax

    print(f"machine: {platform.machine()} {os.cpu_count()} cores, jax {jax.__version__} "
          f"({jax.default_backend()}), python {platform.python_version()}")
    print(f"settings: {shared}, {args.steps} env steps per run")
    results: dict[str, Any] = {"shared": dataclasses.asdict(shared), "steps": args.steps}
    for algo in ("sac", "td3"):
        ours = time_jaxtrade(algo, shared, args.steps, args.repeats)
        results[f"jaxtrade_{algo}"] = ours
        print(f"jaxtrade {algo}: {ours['rate']:,.0f} env-steps/s (compile {ours['compile_s']:.1f}"
              f" s, run {ours['run_s']:.2f} s, final return {ours['final_return']:.0f})")
        if not args.skip_sb3:
            peer = time_sb3(algo, shared, args.steps)
            results[f"sb3_{algo}"] = peer
            print(f"SB3 {algo}: {peer:,.0f} env-steps/s -> jaxtrade / SB3 = "
                  f"{ours['rate'] / peer:.1f}x (goal >= 20x)")
    if args.rejax_python:
        peer = time_rejax(args.rejax_python, shared, args.steps, args.repeats)
        if peer is not None:
            results["rejax_sac"] = peer
            ours = results["jaxtrade_sac"]["rate"]
            print(f"rejax {peer['rejax']} sac (jax {peer['jax']}, gymnax {peer['gymnax']}): "
                  f"{peer['rate']:,.0f} env-steps/s (compile {peer['compile_s']:.1f} s) -> "
                  f"jaxtrade / rejax = {ours / peer['rate']:.2f}x (goal >= 1)")
    bound = dense_bound(shared)
    results["dense_bound"] = bound
    print(f"dense bound: a SAC gradient step is {bound['step_mflop']:.0f} MFLOP of dense layers;"
          f" this machine multiplies at {bound['dense_gflops']:.0f} GFLOP/s, so at most "
          f"{bound['max_gradient_steps_per_s']:,.0f} gradient steps/s (one per env step)")
    if "sb3_sac" in results:
        need = 20 * results["sb3_sac"] * bound["step_mflop"] / 1e3
        print(f"20x SB3 SAC would need {20 * results['sb3_sac']:,.0f} gradient steps/s = "
              f"{need:,.0f} GFLOP/s of dense layers")
    base = None
    for seeds in args.seeds:
        timed = time_jaxtrade("sac", shared, args.seed_steps, args.repeats, seeds)
        results[f"seeds_{seeds}"] = timed
        base = base or timed["run_s"]
        print(f"jaxtrade sac x {seeds} vmapped seeds: {timed['run_s']:.2f} s "
              f"({timed['run_s'] / base:.2f}x one seed's wall time, "
              f"{timed['rate']:,.0f} env-steps/s over all seeds)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
