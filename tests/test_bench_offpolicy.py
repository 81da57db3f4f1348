"""scripts/bench_offpolicy.py runs with --help (its full run is a benchmark, not a test)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_offpolicy.py"


def test_bench_offpolicy_help_names_its_options() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True,
                          text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=120,
                          check=True)
    for option in ("--steps", "--rejax-python", "--quick", "--json"):
        assert option in done.stdout
