"""Off-policy training throughput: jaxtrade DQN / QR-DQN vs Stable-Baselines3, sb3-contrib, rejax.

Like for like, measured in the same run, every side with the same settings (`Shared`):
  network      MLP 64 x 64, ReLU (SB3's DQN and QR-DQN default), 32 quantiles for QR-DQN
  replay       100,000 transitions, uniform, minibatch 64, 1-step targets, no double Q
  clock        learning starts after 1,000 env steps; one gradient step per 4 env steps
               (summed over envs; DQNConfig's own ratio in the last layout below); hard
               target copy every 1,024 env steps (rounded down to whole updates)
  exploration  epsilon 1 -> 0.05 over the first 10% of the steps; Adam 1e-4, grad norm 10

1. Trading, against SB3 DQN and sb3-contrib QR-DQN on gym-anytrading's `stocks-v0` (GOOGL
   daily closes, a window of 30 bars of close and close difference, 2 positions). jaxtrade
   runs `agents.config_from_dict({...})` + `agents.make_train` on `envs.make("trading")` over
   the same closes and features (its observation also carries the 5 portfolio values, and it
   pays commission, spread and slippage every step). Layouts, with N = DQNConfig().num_envs
   and each side stepping its envs the same number of times between gradient steps:
     1 env        SB3 1 env, train_freq 4 / jaxtrade num_envs 1, rollout_len 4; 1 gradient step
     N envs       SB3 DummyVecEnv(N) / jaxtrade num_envs N, 4 env steps per gradient step
                  (N = 8: 1 step of each env, then 2 gradient steps)
     N, default   DQNConfig's own rollout_len and gradient_steps, when they differ from that
2. gymnax CartPole-v1, against rejax's DQN (8 envs, 2 gradient steps per iteration, the same
   `Shared` settings), run with `--rejax-python` (a venv where rejax is installed; rejax 0.1.3
   wants gymnax < 1.0, so that venv has gymnax 0.0.9) as a subprocess of this script. Both
   sides run at each `--cartpole-buffers` size, since rejax's time grows with its buffer.
3. Where jaxtrade's time goes in the 1-env trading DQN run: the same config with learning
   only in its last update, and pieces jitted alone (collect, replay add, replay sample +
   observation rebuild).
4. Replay memory of a 1,000,000-transition DQN buffer on the default trading configuration
   (configs/, sp500_daily, 1,989-float observations) after `agent.init`, beside its raw size.

    python scripts/bench_offpolicy.py                     # ~13 minutes on 2 loaded CPU cores
    python scripts/bench_offpolicy.py --rejax-python /tmp/rejax-venv/bin/python
    python scripts/bench_offpolicy.py --quick             # smoke run

Env steps per second exclude compilation (printed separately) and model construction; a
jaxtrade figure is the best of `--repeats` runs of the compiled program after a warm-up.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("JAX_PLATFORMS", "cpu")
import jaxtrade  # noqa: E402, F401  (sets XLA:CPU flags before JAX starts)

WINDOW = 30  # gym-anytrading's observation window, as in scripts/bench_train.py
CARTPOLE_ENVS = 8
REJAX_WORKER = "--rejax-worker"


@dataclasses.dataclass(frozen=True)
class Shared:
    """The settings every side of a comparison runs with."""

    hidden: tuple[int, ...] = (64, 64)
    batch_size: int = 64
    buffer_size: int = 100_000
    learning_starts: int = 1_000
    env_steps_per_gradient: int = 4  # summed over envs (SB3's train_freq 4 at one env)
    # env steps between hard copies of the online network, rounded down to whole updates
    # (`target_interval`) and given to every side as that number
    target_update_steps: int = 1_024
    learning_rate: float = 1e-4
    gamma: float = 0.99
    exploration_fraction: float = 0.1
    epsilon_end: float = 0.05
    max_grad_norm: float = 10.0
    num_quantiles: int = 32


def layout(shared: Shared, num_envs: int) -> tuple[int, int]:
    """(rollout_len, gradient_steps) per update: the fewest steps per env and gradient steps
    whose ratio is `env_steps_per_gradient` (8 envs, 4: 1 step then 2 gradient steps)."""
    per = shared.env_steps_per_gradient
    common = math.gcd(num_envs, per)
    return per // common, num_envs // common


def target_interval(shared: Shared, num_envs: int) -> tuple[int, int]:
    """(updates, env steps) between target copies: `target_update_steps` rounded down to
    whole updates, so each side copies at the same env step."""
    rollout_len, _ = layout(shared, num_envs)
    per_update = num_envs * rollout_len
    updates = max(1, shared.target_update_steps // per_update)
    return updates, updates * per_update


def trading_layouts() -> list[tuple[int, int, str]]:
    """(num_envs, env steps per gradient step, label) of the trading comparisons: 1 env, the
    default num_envs at the same 4 env steps per gradient step, and DQNConfig's own layout."""
    from agents import DQNConfig

    default = DQNConfig()
    own = default.num_envs * default.rollout_len // default.gradient_steps
    rows = [(1, 4, ""), (default.num_envs, 4, " (DQNConfig's default num_envs)")]
    if own != 4:
        rows.append((default.num_envs, own, f" (DQNConfig's default layout: "
                                             f"{default.rollout_len} step(s) x "
                                             f"{default.num_envs} envs, "
                                             f"{default.gradient_steps} gradient step(s))"))
    return rows


