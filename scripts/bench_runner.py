"""Live runner latency: numpy bundle per bar vs the JAX policy called per bar, same run.

Builds the default bundle (embedded sp500_daily, default feature spec and env: window 32, flat
observation, discrete [-1, 0, 1]; default MLP actor with random weights, since latency does not
depend on their values), then replays the bars through the numpy runner in-process and times:

  runner      one whole bar: validation, ledger fill, every feature update, normalization,
              observation, numpy forward pass, risk rules (what the live runner does per bar)
  numpy pol.  the numpy forward pass alone on the same observations
  jax pol.    the jitted flax policy (`apply` + argmax) on the same observations, one call
              per bar with the observation copied to the device and the action read back
  pipeline    the research path per bar: polars features recomputed on the last 300 bars,
              normalization, JAX policy (on a sample of bars)

With --onnx the bundle also holds policy.onnx (export format=onnx; needs the [onnx] extra)
and a second runner with `engine="onnx"` (onnxruntime, one thread) processes every bar right
after the numpy runner, the order alternating bar by bar so both see the same machine load:

  onnx runner   one whole bar as above, the policy run by onnxruntime
  onnx policy   OnnxActor.forward alone on the same observations

It prints p50/p99 in microseconds (wall clock, and the thread's CPU time, which excludes time
the OS gave to other processes on a shared machine), the ratio JAX policy / numpy runner (and
onnxruntime / numpy), the bundle size, and the import time of the runner package in a fresh
interpreter (numpy included).

With --assets N (N >= 2) the bundle is a multi-asset one instead: N synthetic daily symbols
(jaxtrade.data.synthetic, 5,000 timestamps; default spec, which adds cross_corr and turbulence
for several symbols; window 32), replayed through MultiAssetRunner (jaxtrade/live/multi.py);
one sample is one whole timestamp (the N bars in, the decision out), beside the numpy and JAX
forward passes on the same observations (and the onnx engine with --onnx).

    python scripts/bench_runner.py [--quick] [--torso mlp|cnn|gru|lstm|attention] [--onnx]
                                   [--assets N]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402


def percentiles(samples_s: list[float]) -> tuple[float, float]:
    us = np.asarray(samples_s) * 1e6
    return float(np.percentile(us, 50)), float(np.percentile(us, 99))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few bars, for a smoke test")
    parser.add_argument("--torso", default="mlp", help="network torso (default mlp)")
    parser.add_argument("--bars", type=int, default=None, help="bars to replay (default: all)")
    parser.add_argument(
        "--onnx", action="store_true", help="also time the onnxruntime engine (policy.onnx)"
    )
    parser.add_argument("--assets", type=int, default=1,
                        help="N >= 2: time a multi-asset bundle of N synthetic symbols")
    args = parser.parse_args(argv)
    if args.assets > 1:
        return bench_multi(args)

    import jax
    import jax.numpy as jnp

    import envs
    from agents.common.distributions import ActionSpec
    from agents.common.networks import ActorCritic, NetworkConfig, network_carry
    from jaxtrade import market as market_lib
    from jaxtrade.data import load_ohlcv
    from jaxtrade.data.splits import make_splits
    from jaxtrade.export import write_bundle
    from jaxtrade.features import default_spec
    from jaxtrade.live.bundle import load_bundle
    from jaxtrade.live.engine import Runner

    frame = load_ohlcv("sp500_daily")
    if args.quick:
        frame = frame.head(600)
    elif args.bars:
        frame = frame.head(args.bars)
    market = market_lib.build(frame, default_spec(), make_splits(frame.height, 0.6, 0.2))
    env, env_params = envs.make("trading", market)
    obs_shape = tuple(env.observation_shape)
    window = None
    state_features = 0
    if args.torso in ("cnn", "attention"):
        window = (env.window_bars, env.num_features)
        state_features = obs_shape[0] - env.window_bars * env.num_features
    cfg = NetworkConfig(torso=args.torso, window_shape=window, num_state_features=state_features)
    net = ActorCritic(cfg, ActionSpec("discrete", num_actions=3), 1)
    resets = jnp.zeros((1, 1), bool)
    params = jax.jit(net.init)(jax.random.PRNGKey(0), network_carry(cfg, (1,)),
                               jnp.zeros((1, 1) + obs_shape), resets)

    tmp = Path(tempfile.mkdtemp(prefix="bench-runner-"))
    bundle_dir = write_bundle(tmp / "bundle", params=params, network_config=cfg, env=env,
                              env_params=env_params, onnx=args.onnx)
    size = sum(p.stat().st_size for p in bundle_dir.rglob("*") if p.is_file())
    weights = (bundle_dir / "weights.safetensors").stat().st_size

    runner = Runner(load_bundle(bundle_dir))
    stamps = frame["timestamp"].dt.epoch("us").to_list()
    cols = [frame[c].to_list() for c in ("open", "high", "low", "close", "volume")]
    records = [
        {"timestamp": t / 1e6, "open": o, "high": h, "low": lo, "close": c, "volume": v}
        for t, o, h, lo, c, v in zip(stamps, *cols)
    ]
    onnx_runner = Runner(load_bundle(bundle_dir), engine="onnx") if args.onnx else None

    def timed(which: Runner, record: dict) -> tuple[dict | None, float, float]:
        cpu_began = time.thread_time()
        began = time.perf_counter()
        decision = which.process(record)
        return decision, time.perf_counter() - began, time.thread_time() - cpu_began

    runner_times, runner_cpu, observations = [], [], []
    onnx_times, onnx_cpu = [], []
    for i, record in enumerate(records):
        if onnx_runner is not None and i % 2:
            onnx_decision, onnx_elapsed, onnx_spent = timed(onnx_runner, record)
        decision, elapsed, cpu = timed(runner, record)
        if onnx_runner is not None and not i % 2:
            onnx_decision, onnx_elapsed, onnx_spent = timed(onnx_runner, record)
        if decision is not None:
            runner_times.append(elapsed)
            runner_cpu.append(cpu)
            observations.append(runner.observation(record["close"]))
        if onnx_runner is not None and onnx_decision is not None:
            if onnx_decision["action"] != decision["action"]:
                raise SystemExit(f"the engines disagree at {decision['timestamp']}")
            onnx_times.append(onnx_elapsed)
            onnx_cpu.append(onnx_spent)
    # Skip the first decisions (caches, branch warm-up) in every timing.
    skip = min(50, len(runner_times) // 10)
    runner_times = runner_times[skip:]
    runner_cpu = runner_cpu[skip:]
    observations = observations[skip:]
    onnx_times, onnx_cpu = onnx_times[skip:], onnx_cpu[skip:]

    # The forward passes alone; with --onnx both engines per observation, in alternating order.
    networks = [runner.network] + ([onnx_runner.network] if onnx_runner is not None else [])
    carries = [net.initial_carry() for net in networks]
    policy_times: list[list[float]] = [[] for _ in networks]
    for i, obs in enumerate(observations):
        for k in range(len(networks)) if i % 2 == 0 else reversed(range(len(networks))):
            began = time.perf_counter()
            head, carries[k] = networks[k].forward(obs, carries[k])
            int(np.argmax(head))
            policy_times[k].append(time.perf_counter() - began)
    numpy_times, onnx_policy_times = policy_times[0], policy_times[-1]

    carry0 = network_carry(cfg, (1,))

    @jax.jit
    def jax_policy(p, c, obs):
        new_carry, dist, _ = net.apply(p, c, obs[None, None], resets)
        return jnp.argmax(dist.logits[0, 0]), new_carry

    jax_policy(params, carry0, jnp.asarray(observations[0]))[0].block_until_ready()
    jax_times = []
    c = carry0
    for obs in observations:
        began = time.perf_counter()
        action, c = jax_policy(params, c, jnp.asarray(obs))
        int(action)
        jax_times.append(time.perf_counter() - began)

    # The research pipeline per bar: recompute the features on a trailing slice of history
    # with polars (what a runner without incremental features must do), normalize, then the
    # JAX policy. Timed on a sample of bars: it is slow.
    from jaxtrade.features import Normalizer, compute

    normalizer = Normalizer.from_dict(market.meta.extra["normalizer"])
    spec = default_spec()
    history = 300
    sample = np.linspace(history, frame.height - 1, 20 if args.quick else 100).astype(int)
    pipeline_times = []
    for t in sample:
        began = time.perf_counter()
        table = compute(frame.slice(int(t) - history + 1, history), spec)
        row = normalizer.transform(table.tail(1).drop("timestamp").to_numpy()).astype(np.float32)
        obs = np.concatenate([np.repeat(row, env.window_bars, axis=0).reshape(-1),
                              np.zeros(obs_shape[0] - row.size * env.window_bars, np.float32)])
        action, _ = jax_policy(params, carry0, jnp.asarray(obs))
        int(action)
        pipeline_times.append(time.perf_counter() - began)

    probe = (
        "import sys, time; t = time.perf_counter(); sys.path.insert(0, sys.argv[1]); "
        "import jaxtrade_live.cli; print(time.perf_counter() - t)"
    )
    import_s = min(
        float(subprocess.run([sys.executable, "-c", probe, str(bundle_dir)], capture_output=True,
                             text=True, check=True).stdout)
        for _ in range(3)
    )

    p50, p99 = percentiles(pipeline_times)
    r50, r99 = percentiles(runner_times)
    c50, c99 = percentiles(runner_cpu)
    n50, n99 = percentiles(numpy_times)
    j50, j99 = percentiles(jax_times)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"python {platform.python_version()}, jax {jax.__version__} ({jax.default_backend()})")
    print(f"bundle: torso={args.torso}, window={env.window_bars}, features={env.num_features}, "
          f"obs={obs_shape[0]}, bars timed={len(runner_times)}")
    print(f"{'per bar (us)':<34}{'p50':>10}{'p99':>10}")
    print(f"{'numpy runner (features+policy)':<34}{r50:>10.1f}{r99:>10.1f}")
    print(f"{'  same, CPU time of the thread':<34}{c50:>10.1f}{c99:>10.1f}")
    print(f"{'numpy policy forward only':<34}{n50:>10.1f}{n99:>10.1f}")
    print(f"{'jax policy per bar (jit, cpu)':<34}{j50:>10.1f}{j99:>10.1f}")
    print(f"{'polars features + jax policy':<34}{p50:>10.1f}{p99:>10.1f}"
          f"   ({len(sample)} bars, {history}-bar history)")
    print(f"ratio jax policy / numpy runner: p50 {j50 / r50:.2f}x, p99 {j99 / r99:.2f}x")
    print(f"ratio polars+jax pipeline / numpy runner: p50 {p50 / r50:.1f}x, p99 {p99 / r99:.1f}x")
    print(f"ratio jax policy / numpy policy: p50 {j50 / n50:.2f}x, p99 {j99 / n99:.2f}x")
    if onnx_runner is not None:
        import onnxruntime

        o50, o99 = percentiles(onnx_times)
        oc50, oc99 = percentiles(onnx_cpu)
        op50, op99 = percentiles(onnx_policy_times)
        print(f"onnxruntime {onnxruntime.__version__} (1 thread), same bars, same decisions:")
        print(f"{'onnx runner (features+policy)':<34}{o50:>10.1f}{o99:>10.1f}")
        print(f"{'  same, CPU time of the thread':<34}{oc50:>10.1f}{oc99:>10.1f}")
        print(f"{'onnx policy forward only':<34}{op50:>10.1f}{op99:>10.1f}")
        print(f"ratio onnx runner / numpy runner: p50 {o50 / r50:.2f}x, p99 {o99 / r99:.2f}x "
              f"(CPU time p99 {oc99 / c99:.2f}x)")
        print(f"ratio onnx policy / numpy policy: p50 {op50 / n50:.2f}x, p99 {op99 / n99:.2f}x")
    print(f"goal p99 <= 1000 us (wall): {'met' if r99 <= 1000 else 'NOT met'}; CPU-time p99 "
          f"{c99:.0f} us (wall p99 above CPU p99 is time the OS gave other processes)")
    print(f"load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus")
    print(f"bundle size: {size / 1024:.0f} KiB (weights {weights / 1024:.0f} KiB)")
    print(f"runner import time (fresh interpreter, numpy included): {import_s * 1000:.0f} ms "
          f"(goal < 500 ms: {'met' if import_s < 0.5 else 'NOT met'})")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def bench_multi(args) -> int:
    """The multi-asset runner per timestamp (module docstring, --assets)."""
    import jax
    import jax.numpy as jnp

    import envs
    from agents.common.distributions import ActionSpec
    from agents.common.networks import ActorCritic, NetworkConfig, network_carry
    from jaxtrade import market as market_lib
    from jaxtrade.data.splits import make_splits
    from jaxtrade.data.synthetic import synthetic_frame
    from jaxtrade.export import write_bundle
    from jaxtrade.features import default_spec
    from jaxtrade.live.bars import Bar
    from jaxtrade.live.bundle import load_bundle
    from jaxtrade.live.multi import MultiAssetRunner

    bars = 600 if args.quick else (args.bars or 5000)
    frame = synthetic_frame(seed=0, num_bars=bars, num_assets=args.assets, freq="1d")
    num_stamps = frame["timestamp"].n_unique()
    market = market_lib.build(frame, default_spec(), make_splits(num_stamps, 0.6, 0.2))
    env, env_params = envs.make("trading", market)
    obs_shape = tuple(env.observation_shape)
    window, state_features = None, 0
    if args.torso in ("cnn", "attention"):
        width = env.num_assets * env.num_features
        window = (env.window_bars, width)
        state_features = obs_shape[0] - env.window_bars * width
    cfg = NetworkConfig(torso=args.torso, window_shape=window, num_state_features=state_features)
    net = ActorCritic(cfg, ActionSpec("discrete", num_actions=3), 1)
    resets = jnp.zeros((1, 1), bool)
    params = jax.jit(net.init)(jax.random.PRNGKey(0), network_carry(cfg, (1,)),
                               jnp.zeros((1, 1) + obs_shape), resets)
    tmp = Path(tempfile.mkdtemp(prefix="bench-runner-"))
    bundle_dir = write_bundle(tmp / "bundle", params=params, network_config=cfg, env=env,
                              env_params=env_params, onnx=args.onnx)
    engines = ["numpy"] + (["onnx"] if args.onnx else [])
    runners = {e: MultiAssetRunner(load_bundle(bundle_dir), engine=e) for e in engines}

    stamps = frame["timestamp"].dt.epoch("us").to_list()
    cols = [frame[c].to_list() for c in ("open", "high", "low", "close", "volume")]
    groups: dict[int, list] = {}
    for symbol, t, *values in zip(frame["symbol"].to_list(), stamps, *cols):
        groups.setdefault(t, []).append((symbol, Bar(t, *values)))
    times = {e: [] for e in engines}
    cpu = {e: [] for e in engines}
    observations = []
    for i, t in enumerate(sorted(groups)):
        order = engines if i % 2 == 0 else engines[::-1]
        decisions = {}
        for e in order:
            which = runners[e]
            cpu_began, began = time.thread_time(), time.perf_counter()
            out = [d for symbol, bar in groups[t] for d in which.process(symbol, bar)]
            elapsed, spent = time.perf_counter() - began, time.thread_time() - cpu_began
            decisions[e] = out
            if out:
                times[e].append(elapsed)
                cpu[e].append(spent)
        if decisions["numpy"]:
            observations.append(runners["numpy"].observation())
            if args.onnx and decisions["onnx"][0]["action"] != decisions["numpy"][0]["action"]:
                raise SystemExit(f"the engines disagree at {decisions['numpy'][0]['timestamp']}")
    skip = min(50, len(times["numpy"]) // 10)
    for e in engines:
        times[e], cpu[e] = times[e][skip:], cpu[e][skip:]
    observations = observations[skip:]

    numpy_net = runners["numpy"].network
    carry = numpy_net.initial_carry()
    numpy_times = []
    for obs in observations:
        began = time.perf_counter()
        head, carry = numpy_net.forward(obs, carry)
        int(np.argmax(head))
        numpy_times.append(time.perf_counter() - began)
    carry0 = network_carry(cfg, (1,))

    @jax.jit
    def jax_policy(p, c, obs):
        new_carry, dist, _ = net.apply(p, c, obs[None, None], resets)
        return jnp.argmax(dist.logits[0, 0]), new_carry

    jax_policy(params, carry0, jnp.asarray(observations[0]))[0].block_until_ready()
    jax_times, c = [], carry0
    for obs in observations:
        began = time.perf_counter()
        action, c = jax_policy(params, c, jnp.asarray(obs))
        int(action)
        jax_times.append(time.perf_counter() - began)

    r50, r99 = percentiles(times["numpy"])
    c50, c99 = percentiles(cpu["numpy"])
    n50, n99 = percentiles(numpy_times)
    j50, j99 = percentiles(jax_times)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"python {platform.python_version()}, jax {jax.__version__} ({jax.default_backend()})")
    print(f"bundle: {args.assets} symbols, torso={args.torso}, window={env.window_bars}, "
          f"features={env.num_features} per symbol, obs={obs_shape[0]}, "
          f"timestamps timed={len(times['numpy'])}")
    print(f"{'per timestamp (us)':<34}{'p50':>10}{'p99':>10}")
    print(f"{'numpy multi-asset runner':<34}{r50:>10.1f}{r99:>10.1f}")
    print(f"{'  same, CPU time of the thread':<34}{c50:>10.1f}{c99:>10.1f}")
    print(f"{'numpy policy forward only':<34}{n50:>10.1f}{n99:>10.1f}")
    print(f"{'jax policy per bar (jit, cpu)':<34}{j50:>10.1f}{j99:>10.1f}")
    print(f"ratio jax policy / numpy runner: p50 {j50 / r50:.2f}x, p99 {j99 / r99:.2f}x")
    if args.onnx:
        o50, o99 = percentiles(times["onnx"])
        oc50, oc99 = percentiles(cpu["onnx"])
        print(f"{'onnx multi-asset runner':<34}{o50:>10.1f}{o99:>10.1f}")
        print(f"{'  same, CPU time of the thread':<34}{oc50:>10.1f}{oc99:>10.1f}")
        print(f"ratio onnx runner / numpy runner: p50 {o50 / r50:.2f}x, p99 {o99 / r99:.2f}x "
              f"(CPU time p99 {oc99 / c99:.2f}x)")
    print(f"goal p99 <= 5000 us (wall): {'met' if r99 <= 5000 else 'NOT met'}; CPU-time p99 "
          f"{c99:.0f} us")
    print(f"load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
