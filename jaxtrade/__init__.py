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


_apply_xla_cpu_workaround()
