"""jaxtrade: a JAX-native research stack for reinforcement-learning trading."""

import os as _os

__version__ = "0.1.0"

# XLA:CPU flags set at import, each unless XLA_FLAGS already names it. They only affect the CPU
# backend and must be set before JAX starts its backend, hence here, at import time.
# - The concurrency-optimized scheduler can deadlock multi-threaded runs of large vmapped
#   programs (seeds x hyperparameters x envs): every worker thread idles while the host waits
#   on the result. Seen with jax 0.10.2 on 2 cores within 2-3 calls of a 16-seed PPO program;
#   with the scheduler off, 30+ calls pass and the program is also faster.
# - YNNPACK "reduce" fusions: XLA:CPU (jaxlib 0.10) hands a reduction to YNNPACK together with
#   the matmuls that feed it, and QR-DQN's loss (a [batch, 32, 32] pairwise array built from the
#   target network's output) then took ~2 ms per update instead of ~0.1: with these fusions off
#   a QR-DQN update on gymnax CartPole is 1.6x (5 vmapped seeds) to 4.4x (1 seed) faster, DQN
#   and the default PPO run unchanged (BENCHMARKS.md, "QR-DQN update"). Only for the jaxlib
#   versions known to have the option: XLA stops at a flag it does not know.
# Set JAXTRADE_KEEP_XLA_FLAGS=1 to leave XLA_FLAGS exactly as given.
_XLA_CPU_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
_YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-reduce"
_YNN_JAXLIB = ((0, 10), (0, 12))  # [first, end) jaxlib (major, minor) with the option


def _xla_cpu_flags() -> list[str]:
    flags = [_XLA_CPU_FLAG]
    try:
        from importlib.metadata import version

        major, minor = (int(part) for part in version("jaxlib").split(".")[:2])
    except Exception:  # no jaxlib installed, or an unusual version string: leave it out
        return flags
    if _YNN_JAXLIB[0] <= (major, minor) < _YNN_JAXLIB[1]:
        flags.append(_YNN_FLAG)
    return flags


def _apply_xla_cpu_workaround() -> None:
    if _os.environ.get("JAXTRADE_KEEP_XLA_FLAGS"):
        return
    current = _os.environ.get("XLA_FLAGS", "")
    missing = [flag for flag in _xla_cpu_flags() if flag.split("=")[0] not in current]
    if missing:
        _os.environ["XLA_FLAGS"] = " ".join([current, *missing]).strip()
        _warn_if_jax_started(missing)


def _warn_if_jax_started(flags: list[str]) -> None:
    """The flags are read when JAX starts its backend: say so when a caller started JAX first
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
            f"{' '.join(flags)} (without them vmapped programs on CPU can stall and QR-DQN "
            "runs slowly): import jaxtrade, agents or envs before using JAX, or set the flags "
            "in XLA_FLAGS yourself",
            RuntimeWarning, stacklevel=3)


_apply_xla_cpu_workaround()
