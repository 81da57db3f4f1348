"""Benchmark the trading env: throughput vs peers, memory bandwidth, device memory per env.

Table 1, like for like: jaxtrade's env configured with gym-anytrading's observation (a window
of 30 bars of close and close difference, two positions short/long, no portfolio features)
stepped as N vmapped envs inside one jitted lax.scan, against gym-anytrading's StocksEnv and
against jaxtrade's own Gymnasium adapter, both stepped one env at a time in a Python loop (for
those, N envs cost N times one env: their steps/s does not depend on N, so one measurement
with min(N, 64) instances stepped round-robin serves every row).

Table 2, the default configuration (window 32, default features of jaxtrade.market.build on
the embedded S&P 500 daily data, flat layout with portfolio state): env-steps/s, the bytes one
step must move (observation written, market rows read, env state read and written, action
read, reward/done written) and the fraction of the machine's memory bandwidth it reaches; the
bandwidth is measured in the same run as a jitted copy of a large array (bytes read + written
per second).

Memory: live device bytes with 1 env and with N envs (state + observation buffer; the market
is allocated once and shared), and the per-env increment beyond the observation buffer.

The JAX loops are what a training loop runs: N envs vmapped in a jitted lax.scan, actions from
a cheap deterministic function of the state, auto-reset inside step; per-env keys are kept
(the env salts its random starts with the finished episode) or, in the "fresh keys" column,
split every step as PureJaxRL does (a threefry draw per env per step, which on CPU costs about
as much as the env step itself). Times exclude compilation; best of 3 repeats (wall clock)
and the median rate per CPU-second of this process (steadier on a shared machine).

The process runs with glibc's huge-page malloc like the `jaxtrade` command
(jaxtrade/hugepages.py; --no-hugepages keeps glibc's default): at 65,536 envs each step writes
a fresh 500 MB observation buffer, and faulting it in 4 KiB pages costs as much as the step.

    python scripts/bench_env.py            # full tables (a few minutes on 2 CPU cores)
    python scripts/bench_env.py --quick    # small sizes, smoke test
    python scripts/bench_env.py --envs 65536 --json env.json   # one size, figures to a file
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from functools import partial

from jaxtrade import hugepages

if "--no-hugepages" not in sys.argv:
    hugepages.reexec_with_hugepages()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import envs  # noqa: E402
from envs.gymnasium_adapter import GymnasiumTradingEnv  # noqa: E402
from jaxtrade.market import from_arrays  # noqa: E402


def load_frame():
    from jaxtrade.data import load_ohlcv

    return load_ohlcv("sp500_daily")


def default_market(frame):
    try:
        from jaxtrade.market import build
    except ImportError:  # before the feature pipeline existed: synthetic features
        close = frame["close"].to_numpy()
        rng = np.random.default_rng(0)
        return from_arrays(close, features=rng.normal(size=(len(close), 1, 32)))
    return build(frame)


def anytrading_market(close: np.ndarray):
    diff = np.diff(close, prepend=close[0])
    return from_arrays(close, features=np.stack([close, diff], axis=-1)[:, None, :])


@partial(jax.jit, static_argnums=(0, 3, 4))
def scan_steps(env, params, carry, num_steps: int, fresh_keys: bool):
    """num_steps vmapped steps; the observation is carried so it is really written.

    fresh_keys: split new per-env keys every step (the PureJaxRL habit, a threefry draw per
    env per step); otherwise each env keeps its key (the env salts its random episode starts
    with the finished episode, so starts still vary).
    """

    def body(carry, _):
        obs, state, keys = carry
        if fresh_keys:
            keys = jax.vmap(lambda k: jax.random.split(k)[0])(keys)
        ids = jnp.arange(state.t.shape[0])
        if env.action_mode == "discrete":
            actions = (state.t * 7 + ids) % env.num_actions
        else:
            actions = jnp.sin(state.t * 0.1 + ids)[:, None] * jnp.ones((1, env.num_assets))
        obs, state, reward, term, trunc, _ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
            keys, state, actions, params)
        return (obs, state, keys), None

    return jax.lax.scan(body, carry, None, length=num_steps)[0]


def jax_steps_per_s(env, params, num_envs: int, num_steps: int, fresh_keys: bool = False,
                    repeats: int = 3) -> tuple[float, float]:
    """(env-steps per wall second, best of `repeats`; env-steps per CPU second, median).

    On a shared machine the wall-clock rate depends on what else runs; the rate per CPU
    second of this process (all its threads) is the steadier figure to compare versions by.
    """
    keys = jax.random.split(jax.random.PRNGKey(0), num_envs)
    obs, state = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(keys, params)
    carry = (obs, state, keys)
    run = lambda c: scan_steps(env, params, c, num_steps, fresh_keys)
    carry = jax.block_until_ready(run(carry))  # compile + warm
    best, cpu = np.inf, []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        carry = jax.block_until_ready(run(carry))
        best = min(best, time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return num_envs * num_steps / best, num_envs * num_steps / float(np.median(cpu))


def loop_steps_per_s(make_env, num_envs: int, seconds: float) -> tuple[float, float]:
    """Python loop stepping `num_envs` Gymnasium-style envs round-robin, one at a time.

    Returns (steps per wall second, steps per CPU second of this process).
    """
    pool = [make_env() for _ in range(num_envs)]
    for i, e in enumerate(pool):
        e.reset(seed=i)
        e.step(e.action_space.sample())  # warm (jit compile for the adapter)
    steps, start, start_cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        for e in pool:
            _, _, term, trunc, _ = e.step(e.action_space.sample())
            if term or trunc:
                e.reset()
            steps += 1
    return (steps / (time.perf_counter() - start),
            steps / max(time.process_time() - start_cpu, 1e-9))


def bandwidth_bytes_per_s(megabytes: int) -> float:
    """Best of a jitted scale-copy (XLA) and numpy's copy (memcpy): bytes read + written / s."""
    x = jnp.ones((megabytes * 2**20 // 4,), jnp.float32)
    copy = jax.jit(lambda a: a * 1.0000001)  # read once, write once, cannot be elided
    host, host_out = np.ones(x.shape, np.float32), np.empty(x.shape, np.float32)
    jax.block_until_ready(copy(x))
    best = np.inf
    for _ in range(5):
        start = time.perf_counter()
        jax.block_until_ready(copy(x))
        best = min(best, time.perf_counter() - start)
        if jax.default_backend() == "cpu":
            start = time.perf_counter()
            np.copyto(host_out, host)
            best = min(best, time.perf_counter() - start)
    return 2 * x.nbytes / best


def step_bytes(env, params) -> dict[str, int]:
    """Bytes one env step must move at minimum."""
    m = params.market
    a, f, w = env.num_assets, env.num_features, env.window_bars
    _, state = env.reset(jax.random.PRNGKey(0), params)
    state_bytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(state))
    obs = int(np.prod(env.observation_shape)) * 4
    window = w * a * f * 4
    # Rows read besides the window: close/atr/volatility/regime at t, OHLC/valid/regime at t+1,
    # close at t+1 again for the next observation's portfolio state.
    rows = (3 * a + m.regime.shape[1] + 5 * a + m.regime.shape[1] + a) * 4
    action = 4 * (1 if env.action_mode == "discrete" else a)
    return {"obs_written": obs, "market_read": window + rows, "state_rw": 2 * state_bytes,
            "action_reward_done": action + 4 + 2, "total": obs + window + rows
            + 2 * state_bytes + action + 6}


def live_bytes() -> int:
    return sum(x.nbytes for x in jax.live_arrays())


def memory_per_env(env, params, big: int) -> dict[str, float]:
    base = live_bytes()
    reset = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))
    out1 = jax.block_until_ready(reset(jax.random.split(jax.random.PRNGKey(0), 1), params))
    one = live_bytes() - base
    del out1
    base = live_bytes()
    out_n = jax.block_until_ready(reset(jax.random.split(jax.random.PRNGKey(0), big), params))
    many = live_bytes() - base - big * 8  # minus the keys array we created for it
    obs_bytes = out_n[0].nbytes
    del out_n
    return {"bytes_1_env": one, f"bytes_{big}_envs": many,
            "per_env": (many - one) / (big - 1),
            "per_env_beyond_obs": (many - one - (obs_bytes - obs_bytes / big)) / (big - 1),
            "market_bytes": params.market.nbytes()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--envs", type=int, nargs="*", default=None,
                        help="env counts for table 1 (default 1 64 1024 4096 65536)")
    parser.add_argument("--loop-seconds", type=float, default=5.0,
                        help="seconds to run each Python-loop peer")
    parser.add_argument("--bandwidth-mb", type=int, default=1024,
                        help="array size for the bandwidth copy")
    parser.add_argument("--no-hugepages", action="store_true",
                        help="keep glibc's default malloc (4 KiB pages)")
    parser.add_argument("--json", default=None, metavar="PATH",
                        help="also write the figures to this JSON file")
    args = parser.parse_args()
    counts = args.envs or ([1, 64, 1024] if args.quick else [1, 64, 1024, 4096, 65536])
    loop_seconds = 1.0 if args.quick else args.loop_seconds
    big = max(counts)
    target_steps = 2e5 if args.quick else 4e6

    device = jax.devices()[0]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# device: {device.platform} {device.device_kind} x{jax.device_count()}, "
          f"host {platform.processor() or platform.machine()} ({os.cpu_count()} cores, "
          f"load average {load:.1f}), jax {jax.__version__}, huge-page malloc "
          f"{'on' if hugepages.enabled() else 'off'}")
    results: dict = {"device": {"platform": device.platform, "kind": device.device_kind,
                                "count": jax.device_count()}, "jax": jax.__version__,
                     "like_for_like": [], "default": []}
    frame = load_frame()
    close = frame["close"].to_numpy().astype(np.float64)

    # ---- table 1 -------------------------------------------------------------------------
    import gym_anytrading  # noqa: F401  (registers the envs)
    import pandas as pd
    from gym_anytrading.envs import StocksEnv

    df = pd.DataFrame({"Open": frame["open"].to_numpy(), "High": frame["high"].to_numpy(),
                       "Low": frame["low"].to_numpy(), "Close": close,
                       "Volume": frame["volume"].to_numpy()})
    market = anytrading_market(close)
    env, params = envs.make("trading", market, window_bars=30, obs_layout="window",
                            include_portfolio=False, discrete_levels=(-1.0, 1.0),
                            episode_bars=len(close) - 32)
    assert env.observation_shape == (30, 2)
    pool = min(big, 64)
    anytrading, anytrading_cpu = loop_steps_per_s(
        lambda: StocksEnv(df, window_size=30, frame_bound=(30, len(df))), pool, loop_seconds)
    adapter, _ = loop_steps_per_s(lambda: GymnasiumTradingEnv(env, params), pool, loop_seconds)
    print("\n## Table 1: like for like (obs = 30 bars x [close, diff], 2 positions)")
    print(f"gym-anytrading StocksEnv, Python loop: {anytrading:,.0f} steps/s; "
          f"jaxtrade Gymnasium adapter, Python loop: {adapter:,.0f} steps/s "
          f"(measured with {pool} envs round-robin; independent of N); gym-anytrading per "
          f"CPU-second: {anytrading_cpu:,.0f}")
    results["peers_steps_per_s"] = {"gym_anytrading": anytrading, "gymnasium_adapter": adapter}
    print("| envs | jaxtrade vmapped steps/s | vs gym-anytrading | vs Gymnasium adapter "
          "| steps per CPU-second | vs gym-anytrading per CPU-second "
          "| with fresh keys per step | vs gym-anytrading |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in counts:
        steps = int(max(20, min(2000, target_steps // n)))
        rate, per_cpu = jax_steps_per_s(env, params, n, steps)
        fresh, _ = jax_steps_per_s(env, params, n, steps, fresh_keys=True)
        print(f"| {n} | {rate:,.0f} | {rate / anytrading:,.1f}x | {rate / adapter:,.1f}x "
              f"| {per_cpu:,.0f} | {per_cpu / anytrading_cpu:,.1f}x "
              f"| {fresh:,.0f} | {fresh / anytrading:,.1f}x |")
        results["like_for_like"].append({"envs": n, "env_steps_per_s": rate,
                                         "per_cpu_second": per_cpu,
                                         "fresh_keys_env_steps_per_s": fresh})

    # ---- table 2 -------------------------------------------------------------------------
    market = default_market(frame)
    env, params = envs.make("trading", market)  # defaults: window 32, discrete, flat
    sizes = step_bytes(env, params)
    bandwidth = bandwidth_bytes_per_s(256 if args.quick else args.bandwidth_mb)
    print(f"\n## Table 2: default configuration (window {env.window_bars}, "
          f"{env.num_features} features x {env.num_assets} asset(s), obs "
          f"{env.observation_shape}, costs on)")
    print(f"bytes per env-step: {sizes['total']:,} (obs written {sizes['obs_written']:,}, "
          f"market read {sizes['market_read']:,}, state read+written {sizes['state_rw']:,}, "
          f"action/reward/done {sizes['action_reward_done']})")
    print(f"memory bandwidth (jitted copy of {256 if args.quick else args.bandwidth_mb} MiB, "
          f"read+write): {bandwidth / 1e9:,.2f} GB/s")
    print("| envs | env-steps/s | GB/s moved | fraction of bandwidth | env-steps per CPU-second |")
    print("|---:|---:|---:|---:|---:|")
    for n in [c for c in counts if c >= 64] or counts:
        steps = int(max(10, min(1000, target_steps / 4 // n)))
        rate, per_cpu = jax_steps_per_s(env, params, n, steps)
        moved = rate * sizes["total"]
        print(f"| {n} | {rate:,.0f} | {moved / 1e9:,.2f} | {moved / bandwidth:.0%} "
              f"| {per_cpu:,.0f} |")
        results["default"].append({"envs": n, "env_steps_per_s": rate,
                                   "bytes_moved_per_s": moved,
                                   "fraction_of_bandwidth": moved / bandwidth})

    # ---- memory --------------------------------------------------------------------------
    mem = memory_per_env(env, params, big)
    print(f"\n## Memory (default configuration; market {mem['market_bytes']:,} bytes, "
          f"allocated once)")
    print(f"live bytes for 1 env: {mem['bytes_1_env']:,}; for {big} envs: "
          f"{mem[f'bytes_{big}_envs']:,}; per-env increment {mem['per_env']:,.0f} bytes, "
          f"of which beyond the observation buffer {mem['per_env_beyond_obs']:,.0f} bytes")
    if args.json:
        results.update(bytes_per_env_step=sizes, bandwidth_bytes_per_s=bandwidth,
                       memory={k: float(v) for k, v in mem.items()})
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
