"""Run the process with glibc's huge-page malloc (GLIBC_TUNABLES=glibc.malloc.hugetlb=1).

XLA:CPU allocates every large temporary with malloc, and glibc serves allocations above 32 MiB
with a fresh mmap each time: every call of a program that moves hundreds of MiB (65,536 envs'
observations, 10,000 x 2,520 return paths) then page-faults its buffers in 4 KiB at a time.
With the tunable, glibc asks the kernel for 2 MiB pages on those regions (THP in "madvise"
mode, the common default), 512x fewer faults. Measured on the 2-core development VM: the env
at 65,536 envs used ~20% less CPU per step (620k-770k vs 500k-550k env-steps per CPU-second),
the metrics benchmark ran 2.4x faster, `make run` took 43 s instead of 49 s (BENCHMARKS.md).

glibc reads tunables only at process start, so the only way to turn it on from Python is to
re-execute the interpreter once with the variable set. `reexec_with_hugepages()` does that for
the `jaxtrade` command and the benchmark scripts (never for library imports); it is a no-op
off Linux/glibc, when the tunable is already set, or with JAXTRADE_NO_HUGEPAGES=1.
"""

from __future__ import annotations

import os
import platform
import sys

TUNABLE = "glibc.malloc.hugetlb=1"
OPT_OUT = "JAXTRADE_NO_HUGEPAGES"


def enabled() -> bool:
    """Whether this process runs with the huge-page malloc tunable."""
    return TUNABLE in os.environ.get("GLIBC_TUNABLES", "")


def supported() -> bool:
    """Linux with glibc >= 2.35 (the first release with glibc.malloc.hugetlb)."""
    if sys.platform != "linux":
        return False
    name, version = platform.libc_ver()
    if name != "glibc" or not version:
        return False
    major, minor = (int(x) for x in version.split(".")[:2])
    return (major, minor) >= (2, 35)


def reexec_with_hugepages() -> None:
    """Replace this process by the same command with the tunable set (once; see module doc)."""
    if enabled() or os.environ.get(OPT_OUT) or not supported():
        return
    tunables = ":".join(filter(None, [os.environ.get("GLIBC_TUNABLES"), TUNABLE]))
    env = {**os.environ, "GLIBC_TUNABLES": tunables}
    # orig_argv keeps `-m module` and interpreter options, so `python -m x` re-runs as a module.
    argv = [sys.executable, *sys.orig_argv[1:]]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)
