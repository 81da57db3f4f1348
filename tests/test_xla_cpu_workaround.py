"""XLA:CPU deadlock workaround: the flag is set on import, and a vmapped 16-seed PPO program
that used to hang within 2-3 calls on a 2-core machine now completes repeatedly."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_sets_the_scheduler_flag_and_keeps_user_flags() -> None:
    code = "import os, jaxtrade; print(os.environ['XLA_FLAGS'])"
    env = dict(os.environ, XLA_FLAGS="--xla_cpu_enable_fast_math=false")
    env.pop("JAXTRADE_KEEP_XLA_FLAGS", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout.split()
    ynn = ["--xla_cpu_experimental_ynn_fusion_type=-reduce"] if _knows_ynn() else []
    assert out == ["--xla_cpu_enable_fast_math=false",
                   "--xla_cpu_enable_concurrency_optimized_scheduler=false", *ynn]
    # a user's own setting of a flag jaxtrade sets is kept as given
    env["XLA_FLAGS"] = "--xla_cpu_experimental_ynn_fusion_type="
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout.split()
    assert out == ["--xla_cpu_experimental_ynn_fusion_type=",
                   "--xla_cpu_enable_concurrency_optimized_scheduler=false"]
    env["JAXTRADE_KEEP_XLA_FLAGS"] = "1"
    env["XLA_FLAGS"] = "--xla_cpu_enable_fast_math=false"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout.split()
    assert out == ["--xla_cpu_enable_fast_math=false"]


def _knows_ynn() -> bool:
    """Whether this jaxlib is one jaxtrade sets the YNNPACK option for."""
    import jaxtrade

    return jaxtrade._YNN_FLAG in jaxtrade._xla_cpu_flags()


def test_a_matmul_feeding_a_pairwise_reduction_is_not_fused_with_it() -> None:
    """QR-DQN's loss pattern: a network output broadcast pairwise against targets and reduced.
    With YNNPACK reduce fusions on, XLA:CPU fused the matmul into the reduction and a QR-DQN
    update took 1.6-4.4x as long (BENCHMARKS.md); the flag jaxtrade sets keeps YNNPACK to the
    matmul. Compiled in this process, whose flags came from `import jaxtrade` (conftest)."""
    if not _knows_ynn():
        pytest.skip("this jaxlib has no YNNPACK fusion option")
    import jax
    import jax.numpy as jnp

    def pairwise(x, w, targets):
        out = x @ w
        return jnp.abs(targets[:, None, :] - out[:, :, None]).sum(axis=2)

    args = (jnp.ones((128, 84)), jnp.ones((84, 32)), jnp.ones((128, 32)))
    hlo = jax.jit(pairwise).lower(*args).compile().as_text()
    fused = re.findall(r"fusion\([^)]*\), kind=kCustom, calls=(%[\w.]+)[^\n]*__ynn_fusion", hlo)
    assert fused, "no YNNPACK fusion at all: the check below would prove nothing"
    for name in fused:
        body = hlo[hlo.index(f"{name} ("):]
        body = body[:body.index("\n}")]
        assert " dot(" in body and " reduce(" not in body, body


def test_import_after_jax_started_warns_that_the_flag_came_too_late() -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("XLA_FLAGS", "JAXTRADE_KEEP_XLA_FLAGS")}
    late = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-c",
         "import jax; jax.devices(); import jaxtrade"],
        env=env, capture_output=True, text=True, cwd=ROOT)
    assert late.returncode != 0 and "JAX started its backend before jaxtrade" in late.stderr
    early = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-c",
         "import jax; import jaxtrade; jax.devices()"],  # imported, not started: in time
        env=env, capture_output=True, text=True, cwd=ROOT)
    assert early.returncode == 0, early.stderr


@pytest.mark.slow
def test_vmapped_seed_program_runs_repeatedly_without_hanging() -> None:
    script = textwrap.dedent(
        """
        import jax, numpy as np
        import agents, envs
        from jaxtrade.market import from_arrays
        rng = np.random.default_rng(0)
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 600)))
        feats = np.diff(np.log(close), prepend=np.log(close[0]))[:, None]
        market = from_arrays(close, features=feats, splits=[[0, 600], [600, 600], [600, 600]])
        env, params = envs.make("trading", market, window_bars=30, episode_bars=128)
        cfg = agents.config_from_dict({"name": "ppo", "num_envs": 64, "rollout_len": 32,
                                       "total_steps": 4 * 2048, "num_minibatches": 32,
                                       "update_epochs": 10})
        train = agents.make_train(cfg, env, params)
        keys = jax.random.split(jax.random.key(0), 16)
        run = jax.jit(jax.vmap(train)).lower(keys).compile()
        for _ in range(10):
            jax.block_until_ready(run(keys))
        print("ok")
        """
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("JAXTRADE_KEEP_XLA_FLAGS", None)
    try:
        result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                                text=True, timeout=240, cwd=ROOT)
    except subprocess.TimeoutExpired:
        pytest.fail("the vmapped 16-seed program hung (XLA:CPU deadlock is back)")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")