# ---- jaxtrade side ---------------------------------------------------------------------------


def jaxtrade_config(algo: str, shared: Shared, num_envs: int, steps: int, **changes: Any) -> Any:
    """The agent config a user writes for these settings (`agents.config_from_dict`)."""
    import agents

    rollout_len, gradient_steps = layout(shared, num_envs)
    data: dict[str, Any] = {
        "name": algo,
        "num_envs": num_envs,
        "rollout_len": rollout_len,
        "gradient_steps": gradient_steps,
        "total_steps": steps,
        "batch_size": shared.batch_size,
        "buffer_size": shared.buffer_size,
        "learning_starts": shared.learning_starts,
        "target_update_every": target_interval(shared, num_envs)[0],
        "n_step": 1,
        "double": False,  # SB3's DQN / QR-DQN and this rejax run bootstrap from max_a Q_target
        "anneal_lr": False,  # the peers keep the learning rate constant
        "network": {"hidden_sizes": list(shared.hidden), "activation": "relu"},
        "hparams": {
            "learning_rate": shared.learning_rate,
            "gamma": shared.gamma,
            "max_grad_norm": shared.max_grad_norm,
            "epsilon_start": 1.0,
            "epsilon_end": shared.epsilon_end,
            "epsilon_decay_fraction": shared.exploration_fraction,
            "tau": 1.0,
        },
    }
    if algo == "qrdqn":
        data["num_quantiles"] = shared.num_quantiles
    data.update(changes)
    return agents.config_from_dict(data)


@dataclasses.dataclass
class Timed:
    compile_s: float
    run_s: float  # best of the timed runs
    env_steps: int
    episode_return: float  # mean of the last logged updates, a sanity check that it learned

    @property
    def rate(self) -> float:
        return self.env_steps / self.run_s


