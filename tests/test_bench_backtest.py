"""scripts/bench_backtest.py runs with --help (its full run is a benchmark, not a test)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_backtest.py"


def test_bench_backtest_help_names_the_sweep_sizes() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True,
                          text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=120,
                          check=True)
    assert "--trials" in done.stdout and "--paths" in done.stdout and "--quick" in done.stdout
