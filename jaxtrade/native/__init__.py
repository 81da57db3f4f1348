"""Native CPU kernels for XLA, compiled on first use with the machine's C++ compiler.

`row_stats.cc` holds XLA FFI handlers computing the per-row statistics behind
`jaxtrade.metrics.batch_metrics` (moments, drawdown, exact 5%/95% tails, and with positions
trades, turnover and exposure) on CPU, where the
same program written in JAX is limited by XLA:CPU's slow sort/top_k and per-bar scan
kernels. The metrics use it through `jax.ffi.ffi_call` inside the jitted program on the CPU
backend only; on GPU/TPU, or when the kernel is not available, they run their JAX path,
which gives the same numbers (tests compare both with each other and with empyrical).

The shared library is built once per machine and source version into the cache folder
($JAXTRADE_CACHE_DIR, else $XDG_CACHE_HOME/jaxtrade, else ~/.cache/jaxtrade) with
`$CXX` (else g++, c++ or clang++), `-O3 -march=native` plus $JAXTRADE_NATIVE_CXXFLAGS,
and the FFI headers that ship with jaxlib. Set JAXTRADE_NATIVE=0 to never build or use it.
A failed build prints one warning with the compiler's message and the metrics fall back to
JAX.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path

SOURCE = Path(__file__).with_name("row_stats.cc")
TARGET = "jaxtrade_row_stats"
TARGET_POSITIONS = "jaxtrade_row_stats_positions"

#: Column order of the kernel's [..., len(ROW_STATS)] output (the Stat enum in row_stats.cc).
ROW_STATS = (
    "mean",
    "m2",
    "m3",
    "m4",
    "log_growth",
    "downside",
    "wins",
    "losses",
    "winning",
    "nonzero",
    "max_drawdown",
    "max_drawdown_duration",
    "var_5",
    "cvar_5",
    "var_95",
)

#: The further columns when positions [..., T, A] are passed (TARGET_POSITIONS): trades,
#: their mean return, mean per-bar turnover (sum over assets) and the fraction of bars held.
POSITION_STATS = ("num_trades", "avg_trade_return", "turnover", "exposure")

_lock = threading.Lock()
_state: dict[str, object] = {}


def enabled() -> bool:
    """False when JAXTRADE_NATIVE=0 (or off/false/no) asks for the JAX path only."""
    return os.environ.get("JAXTRADE_NATIVE", "1").strip().lower() not in {"0", "off", "false",
                                                                          "no"}


def cache_dir() -> Path:
    """jaxtrade's cache folder: the native kernel here, JAX's compilation cache below it."""
    if os.environ.get("JAXTRADE_CACHE_DIR"):
        return Path(os.environ["JAXTRADE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "jaxtrade"


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_signature() -> str:
    """What -march=native depends on: the CPU model and its feature flags."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags"))]
        return "\n".join(sorted(set(lines)))
    except OSError:
        return f"{platform.machine()} {platform.processor()}"


def _flags(include: str) -> list[str]:
    extra = shlex.split(os.environ.get("JAXTRADE_NATIVE_CXXFLAGS", ""))
    return ["-O3", "-march=native", "-std=c++17", "-fPIC", "-shared", "-fopenmp-simd",
            "-fno-math-errno", f"-I{include}", *extra]


def library_path() -> Path | None:
    """Path of the compiled kernel, building it if needed; None (with a warning) on failure."""
    import jax
    import jaxlib

    compiler = _compiler()
    if compiler is None:
        _warn("no C++ compiler found (set CXX or install g++)")
        return None
    include = jax.ffi.include_dir()
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True,
                                 timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as err:
        _warn(f"{compiler} --version failed: {err}")
        return None
    key = hashlib.sha256("\n".join([
        SOURCE.read_text(), version, _cpu_signature(), jax.__version__, jaxlib.__version__,
        " ".join(_flags(include)),
    ]).encode()).hexdigest()[:16]
    target = cache_dir() / "native" / f"row_stats-{key}.so"
    if target.exists():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return _compile(compiler, include, target)
    except OSError as err:  # an unwritable cache folder, a full disk, ...
        _warn(f"building {target} failed: {err} (set JAXTRADE_CACHE_DIR)")
        return None


def _compile(compiler: str, include: str, target: Path) -> Path | None:
    print(f"jaxtrade: compiling the native metrics kernel once for this machine -> {target}",
          file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        partial = Path(tmp) / target.name
        cmd = [compiler, *_flags(include), str(SOURCE), "-o", str(partial)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except subprocess.SubprocessError as err:
            _warn(f"compiling failed: {err}")
            return None
        if done.returncode != 0:
            _warn(f"compiling failed ({' '.join(cmd)}):\n{done.stderr[-2000:]}")
            return None
        os.replace(partial, target)  # atomic: concurrent builders each publish a whole file
    return target


def _warn(message: str) -> None:
    warnings.warn(f"jaxtrade native metrics kernel unavailable, using the JAX path: {message}",
                  RuntimeWarning, stacklevel=3)


def available() -> bool:
    """Whether the row-statistics kernel is built and registered with XLA for CPU.

    Builds and registers it on the first call (thread-safe); later calls are free.
    """
    if not enabled():
        return False
    with _lock:
        if "ok" not in _state:
            _state["ok"] = _register()
        return bool(_state["ok"])


def _register() -> bool:
    import jax

    if platform.system() != "Linux" and platform.system() != "Darwin":
        return False
    path = library_path()
    if path is None:
        return False
    try:
        library = ctypes.CDLL(str(path))
        count = int(ctypes.CFUNCTYPE(ctypes.c_int64)(("jaxtrade_row_stats_count", library))())
        if count != len(ROW_STATS) + len(POSITION_STATS):
            _warn(f"{path} has {count} statistics, expected "
                  f"{len(ROW_STATS) + len(POSITION_STATS)}")
            return False
        jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(library.JaxtradeRowStats),
                                    platform="cpu")
        jax.ffi.register_ffi_target(
            TARGET_POSITIONS, jax.ffi.pycapsule(library.JaxtradeRowStatsPositions),
            platform="cpu")
    except (OSError, AttributeError, ValueError) as err:
        _warn(f"loading {path} failed: {err}")
        return False
    _state["library"] = library  # keep it loaded
    return True