def time_train(config: Any, env: Any, env_params: Any, repeats: int) -> Timed:
    """Compile `agents.make_train(config, ...)`, warm it up, and time `repeats` runs."""
    import jax
    import numpy as np

    import agents
    from agents.common.types import find_metric

    train = agents.make_train(config, env, env_params)
    key = jax.random.key(0)
    start = time.perf_counter()
    compiled = jax.jit(train).lower(key).compile()
    compile_s = time.perf_counter() - start
    out = jax.block_until_ready(compiled(key))  # warm-up: allocations, thread pools
    best = float("inf")
    for i in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(compiled(jax.random.key(i + 1)))
        best = min(best, time.perf_counter() - start)
    agent = agents.make_agent(config, env, env_params)
    returns = np.asarray(find_metric(out.metrics, "episode_return"))
    tail = returns[-max(1, len(returns) // 10):]
    return Timed(compile_s, best, agent.num_updates * agent.steps_per_update,
                 float(np.mean(tail)))


def trading_env() -> tuple[Any, Any]:
    """jaxtrade's trading env over gym-anytrading's GOOGL closes with its two features."""
    import numpy as np

    import envs
    from jaxtrade.market import from_arrays

    close = googl_close()
    diff = np.insert(np.diff(close), 0, 0.0)
    market = from_arrays(close, features=np.stack([close, diff], axis=-1)[:, None, :])
    # include_portfolio stays on: with it off, TradingEnv.expand_observation fails on the
    # empty portfolio part when the replay buffer rebuilds sampled observations.
    return envs.make(
        "trading", market, window_bars=WINDOW, discrete_levels=(-1.0, 1.0),
        include_portfolio=True, episode_bars=len(close) - WINDOW - 1,
        final_observation=True,  # SB3 bootstraps truncated episode ends too
    )


def googl_close() -> Any:
    import numpy as np
    from gym_anytrading.datasets import STOCKS_GOOGL

    return STOCKS_GOOGL["Close"].to_numpy(dtype=np.float64)


# ---- Stable-Baselines3 / sb3-contrib side ---------------------------------------------------


def time_sb3(algo: str, shared: Shared, num_envs: int, steps: int) -> float:
    """Env steps per second of SB3 DQN / sb3-contrib QR-DQN learn() on stocks-v0."""
    import gym_anytrading  # noqa: F401  (registers stocks-v0)
    import gymnasium as gym
    import torch
    from gym_anytrading.datasets import STOCKS_GOOGL
    from stable_baselines3.common.vec_env import DummyVecEnv

    torch.set_num_threads(1)  # small MLPs: one thread is fastest and avoids contention
    env_kwargs = {"df": STOCKS_GOOGL, "window_size": WINDOW,
                  "frame_bound": (WINDOW, len(STOCKS_GOOGL))}
    # N envs step one after another in this process (SB3's usual vectorization for cheap
    # envs); make_vec_env cannot build stocks-v0 (its render_mode check fails).
    env = gym.make("stocks-v0", **env_kwargs) if num_envs == 1 else \
        DummyVecEnv([lambda: gym.make("stocks-v0", **env_kwargs)] * num_envs)
    rollout_len, gradient_steps = layout(shared, num_envs)
    policy_kwargs: dict[str, Any] = {"net_arch": list(shared.hidden)}
    if algo == "qrdqn":
        from sb3_contrib import QRDQN as model_class

        policy_kwargs["n_quantiles"] = shared.num_quantiles
    else:
        from stable_baselines3 import DQN as model_class
    model = model_class(
        "MlpPolicy", env, learning_rate=shared.learning_rate, buffer_size=shared.buffer_size,
        learning_starts=shared.learning_starts, batch_size=shared.batch_size, tau=1.0,
        gamma=shared.gamma, train_freq=rollout_len, gradient_steps=gradient_steps,
        target_update_interval=target_interval(shared, num_envs)[1],
        exploration_fraction=shared.exploration_fraction, exploration_initial_eps=1.0,
        exploration_final_eps=shared.epsilon_end, max_grad_norm=shared.max_grad_norm,
        policy_kwargs=policy_kwargs, device="cpu", seed=0, verbose=0,
    )
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    return model.num_timesteps / (time.perf_counter() - start)


# ---- rejax side (runs in its own venv) -------------------------------------------------------


def rejax_worker(raw: str) -> None:
    """Time rejax's DQN on gymnax CartPole-v1; print one JSON line. Imports only rejax's deps."""
    from importlib.metadata import version

    import jax
    import jax.numpy as jnp
    import rejax

    args = json.loads(raw)
    shared = Shared(**{**args["shared"], "hidden": tuple(args["shared"]["hidden"])})
    num_envs, steps, repeats = args["num_envs"], args["steps"], args["repeats"]
    rollout_len, gradient_steps = layout(shared, num_envs)
    if rollout_len != 1:
        raise SystemExit("rejax steps each env once per iteration: num_envs must be a "
                         "multiple of env_steps_per_gradient")
    algo = rejax.get_algo("dqn").create(
        env="CartPole-v1", agent="QNetwork", agent_kwargs={"activation": "relu"},
        num_envs=num_envs, buffer_size=shared.buffer_size, fill_buffer=shared.learning_starts,
        batch_size=shared.batch_size, num_epochs=gradient_steps,
        learning_rate=shared.learning_rate, max_grad_norm=shared.max_grad_norm,
        gamma=shared.gamma, total_timesteps=steps, eval_freq=steps,
        skip_initial_evaluation=True, target_update_freq=target_interval(shared, num_envs)[1],
        polyak=0.0,  # 0: the target becomes the online network (a hard copy)
        eps_start=1.0, eps_end=shared.epsilon_end,
        exploration_fraction=shared.exploration_fraction, ddqn=False,
    )
    # Evaluation is not training: the default callback would play 128 greedy episodes.
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
                      "rejax": version("rejax"),
                      "gymnax": version("gymnax")}))


