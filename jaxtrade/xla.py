"""Compile options for the programs a command compiles and runs once.

XLA:CPU writes the code of its fused element-wise kernels with its fusion emitters; with
them off (`xla_cpu_use_fusion_emitters=false`, XLA's earlier emitters) some programs compile
much faster. Measured with jax 0.10.2 on 2 cores (BENCHMARKS.md, "Faster compiles on CPU"):

- a backtest's walks, a validation pass, the report's metrics, a synthetic market: compile
  25-50 % faster and run as fast (`jaxtrade backtest` of a default run: compile 6.9 -> 4.6 s,
  the same report; scripts/bench_compile.py);
- training chunks: those of the default trading configs compile 37-47 % faster and run within
  the machine's +-10 % (PPO 0.98-1.02x, SAC 1.01-1.11x, DQN 0.91-1.00x the time), but DQN on
  gymnax CartPole trains 21-24 % slower and a small PPO (scripts/bench_train.py's
  like-for-like) 24 % slower: not a default for long runs;
- an agent's `init` compiles slower with only the emitters switched, but it does almost no
  work (a network init, zeroed buffers), so it also turns LLVM's optimizations off
  (`xla_backend_optimization_level=0`): 1.6-3.6x faster to compile (PPO 1.3 -> 0.4-0.7 s,
  an ensemble 3.1-3.4 -> 1.6 s), milliseconds to run (`LIGHT_COMPILE_CPU`, `jit_light`).
  Programs that do real work must not: chunks ran 2-3.5x slower that way, an
  ensemble's walk 16x.

So programs that run once per command (`jit_once`, `compile_options()`) always compile with
the faster options on CPU, and a training chunk does only when `train.fast_compile=true`
(which the smoke experiment sets: its runs are all compile). Other backends never see the
option. The numbers a program computes can differ in the last bits between the two emitters,
as they do between two CPUs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax

FAST_COMPILE_CPU = {"xla_cpu_use_fusion_emitters": False}
# For programs that run once and do almost no work (initializing an agent or a network).
LIGHT_COMPILE_CPU = {**FAST_COMPILE_CPU, "xla_backend_optimization_level": 0}


def compile_options(fast: bool = True, light: bool = False) -> dict[str, Any] | None:
    """`compiler_options` for `jax.jit` on CPU: the faster-compiling ones when `fast`, the
    light ones (`LIGHT_COMPILE_CPU`: no LLVM optimization either) when `light`; None (XLA's
    defaults) otherwise and on every other backend."""
    if jax.default_backend() != "cpu":
        return None
    if light:
        return dict(LIGHT_COMPILE_CPU)
    return dict(FAST_COMPILE_CPU) if fast else None


def jit_light(fun: Callable, **jit_kwargs: Any) -> Any:
    """`jax.jit(fun, **jit_kwargs)` compiled the light way on CPU: for a program that runs
    once and does almost no work, such as an agent's or a network's `init`."""
    return jax.jit(fun, compiler_options=compile_options(light=True), **jit_kwargs)


class module_jit:  # noqa: N801  (used like jax.jit)
    """`jax.jit(fun, **jit_kwargs)` for a function defined at module level that is called with
    ever new static arguments (an env, a policy), keeping at most `max_kept` of its compiled
    programs.

    JAX keeps a jitted function's compiled programs while the function lives, up to 8,192
    in one cache for all functions, and a module-level function lives as long as the process.
    XLA:CPU maps each program's machine code into memory (about 3 maps per object file); a
    process that walks thousands of policies (a long sweep, the test suite) reached Linux's
    65,530 maps per process and died in the next compile. So when more than `max_kept`
    programs are kept, they are dropped (`clear_cache`), and the next call compiles again.

    The jitted function is made at the first call, once JAX knows its backend (`options`
    is called then), so a module can define it at import time.
    """

    max_kept = 32

    def __init__(self, fun: Callable, *, options: Callable[[], dict[str, Any] | None] = (
            lambda: None), **jit_kwargs: Any) -> None:
        self._fun = fun
        self._options = options
        self._kwargs = jit_kwargs
        functools.update_wrapper(self, fun)

    @functools.cached_property
    def _jitted(self) -> Any:
        return jax.jit(self._fun, compiler_options=self._options(), **self._kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self._jitted(*args, **kwargs)
        if self.kept() > self.max_kept:
            self._jitted.clear_cache()
        return out

    def kept(self) -> int:
        """How many compiled programs JAX holds for this function now (0 where this JAX
        does not say: then nothing is dropped; tests/test_xla_options.py would fail)."""
        size = getattr(self._jitted, "_cache_size", None)  # no public count
        return int(size()) if size is not None else 0


class jit_once(module_jit):  # noqa: N801  (used like jax.jit)
    """`module_jit` with `compile_options()`: for a program a command runs once (a walk, a
    report's metrics)."""

    def __init__(self, fun: Callable, **jit_kwargs: Any) -> None:
        super().__init__(fun, options=compile_options, **jit_kwargs)
