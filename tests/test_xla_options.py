"""XLA:CPU's faster-compiling options (jaxtrade/xla.py): programs that run once compile with
them on CPU, a training chunk only with train.fast_compile=true (the smoke experiment), and
XLA itself receives them: read back from the debug options XLA dumps for each program."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from experiments import common
from jaxtrade import xla

ROOT = Path(__file__).resolve().parents[1]

PROGRAMS = textwrap.dedent("""
    import jaxtrade
    import jax.numpy as jnp
    from experiments.loop import _batched_chunk
    from jaxtrade.sharding import single_device
    from jaxtrade.runs import _jitted_init
    from jaxtrade.xla import jit_once

    def once_program(x):
        return jnp.sin(x) * 2.0

    def chunk_fast(state, market):
        return state + market, {"m": state.sum()}

    def chunk_default(state, market):
        return state * market, {"m": state.sum()}

    def plain_program(x):
        return jnp.cos(x)

    def init_program(x):  # what jaxtrade.runs.init_points compiles: an agent's init
        return jnp.tanh(x) + 1.0

    jit_once(once_program)(jnp.ones(3))
    mesh = single_device(1)
    _batched_chunk(chunk_fast, mesh, None, True)(jnp.ones((1, 3)), jnp.ones(3))
    _batched_chunk(chunk_default, mesh, None, False)(jnp.ones((1, 3)), jnp.ones(3))
    import jax
    jax.jit(plain_program)(jnp.ones(3))
    _jitted_init(init_program)(jnp.ones(3))
    print("ok")
""")


def _debug_options(dump: Path, name: str) -> str:
    found = sorted(dump.glob(f"*{name}*.debug_options"))
    assert found, (name, sorted(p.name for p in dump.iterdir())[:40])
    return found[0].read_text()


def test_xla_receives_the_options_for_once_run_programs_and_fast_compile_chunks(
        tmp_path: Path) -> None:
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_dump_to={tmp_path} --xla_dump_hlo_as_text")
    out = subprocess.run([sys.executable, "-c", PROGRAMS], env=env, capture_output=True,
                         text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]
    off = "xla_cpu_use_fusion_emitters: false"
    assert off in _debug_options(tmp_path, "once_program")
    assert off in _debug_options(tmp_path, "chunk_fast")
    assert off not in _debug_options(tmp_path, "chunk_default")
    assert off not in _debug_options(tmp_path, "plain_program")
    # an agent's init: the emitters and no LLVM optimization (XLA writes the options that
    # differ from its defaults, level 3 being the default)
    level0 = "xla_backend_optimization_level: 0"
    init = _debug_options(tmp_path, "init_program")
    assert off in init and level0 in init
    assert all(level0 not in _debug_options(tmp_path, name)
               for name in ("once_program", "chunk_fast", "chunk_default", "plain_program"))
    # jaxtrade's scheduler flag (set at import) is there too: these are the options XLA used
    assert "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED" in _debug_options(tmp_path, "once_program")


def test_options_only_on_cpu_and_when_asked() -> None:
    assert xla.compile_options() == {"xla_cpu_use_fusion_emitters": False}  # tests run on CPU
    assert xla.compile_options(False) is None
    assert xla.compile_options(light=True) == {"xla_cpu_use_fusion_emitters": False,
                                               "xla_backend_optimization_level": 0}
    from jaxtrade.evaluate import backtest, montecarlo
    from jaxtrade.metrics import _compute_metrics_jit, batch_metrics

    for program in (backtest._rollout_jit, montecarlo._run, _compute_metrics_jit, batch_metrics):
        assert isinstance(program, xla.jit_once), program


def test_fast_compile_is_off_by_default_and_on_in_the_smoke_experiment() -> None:
    assert common.compose([])["train"]["fast_compile"] is False
    assert common.compose(["experiment=smoke"])["train"]["fast_compile"] is True
    assert common.compose(["experiment=smoke", "train.fast_compile=false"])["train"][
        "fast_compile"] is False


def test_a_module_level_program_keeps_a_bounded_number_of_compiled_programs() -> None:
    """A module-level jitted function called with ever new static arguments (a walk with one
    policy after another) keeps at most `max_kept` compiled programs: JAX would keep them all
    (up to 8,192), and on XLA:CPU each holds memory maps, of which Linux allows a process
    65,530 (the test workers hit that limit and died in a compile)."""
    import jax.numpy as jnp

    def run(fn, x):
        return fn(x) * 2.0

    walk = xla.jit_once(run, static_argnums=(0,))
    plain = xla.module_jit(run, static_argnums=(0,))

    def policy(i):
        return lambda x: jnp.sin(x) + i

    maps = Path("/proc/self/maps")
    before = len(maps.read_text().splitlines()) if maps.exists() else 0
    for i in range(3 * xla.module_jit.max_kept):
        assert float(walk(policy(i), jnp.ones(()))[()]) == pytest.approx(2 * (np.sin(1) + i))
        plain(policy(i), jnp.ones(()))
        assert walk.kept() <= xla.module_jit.max_kept
        assert plain.kept() <= xla.module_jit.max_kept
    if maps.exists():  # Linux: two kept sets of programs, not 2 x 96
        assert len(maps.read_text().splitlines()) - before < 2 * 6 * xla.module_jit.max_kept
    from envs import trading
    from experiments import loop
    from jaxtrade import runs

    assert isinstance(trading._jit_step, xla.module_jit)
    assert isinstance(trading._jit_reset, xla.module_jit)
    # a run's chunk, init and finiteness check: cached for the last runs only, not the process
    for cached in (loop._batched_chunk, loop._params_finite, runs._jitted_init):
        assert cached.cache_info().maxsize <= 2, cached