def time_rejax(python: str, shared: Shared, num_envs: int, steps: int,
               repeats: int) -> dict[str, Any] | None:
    payload = json.dumps({"shared": dataclasses.asdict(shared), "num_envs": num_envs,
                          "steps": steps, "repeats": repeats})
    done = subprocess.run([python, str(Path(__file__).resolve()), REJAX_WORKER, payload],
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        print(f"rejax side failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- where jaxtrade's time goes -------------------------------------------------------------


def time_pieces(config: Any, env: Any, env_params: Any, num_updates: int) -> dict[str, float]:
    """Seconds of `num_updates` iterations of each piece jitted alone, on the agent's own
    network, codec and buffer sizes: collect (env steps + acting), replay add, and one
    minibatch sample + observation rebuild per iteration."""
    import jax
    import jax.numpy as jnp

    import agents
    from agents.common.replay import make_item, make_replay, obs_codec
    from agents.common.rollout import collect

    agent = agents.make_agent(config, env, env_params)
    state = jax.jit(agent.init)(jax.random.key(0), None, env_params)
    codec = obs_codec(env)
    replay = make_replay(config.buffer_size, config.num_envs, config.batch_size, config.n_step)
    network = agent.network

    def policy(carry, obs, env_state, start, key):
        # The acting cost of an epsilon-greedy step: one forward pass and a random draw.
        greedy = jnp.argmax(network.apply(state.params, obs), axis=-1).astype(jnp.int32)
        explore_key, action_key = jax.random.split(key)
        random = jax.random.randint(action_key, greedy.shape, 0, env.num_actions, jnp.int32)
        return carry, jnp.where(jax.random.uniform(explore_key, greedy.shape) < 0.05,
                                random, greedy), None

    def record(step, aux, carry):
        return make_item(codec, step)

    def collect_only(runner, rng):
        def body(c, _):
            runner, rng, _, records = collect(env, env_params, c[0], c[1], policy, (), record,
                                              config.rollout_len)
            return (runner, rng), None
        return jax.lax.scan(body, (runner, rng), None, num_updates)[0]

    _, _, _, records = collect(env, env_params, state.runner, state.rng, policy, (), record,
                               config.rollout_len)

    def add_only(buffer, records):
        return jax.lax.scan(lambda b, _: (replay.add(b, records), None), buffer, None,
                            num_updates)[0]

    def sample_only(buffer, key):
        def body(total, key):
            items, _, _ = replay.sample(buffer, key)
            obs = codec.decode(jax.tree.map(lambda x: x[:, 0], items["obs"]), env_params)
            nxt = codec.decode(jax.tree.map(lambda x: x[:, 0], items["next_obs"]), env_params)
            return total + obs.sum() + nxt.sum(), None
        return jax.lax.scan(body, jnp.zeros(()), jax.random.split(key, num_updates))[0]

    def timed(fn, *args) -> float:
        compiled = jax.jit(fn).lower(*args).compile()
        jax.block_until_ready(compiled(*args))
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        return time.perf_counter() - start

    collect_s = timed(collect_only, state.runner, state.rng)
    add_s = timed(add_only, state.buffer, records)
    filled = jax.jit(add_only)(state.buffer, records)  # sample from a buffer with data in it
    sample_s = timed(sample_only, filled, jax.random.key(1))
    return {"collect_s": collect_s, "add_s": add_s, "sample_decode_s": sample_s}


def time_split(shared: Shared, env: Any, env_params: Any, steps: int, repeats: int,
               full: Timed) -> dict[str, Any]:
    """Where the 1-env trading DQN run's time goes.

    The same config with learning only in its last update gives the cost of everything but
    learning (env steps, acting, replay add, the skipped branch, target update, metrics); the
    full run minus that is the cost of learning. Pieces jitted alone then split each side:
    collect and replay add out of the first, minibatch sampling + observation rebuild out of
    the second; what they do not explain is the program around them (scan, cond, target
    update, metrics) and the gradient step (forward, backward, Adam)."""
    import agents

    config = jaxtrade_config("dqn", shared, 1, steps)
    agent = agents.make_agent(config, env, env_params)
    num_updates, per_update = agent.num_updates, agent.steps_per_update
    last_step = num_updates * per_update
    no_learn = time_train(jaxtrade_config("dqn", shared, 1, steps,
                                          learning_starts=last_step - per_update),
                          env, env_params, repeats)
    learning_updates = num_updates - (-(-shared.learning_starts // per_update)) + 1
    grad_steps = learning_updates * config.gradient_steps
    pieces = time_pieces(config, env, env_params, num_updates)
    sample_s = pieces["sample_decode_s"] / num_updates * grad_steps
    learning_s = full.run_s - no_learn.run_s
    parts = {
        "env steps + acting (collect)": pieces["collect_s"],
        "replay add": pieces["add_s"],
        "loop around them (scan, cond, target, metrics)":
            no_learn.run_s - pieces["collect_s"] - pieces["add_s"],
        "replay sample + observation rebuild": sample_s,
        "gradient step (forward, backward, Adam)": learning_s - sample_s,
    }
    return {"run_s": full.run_s, "no_learning_run_s": no_learn.run_s,
            "gradient_steps": grad_steps, "env_steps": last_step,
            "learning_us_per_gradient_step": learning_s / grad_steps * 1e6,
            "sample_decode_us": pieces["sample_decode_s"] / num_updates * 1e6,
            "parts_s": parts}


# ---- replay memory ---------------------------------------------------------------------------


def replay_memory(buffer_size: int = 1_000_000) -> dict[str, Any]:
    """Bytes of the DQN buffer state after `agent.init` on the default trading configuration,
    next to the same transitions stored with raw observations."""
    import jax
    import numpy as np

    import agents
    from agents.common.replay import buffer_bytes
    from experiments import common

    cfg = common.compose([])
    env, env_params = common.build_env(cfg, common.build_market(cfg, common.load_frame(
        cfg["data"])))
    config = agents.config_from_dict({"name": "dqn", "buffer_size": buffer_size})
    agent = agents.make_agent(config, env, env_params)
    state = jax.block_until_ready(jax.jit(agent.init)(jax.random.key(0), None, env_params))
    obs_floats = common.observation_size(env, env_params)
    # obs and next_obs as float32, action int32, reward float32, two bool flags
    raw = buffer_size * (2 * obs_floats * 4 + 4 + 4 + 1 + 1)
    got = buffer_bytes(state.buffer)
    shapes = {"/".join(str(getattr(k, "key", k)) for k in path): list(np.shape(x))
              for path, x in jax.tree_util.tree_leaves_with_path(state.buffer.experience)}
    return {"transitions": buffer_size, "num_envs": config.num_envs, "obs_floats": obs_floats,
            "buffer_bytes": got, "raw_bytes": raw, "shapes": shapes}


# ---- main ------------------------------------------------------------------------------------


def ratio_line(name: str, ours: float, peer: float, goal: str) -> str:
    return f"RATIO {name} = {ours / peer:.1f}x ({ours:,.0f} vs {peer:,.0f} env-steps/s; {goal})"


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == REJAX_WORKER:
        rejax_worker(sys.argv[2])
        return
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="Prints RATIO lines: jaxtrade env-steps/s over each peer's, same run.")
    parser.add_argument("--steps", type=int, default=30_000,
                        help="env steps per run and side (jaxtrade rounds down to whole chunks)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="timed runs of each compiled jaxtrade/rejax program (best counts)")
    parser.add_argument("--rejax-python", default=None, metavar="PATH",
                        help="python of a venv with rejax installed (default: skip rejax)")
    parser.add_argument("--cartpole-buffers", type=int, nargs="+", default=[100_000, 10_000],
                        metavar="N", help="replay sizes of the CartPole runs (default: "
                        "the shared 100,000, and 10,000)")
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke test")
    parser.add_argument("--skip-sb3", action="store_true", help="skip the trading comparison")
    parser.add_argument("--skip-qrdqn", action="store_true", help="DQN only on trading")
    parser.add_argument("--skip-split", action="store_true", help="skip the time split")
    parser.add_argument("--skip-memory", action="store_true", help="skip the replay memory")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="also write the figures to this JSON file")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress shows up when piped to a file
    if args.quick:
        args.steps, args.repeats = 4_000, 1
    shared = Shared()

    import jax

    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), "
          f"{os.cpu_count()} cores, {platform.machine()}; jax {jax.__version__}; "
          f"steps per run {args.steps:,}")
    print(f"shared settings: {dataclasses.asdict(shared)}")
    results: dict[str, Any] = {"jax": jax.__version__, "steps": args.steps,
                               "shared": dataclasses.asdict(shared), "trading": {}}

    # 1. Trading: jaxtrade vs SB3 DQN / sb3-contrib QR-DQN, 1 env and 8 envs.
    if not args.skip_sb3:
        env, env_params = trading_env()
        algos = ("dqn",) if args.skip_qrdqn else ("dqn", "qrdqn")
        layouts = trading_layouts()
        for num_envs, per_gradient, note in layouts:
            sized = dataclasses.replace(shared, env_steps_per_gradient=per_gradient)
            rollout_len, gradient_steps = layout(sized, num_envs)
            for algo in algos:
                config = jaxtrade_config(algo, sized, num_envs, args.steps)
                ours = time_train(config, env, env_params, args.repeats)
                peer = time_sb3(algo, sized, num_envs, ours.env_steps)
                peer_name = "SB3 DQN" if algo == "dqn" else "sb3-contrib QR-DQN"
                print(f"trading {algo}, {num_envs} env(s){note}: {rollout_len} step(s) x "
                      f"{num_envs} env(s) then {gradient_steps} gradient step(s): jaxtrade "
                      f"{ours.rate:,.0f} env-steps/s ({ours.env_steps:,} steps in "
                      f"{ours.run_s:.2f} s, compile {ours.compile_s:.1f} s, late episode "
                      f"return {ours.episode_return:.3f}); {peer_name} {peer:,.0f} env-steps/s")
                print(ratio_line(f"jaxtrade {algo} / {peer_name} at {num_envs} env(s), "
                                 f"{per_gradient} env steps per gradient step", ours.rate, peer,
                                 "goal >= 50x"))
                results["trading"][f"{algo}_{num_envs}x{per_gradient}"] = {
                    "num_envs": num_envs, "rollout_len": rollout_len,
                    "gradient_steps": gradient_steps, "env_steps_per_gradient": per_gradient,
                    "jaxtrade": dataclasses.asdict(ours), "jaxtrade_env_steps_per_s": ours.rate,
                    "peer": peer_name, "peer_env_steps_per_s": peer, "ratio": ours.rate / peer}
        for algo in algos:
            default_envs = layouts[1][0]
            one, many = (results["trading"].get(f"{algo}_{n}x4") for n in (1, default_envs))
            if one and many:
                print(ratio_line(f"jaxtrade {algo} at {default_envs} envs / {one['peer']} at "
                                 "1 env",
                                 many["jaxtrade_env_steps_per_s"], one["peer_env_steps_per_s"],
                                 "4 env steps per gradient step on both"))

        # 3. Where the time goes (1-env DQN, the strict like for like).
        if not args.skip_split and "dqn_1x4" in results["trading"]:
            full = Timed(**results["trading"]["dqn_1x4"]["jaxtrade"])
            split = time_split(shared, env, env_params, args.steps, args.repeats, full)
            results["split"] = split
            print(f"time split, trading dqn at 1 env ({split['env_steps']:,} env steps, "
                  f"{split['gradient_steps']:,} gradient steps, {split['run_s']:.2f} s): "
                  f"without learning {split['no_learning_run_s']:.2f} s; learning "
                  f"{split['learning_us_per_gradient_step']:.0f} us per gradient step, of "
                  f"which sample + rebuild {split['sample_decode_us']:.0f} us")
            for name, seconds in split["parts_s"].items():
                print(f"  {name:<45} {seconds:6.2f} s  {100 * seconds / split['run_s']:5.1f}%")

    # 2. CartPole: jaxtrade vs rejax, at each buffer size (rejax's time grows with it).
    import gymnax

    env, env_params = gymnax.make("CartPole-v1")
    results["cartpole"] = {}
    for buffer_size in args.cartpole_buffers:
        sized = dataclasses.replace(shared, buffer_size=buffer_size)
        ours = time_train(jaxtrade_config("dqn", sized, CARTPOLE_ENVS, args.steps), env,
                          env_params, args.repeats)
        print(f"CartPole-v1 dqn, buffer {buffer_size:,}, {CARTPOLE_ENVS} envs x 1 step then "
              f"{layout(sized, CARTPOLE_ENVS)[1]} gradient steps: jaxtrade {ours.rate:,.0f} "
              f"env-steps/s ({ours.env_steps:,} steps in {ours.run_s:.2f} s, compile "
              f"{ours.compile_s:.1f} s, late episode return {ours.episode_return:.1f})")
        found: dict[str, Any] = {"jaxtrade": dataclasses.asdict(ours),
                                 "jaxtrade_env_steps_per_s": ours.rate}
        results["cartpole"][str(buffer_size)] = found
        if args.rejax_python is None:
            print("rejax: skipped (pass --rejax-python PATH, the python of a venv with rejax: "
                  "python3 -m venv /tmp/rejax-venv && /tmp/rejax-venv/bin/pip install rejax "
                  "'gymnax==0.0.9')")
            continue
        peer = time_rejax(args.rejax_python, sized, CARTPOLE_ENVS, ours.env_steps,
                          args.repeats)
        if peer is not None:
            print(f"rejax {peer['rejax']} DQN (jax {peer['jax']}, gymnax {peer['gymnax']}): "
                  f"{peer['rate']:,.0f} env-steps/s ({peer['env_steps']:,} steps in "
                  f"{peer['run_s']:.2f} s, compile {peer['compile_s']:.1f} s)")
            print(ratio_line(f"jaxtrade dqn / rejax dqn on CartPole-v1, buffer {buffer_size:,}",
                             ours.rate, peer["rate"], "goal >= 1x"))
            found.update(rejax=peer, ratio=ours.rate / peer["rate"])

    # 4. Replay memory at the default trading configuration.
    if not args.skip_memory:
        memory = replay_memory()
        results["replay_memory"] = memory
        print(f"replay memory, {memory['transitions']:,} transitions of the default trading "
              f"env ({memory['obs_floats']:,}-float observations, {memory['num_envs']} envs): "
              f"{memory['buffer_bytes'] / 1e6:,.1f} MB on device vs "
              f"{memory['raw_bytes'] / 1e9:,.2f} GB raw "
              f"({memory['raw_bytes'] / memory['buffer_bytes']:,.0f}x smaller; goal <= 100 MB)")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
