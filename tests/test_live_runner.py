"""The runner on bad input, tampered bundles, SIGKILL, warm start and a numpy-only venv."""

from __future__ import annotations

import ast
import json
import logging
import math
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
from live_helpers import reseal, shared_case
from test_export_parity import run_bundle

import jaxtrade.live
from jaxtrade.live.bars import parse_timestamp
from jaxtrade.live.bundle import load_bundle
from jaxtrade.live.cli import main as live_main
from jaxtrade.live.engine import Runner
from jaxtrade.live.errors import BundleError
from jaxtrade.live.sinks import Sink
from jaxtrade.live.sources import CsvReplaySource
from jaxtrade.live.store import ReplayStore


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
                # pyarrow only inside the optional Parquet source, onnxruntime only inside the
                # optional ONNX engine, each behind an ImportError guard.
                optional = {"pyarrow": "sources.py", "onnxruntime": "onnx_engine.py"}
                assert top in allowed or optional.get(top) == path.name, (
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
    with pytest.raises(BundleError, match="manifest.json: sha256 .* refusing"):
        load_bundle(escape)  # the manifest is covered by SHA256SUMS too
    reseal(escape)
    with pytest.raises(BundleError, match="not allowed"):
        load_bundle(escape)
    # A weight file that is a symbolic link (even to identical bytes) is refused.
    linked = tmp_path / "linked"
    shutil.copytree(bundle, linked)
    (linked / "weights.safetensors").rename(tmp_path / "elsewhere.safetensors")
    (linked / "weights.safetensors").symlink_to(tmp_path / "elsewhere.safetensors")
    with pytest.raises(BundleError, match="symbolic link"):
        load_bundle(linked)


def _edit(manifest, path, value):
    *parents, last = path
    for key in parents:
        manifest = manifest[key]
    manifest[last] = value


@pytest.mark.parametrize(
    "path, value, message",
    [
        (("features", "normalizer", "center", 0), math.nan, "NaN"),
        (("features", "normalizer", "scale", 3), 0.0, "scale[3] is 0.0; expected a positive"),
        (("observation", "window_bars"), 8, "shape"),
        (("observation", "window_bars"), "16", "window_bars"),
        (("action", "mode"), "sideways", "action.mode"),
        (("action", "discrete_levels"), [1.0, "x"], "discrete_levels"),
        (("costs", "fee_bps"), -1.0, "costs.fee_bps"),
        (("trading", "initial_equity"), 0.0, "trading.initial_equity"),
        (("market", "atr_window"), 0, "market.atr_window"),
        (("features", "normalizer", "center"), [0.0], "center"),
    ],
    ids=["nan-stats", "zero-scale", "window", "window-text", "mode", "levels", "fee",
         "equity", "atr", "stats-length"],
)
def test_bad_manifest_values_stop_the_runner_at_start_with_one_line(
    case, tmp_path, capsys, path, value, message
):
    _, bundle, csv, _ = case
    bad = tmp_path / "bad"
    shutil.copytree(bundle, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    _edit(manifest, path, value)
    (bad / "manifest.json").write_text(json.dumps(manifest))
    reseal(bad)
    assert live_main(["--bundle", str(bad), "--bars", str(csv)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and message in err, err


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


def test_a_bar_from_2099_or_a_lone_jump_moves_neither_the_stream_nor_the_resume_point(
    case, tmp_path
):
    result, bundle, csv, _ = case
    lines = csv.read_text().splitlines()
    header, rows = lines[0], lines[1:]
    k = next(i for i, r in enumerate(rows) if r.startswith(str(result.timestamps[0])[:10])) + 20
    future = "2099-01-01T00:00:00.000000,1,2,0.5,1.5,100"  # ahead of the clock
    jump = "2021-06-01T00:00:00.000000,1,2,0.5,1.5,100"  # years after its neighbours
    dirty = tmp_path / "dirty.csv"
    dirty.write_text("\n".join([header, *rows[:k], future, *rows[k:k + 30], jump,
                                *rows[k + 30:]]) + "\n")
    store = tmp_path / "replay.sqlite"
    proc, decisions, summary = run_bundle(bundle, "--bars", dirty, "--store", store,
                                          "--start", _start(result))
    assert proc.returncode == 0, proc.stderr
    assert "ahead of this machine's clock" in proc.stderr and "not confirmed" in proc.stderr
    assert summary["rejected_bars"] == 2
    np.testing.assert_array_equal(
        [d["target_position"] for d in decisions][:-1], result.target_positions[:-1, 0]
    )
    with sqlite3.connect(store) as db:
        last = db.execute("SELECT MAX(timestamp_us) FROM bars").fetchone()[0]
    assert last == parse_timestamp(rows[-1].split(",")[0])  # the last real bar
    # A restart on the same file resumes after the last real bar: nothing new, nothing lost.
    again, more, summary = run_bundle(bundle, "--bars", dirty, "--store", store,
                                      "--start", _start(result))
    assert again.returncode == 0, again.stderr
    assert more == [] and summary["rejected_bars"] == 0


class _Killed(BaseException):
    """Stands in for SIGKILL between the store's commit and the printed line."""


class _ListSink(Sink):
    def __init__(self, kill_at: int | None = None) -> None:
        self.decisions: list[dict] = []
        self.kill_at = kill_at

    def emit(self, decision: dict) -> None:
        if len(self.decisions) == self.kill_at:
            raise _Killed
        self.decisions.append(decision)


def test_restart_prints_a_stored_unprinted_decision_and_counts_no_rejection_twice(
    case, tmp_path
):
    result, bundle, csv, _ = case
    lines = csv.read_text().splitlines()
    header, rows = lines[0], lines[1:]
    k = next(i for i, r in enumerate(rows) if r.startswith(str(result.timestamps[0])[:10]))
    junk = ["not,a,bar,at,all,!", "x,1,2,0.5,1.5,100"]
    dirty = tmp_path / "dirty.csv"
    dirty.write_text("\n".join([header, *rows[:k + 5], *junk, *rows[k + 5:k + 40], *junk,
                                *rows[k + 40:]]) + "\n")
    start_us = parse_timestamp(_start(result))
    store_path = tmp_path / "replay.sqlite"
    first = _ListSink(kill_at=20)  # the 21st decision is stored, then the process dies
    runner = Runner(load_bundle(bundle), sink=first, store=ReplayStore(store_path))
    with pytest.raises(_Killed):
        runner.run(CsvReplaySource(dirty, runner.format), start_us=start_us)
    runner.store.close()
    assert runner.rejected == 2

    second = _ListSink()
    store = ReplayStore(store_path)
    runner = Runner(load_bundle(bundle), sink=second, store=store)
    resume = runner.replay_store(start_us)
    assert runner.emit_unemitted() == 1
    summary = runner.run(CsvReplaySource(dirty, runner.format), start_us=start_us,
                         resume_after_us=resume)
    printed = [d["target_position"] for d in first.decisions + second.decisions]
    np.testing.assert_array_equal(printed[:-1], result.target_positions[:-1, 0])
    assert summary["rejected_bars"] == 2  # only the junk after the restart point
    assert store.db.execute("SELECT COUNT(*) FROM rejections").fetchone()[0] == 4
    assert store.unemitted_lines() == []


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
    sent = 0
    for line in records:
        proc.stdin.write(line + "\n")
        sent += 1
        proc.stdin.flush()
        if parse_timestamp(json.loads(line)["timestamp"]) >= start_us:
            acknowledged.append(json.loads(proc.stdout.readline()))
        if len(acknowledged) == 60:
            break
    # The next 5 bars are in flight at the kill: the runner may have stored any prefix of them
    # (on a loaded machine often all five), and the restart must go on the same either way.
    for line in records[sent : sent + 5]:
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
    # Printing is at least once: a line printed but not yet marked in the store when the kill
    # came is printed again, identical; nothing acknowledged is skipped or changed.
    resumed = [d for d in decisions if parse_timestamp(d["timestamp"]) <= parse_timestamp(
        acknowledged[-1]["timestamp"])]
    assert len(resumed) <= 1
    for again in resumed:
        assert {**again, "latency_us": 0} == {**acknowledged[-1], "latency_us": 0}


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
    # The pass the runner makes: with the critic's value for a bundle that holds one.
    name = "forward_with_value" if runner.network.has_value else "forward"
    forward, calls = getattr(runner.network, name), []

    def flaky(obs, carry):
        calls.append(1)
        if len(calls) == 5:
            raise FloatingPointError("simulated numeric failure")
        return forward(obs, carry)

    setattr(runner.network, name, flaky)
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
