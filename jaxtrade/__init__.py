"""jaxtrade: a JAX-native research stack for reinforcement-learning trading."""

import os as _os

__version__ = "0.1.0"

# XLA:CPU's concurrency-optimized scheduler can deadlock multi-threaded runs of large vmapped
# programs (seeds x hyperparameters x envs): every worker thread idles while the host waits on
# the result. Seen with jax 0.10.2 on 2 cores within 2-3 calls of a 16-seed PPO program;
# with the scheduler off, 30+ calls pass and the program is also faster. The flag only affects
# the CPU backend and must be set before JAX starts its backend, hence here, at import time.
# Set JAXTRADE_KEEP_XLA_FLAGS=1 to leave XLA_FLAGS exactly as given.
_XLA_CPU_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"


def _apply_xla_cpu_workaround() -> None:
    if _os.environ.get("JAXTRADE_KEEP_XLA_FLAGS"):
        return
    current = _os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_enable_concurrency_optimized_scheduler" not in current:
        _os.environ["XLA_FLAGS"] = f"{current} {_XLA_CPU_FLAG}".strip()
        _warn_if_jax_started()


def _warn_if_jax_started() -> None:
    """The flag is read when JAX starts its backend: say so when a caller started JAX first
    (e.g. `import jax; jax.devices()` before `import agents`), where vmapped seeds can stall."""
    import sys

    if "jax" not in sys.modules:
        return
    try:
        from jax._src import xla_bridge

        started = xla_bridge.backends_are_initialized()
    except (ImportError, AttributeError):
        return
    if started:
        import warnings

        warnings.warn(
            "JAX started its backend before jaxtrade was imported, so XLA_FLAGS lacks "
            f"{_XLA_CPU_FLAG} (vmapped programs on CPU can stall without it): import jaxtrade, "
            "agents or envs before using JAX, or set the flag in XLA_FLAGS yourself",
            RuntimeWarning, stacklevel=3)


_apply_xla_cpu_workaround()
