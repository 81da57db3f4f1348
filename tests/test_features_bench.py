"""Smoke test of scripts/bench_features.py (small size): it runs and its numbers agree."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_features.py"


def test_bench_features_quick() -> None:
    pytest.importorskip("ta")
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--repeats", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    rows = {
        line.split()[0]: line.split()
        for line in done.stdout.splitlines()
        if re.match(r"^(RSI|MACD|ATR|ADX|CCI|OBV|Stochastic|Williams|total) ", line)
    }
    assert {"RSI", "MACD", "ATR", "ADX", "CCI", "OBV", "Stochastic", "Williams", "total"} <= set(
        rows
    )
    for name, row in rows.items():
        if name != "total":  # total includes Bollinger, where `ta`'s rolling std drifts
            assert float(row[-1]) <= 1e-6, row
    assert "full default feature set" in done.stdout
