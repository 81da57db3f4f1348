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
- an agent's `init` compiles slower: it keeps XLA's defaults.

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


def compile_options(fast: bool = True) -> dict[str, Any] | None:
    """`compiler_options` for `jax.jit`: the faster-compiling ones when `fast` and JAX runs
    on CPU, else None (XLA's defaults)."""
    if fast and jax.default_backend() == "cpu":
        return dict(FAST_COMPILE_CPU)
    return None


class jit_once:  # noqa: N801  (used like jax.jit)
    """`jax.jit(fun, **kwargs)` with `compile_options()`: for a program a command runs once
    (a walk, a report's metrics). The jitted function is made at the first call, once JAX
    knows its backend, so a module can define it at import time."""

    def __init__(self, fun: Callable, **jit_kwargs: Any) -> None:
        self._fun = fun
        self._kwargs = jit_kwargs
        functools.update_wrapper(self, fun)

    @functools.cached_property
    def _jitted(self) -> Any:
        return jax.jit(self._fun, compiler_options=compile_options(), **self._kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._jitted(*args, **kwargs)
