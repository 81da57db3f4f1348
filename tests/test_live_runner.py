"""The runner on bad input, tampered bundles, SIGKILL, warm start and a numpy-only venv."""

from __future__ import annotations

import ast
import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

import numpy as np
import pytest
from live_helpers import shared_case
from test_export_parity import run_bundle

import jaxtrade.live
from jaxtrade.live.bars import parse_timestamp
from jaxtrade.live.bundle import load_bundle
from jaxtrade.live.engine import Runner
from jaxtrade.live.errors import BundleError


@pytest.fixture(scope="module")
def case():
    return shared_case()


def _start(result) -> str:
    return str(result.timestamps[0]) + "Z"


def test_live_package_imports_numpy_and_the_standard_library_only():
    allowed = set(sys.stdlib_module_names) | {"numpy"}
    for path in Path(jaxtrade.live.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                # pyarrow only inside the optional Parquet source, behind an ImportError guard.
                assert top in allowed or (top == "pyarrow" and path.name == "sources.py"), (
                    f"{path.name} imports {name}"
                )


def test_tampered_weights_and_escaping_manifests_are_refused(case, tmp_path):
    _, bundle, csv, _ = case
    bad = tmp_path / "tampered"
    shutil.copytree(bundle, bad)
    weights = bad / "weights.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-5] ^= 0x01  # one bit of one weight
    weights.write_bytes(bytes(raw))
    proc, decisions, _ = run_bundle(bad, "--bars", csv)
    assert proc.returncode == 2 and decisions == []
    assert "sha256" in proc.stderr and "refusing" in proc.stderr
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["weights"] = {"../weights.safetensors": "0" * 64}
    escape = tmp_path / "escape"
    shutil.copytree(bundle, escape)
    (escape / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="not allowed"):
        load_bundle(escape)


def test_bad_bars_are_logged_and_skipped_without_changing_decisions(case, tmp_path):
    result, bundle, csv, _ = case
    lines = csv.read_text().splitlines()
    header, rows = lines[0], lines[1:]
    first_trading = next(
        i for i, r in enumerate(rows) if r.startswith(str(result.timestamps[0])[:10])
    )
    k = first_trading + 20
    stamp = rows[k].split(",")[0]
    earlier = rows[k - 5].split(",")[0]
    bad = [
        f"{stamp},1,2,0.5,1.5,100",  # duplicate timestamp
        f"{earlier},1,2,0.5,1.5,100",  # out of order
        "2099-01-01T00:00:00Z,1,2",  # malformed: too few fields
    ]
    rows = rows[: k + 1] + bad + rows[k + 1 :]
    m = k + 30  # bars with bad values at a new timestamp, before the real bar of that day
    day = rows[m].split(",")[0]
    rows = (
        rows[:m]
        + [f"{day},-1,2,0.5,1.5,100", f"{day},1,2,0.5,inf,100", f"{day},abc,2,0.5,1.5,100"]
        + rows[m:]
    )
    dirty = tmp_path / "dirty.csv"
    dirty.write_text("\n".join([header, *rows]) + "\n")
    proc, decisions, summary = run_bundle(bundle, "--bars", dirty, "--start", _start(result))
    assert proc.returncode == 0, proc.stderr
    for reason in (
        "duplicate timestamp",
        "out-of-order",
        "3 fields",
        "non-positive open",
        "non-finite close",
        "malformed open",
    ):
        assert reason in proc.stderr, reason
    assert summary["rejected_bars"] == 6
    np.testing.assert_array_equal(
        [d["target_position"] for d in decisions][:-1], result.target_positions[:-1, 0]
    )


def test_gaps_are_reported_and_trading_goes_on(case, caplog):
    result, bundle, _, frame = case
    runner = Runner(load_bundle(bundle))
    stamps = frame["timestamp"].dt.epoch("us").to_list()
    rows = list(
        zip(stamps, *[frame[c].to_list() for c in ("open", "high", "low", "close", "volume")])
    )
    cut = len(rows) - 40
    with caplog.at_level(logging.WARNING, logger="jaxtrade.live"):
        for t, o, h, lo, c, v in rows[:cut] + rows[cut + 15 :]:  # three missing weeks
            runner.process(
                {"timestamp": t / 1e6, "open": o, "high": h, "low": lo, "close": c, "volume": v}
            )
    assert any("gap of" in r.message for r in caplog.records)
    fed = len(rows) - 15
    assert runner.decisions == fed - runner.window_bars + 1  # every bar after the window decides


def test_warm_start_from_the_last_window_decides_at_the_first_bar(case, tmp_path):
    result, bundle, csv, _ = case
    window = json.loads((bundle / "manifest.json").read_text())["observation"]["window_bars"]
    lines = csv.read_text().splitlines()
    start = _start(result)
    first = next(i for i, r in enumerate(lines[1:]) if r.startswith(start[:10]))
    short = tmp_path / "recent.csv"
    short.write_text("\n".join([lines[0]] + lines[1:][first - window + 1 :]) + "\n")
    proc, decisions, _ = run_bundle(bundle, "--bars", short, "--start", start)
    assert proc.returncode == 0, proc.stderr
    assert decisions[0]["timestamp"][:10] == start[:10]  # valid immediately, no idle bars
    assert len(decisions) == len(result.target_positions)


def test_sigkill_loses_no_acknowledged_bar_and_restart_resumes_exactly(case, tmp_path):
    result, bundle, csv, frame = case
    store = tmp_path / "replay.sqlite"
    records = [json.dumps(dict(zip(frame.columns, row)), default=str) for row in frame.rows()]
    start_us = parse_timestamp(_start(result))
    args = [
        sys.executable,
        str(bundle / "runner.py"),
        "--stdin",
        "--store",
        str(store),
        "--start",
        _start(result),
    ]
    proc = subprocess.Popen(
        args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
    )
    acknowledged = []
    for line in records:
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
        if parse_timestamp(json.loads(line)["timestamp"]) >= start_us:
            acknowledged.append(json.loads(proc.stdout.readline()))
        if len(acknowledged) == 60:
            break
    for line in records[len(records) - 100 : len(records) - 95]:  # more bars in flight
        proc.stdin.write(line + "\n")
    proc.stdin.flush()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    with sqlite3.connect(store) as db:
        stored = {
            r[0]: r[1] for r in db.execute("SELECT timestamp_us, target_position FROM decisions")
        }
    for decision in acknowledged:
        stamp = parse_timestamp(decision["timestamp"])
        assert stored[stamp] == decision["target_position"]

    # Restart on the full history with the same store: it rebuilds its state from the store,
    # skips the bars already there, and trades on exactly as an uninterrupted run.
    restarted, decisions, _ = run_bundle(
        bundle, "--bars", csv, "--store", store, "--start", _start(result)
    )
    assert restarted.returncode == 0, restarted.stderr
    with sqlite3.connect(store) as db:
        rows = db.execute("SELECT target_position FROM decisions ORDER BY timestamp_us").fetchall()
        fills = db.execute("SELECT COUNT(*) FROM fills").fetchone()[0]
    np.testing.assert_array_equal([r[0] for r in rows][:-1], result.target_positions[:-1, 0])
    assert fills > 0
    assert parse_timestamp(decisions[0]["timestamp"]) > parse_timestamp(
        acknowledged[-1]["timestamp"]
    )


@pytest.mark.slow
def test_bundle_runs_in_a_fresh_venv_with_only_numpy(case, tmp_path_factory):
    result, bundle, csv, _ = case
    # Cached across sessions in the temp dir: built once (~10 s), reused while it works.
    env_dir = (
        Path(tempfile.gettempdir())
        / f"jaxtrade-numpy-only-py{sys.version_info[0]}{sys.version_info[1]}"
    )
    python = env_dir / "bin" / "python"
    ok = (
        python.exists()
        and subprocess.run([str(python), "-c", "import numpy"], capture_output=True).returncode == 0
    )
    if not ok:
        venv.EnvBuilder(with_pip=True, system_site_packages=False, clear=True).create(env_dir)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "numpy"], check=True, timeout=300
        )
    probe = subprocess.run([str(python), "-c", "import jax"], capture_output=True)
    assert probe.returncode != 0  # really no JAX there
    # A copy outside the repository, so nothing of jaxtrade can be picked up by accident.
    copy = tmp_path_factory.mktemp("shipped") / "bundle"
    shutil.copytree(bundle, copy)
    proc, decisions, summary = run_bundle(
        copy, "--bars", csv, "--start", _start(result), python=str(python)
    )
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(
        [d["target_position"] for d in decisions][:-1], result.target_positions[:-1, 0]
    )
    assert summary["total_return"] == pytest.approx(result.metrics["total_return"], abs=1e-6)


def test_an_internal_failure_on_one_bar_is_logged_and_the_runner_goes_on(case, caplog):
    _, bundle, _, frame = case
    runner = Runner(load_bundle(bundle))
    forward, calls = runner.network.forward, []

    def flaky(obs, carry):
        calls.append(1)
        if len(calls) == 5:
            raise FloatingPointError("simulated numeric failure")
        return forward(obs, carry)

    runner.network.forward = flaky
    rows = list(
        zip(
            frame["timestamp"].dt.epoch("us").to_list(),
            *[frame[c].to_list() for c in ("open", "high", "low", "close", "volume")],
        )
    )
    with caplog.at_level(logging.ERROR, logger="jaxtrade.live"):
        decided = [
            runner.process(
                {"timestamp": t / 1e6, "open": o, "high": h, "low": lo, "close": c, "volume": v}
            )
            for t, o, h, lo, c, v in rows
        ]
    assert any("internal error" in r.message for r in caplog.records)
    assert sum(d is not None for d in decided) == len(rows) - runner.window_bars  # one lost
