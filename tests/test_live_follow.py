"""The live runner follows promotions (--bundle-pointer) and raises drift and degradation alerts.

Bundles are written from random policies on one small steady market (i.i.d. returns, one
regime: the distribution the drift test treats as "training's"): a switch keeps the ledger,
store and open position; a tampered bundle or one trading another book is refused with an
alert while the running bundle keeps trading; the returns' PSI stays quiet on held-out bars of
the same distribution (false alarms <= 2 %) and alerts within 150 bars after the volatility
triples, and `--on-drift flat` holds no position from then until a promotion.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from live_helpers import build_market, make_policy

import envs
from jaxtrade.data.synthetic import synthetic_frame
from jaxtrade.export import write_bundle
from jaxtrade.live.bars import Bar
from jaxtrade.live.bundle import load_bundle
from jaxtrade.live.engine import Runner
from jaxtrade.live.monitor import Monitor, psi, reference_bins
from jaxtrade.live.pointer import swap_pointer
from jaxtrade.live.sinks import Sink
from jaxtrade.live.store import ReplayStore

# i.i.d. daily returns, 1 % volatility: one regime, no clustering, no jumps.
STEADY = {
    "regime_drift": [0.0003] * 3,
    "regime_vol": [0.01] * 3,
    "garch_alpha": 0.0,
    "garch_beta": 0.0,
    "jump_prob": [0.0] * 3,
}
LEVELS = (-1.0, 0.0, 1.0)


def steady_frame(bars: int, seed: int = 0) -> pl.DataFrame:
    return synthetic_frame(seed=seed, num_bars=bars, num_assets=1, **STEADY)


def _bundle(folder: Path, frame: pl.DataFrame, seed: int, **env_overrides) -> Path:
    market = build_market(frame)
    env, env_params = envs.make(
        "trading", market, window_bars=8, discrete_levels=LEVELS, **env_overrides
    )
    cfg, params, _ = make_policy(env, env_params, seed=seed)
    return write_bundle(
        folder,
        params=params,
        network_config=cfg,
        env=env,
        env_params=env_params,
        monitor={"backtest_max_drawdown": -0.5},
    )


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """(folder, training frame, bundle A, bundle B, bundle with other costs)."""
    root = tmp_path_factory.mktemp("follow")
    frame = steady_frame(3000)
    a = _bundle(root / "a", frame, seed=0)
    b = _bundle(root / "b", frame, seed=1)
    other = _bundle(root / "other", frame, seed=1, fee_bps=7.0)
    return root, frame, a, b, other


class Recorder(Sink):
    def __init__(self) -> None:
        self.decisions: list[dict] = []
        self.alerts: list[dict] = []

    def emit(self, decision: dict) -> None:
        self.decisions.append(decision)

    def alert(self, payload: dict) -> None:
        self.alerts.append(payload)


def _bars(frame: pl.DataFrame) -> list[Bar]:
    stamps = frame["timestamp"].dt.epoch("us").to_list()
    rows = frame.select("open", "high", "low", "close", "volume").rows()
    return [Bar(int(t), *row) for t, row in zip(stamps, rows, strict=True)]


def _runner(pointer: Path, tmp: Path, **kwargs) -> tuple[Runner, Recorder, ReplayStore]:
    from jaxtrade.live.pointer import read_pointer

    sink, store = Recorder(), ReplayStore(tmp / "replay.sqlite")
    runner = Runner(
        load_bundle(read_pointer(pointer)),
        sink=sink,
        store=store,
        max_ahead_seconds=0,
        max_jump_seconds=0,
        pointer=pointer,
        **kwargs,
    )
    return runner, sink, store


def test_a_promotion_takes_over_at_the_next_bar_and_the_book_carries_on(bundles, tmp_path):
    _, frame, a, b, _ = bundles
    pointer = swap_pointer(tmp_path / "deployed", a)
    runner, sink, store = _runner(pointer, tmp_path)
    bars = _bars(frame.tail(400))
    k = 0
    while k < 150 or runner.ledger.position_weight() == 0.0:  # switch with a position open
        runner.process(bars[k])
        k += 1
    ledger, units = runner.ledger, runner.ledger.units
    swap_pointer(pointer, b)
    assert runner.bundle_root == a  # nothing happens until the next bar
    runner.process(bars[k])
    assert runner.bundle_root == b and runner.switches == 1
    # The same ledger, its open position filled and marked on the first bar after the switch.
    assert runner.ledger is ledger and units != 0.0
    assert sink.decisions[-1]["timestamp"] == bars[k].iso
    # B's features, warmed up on the same bars, equal a runner that ran B from the start.
    alone = Runner(load_bundle(b), max_ahead_seconds=0, max_jump_seconds=0)
    for bar in bars[: k + 1]:
        alone.process(bar, trade=False)
    np.testing.assert_array_equal(runner.latest_row(), alone.latest_row())
    for bar in bars[k + 1 :]:
        runner.process(bar)
    assert len(sink.decisions) == runner.decisions == len(bars) - 7  # window of 8 bars
    ((kind, event, after),) = store.events("bundle_switched")
    assert event["from"] == str(a) and event["to"] == str(b)
    assert after == bars[k - 1].timestamp_us
    assert runner.summary()["bundle_switches"] == 1


def test_a_tampered_or_incompatible_bundle_is_refused_and_the_incumbent_trades_on(
    bundles, tmp_path
):
    _, frame, a, b, other = bundles
    bad = tmp_path / "bad"
    shutil.copytree(b, bad)
    weights = bad / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    pointer = swap_pointer(tmp_path / "deployed", a)
    runner, sink, store = _runner(pointer, tmp_path)
    bars = _bars(frame.tail(300))
    for bar in bars[:100]:
        runner.process(bar)
    before = runner.decisions
    swap_pointer(pointer, bad)
    for bar in bars[100:150]:
        runner.process(bar)
    assert runner.bundle_root == a and runner.decisions == before + 50
    swap_pointer(pointer, other)
    for bar in bars[150:200]:
        runner.process(bar)
    assert runner.bundle_root == a and runner.decisions == before + 100
    refused = [x for x in sink.alerts if x["kind"] == "bundle_refused"]
    assert len(refused) == 2  # once per bundle, not once per bar
    assert "sha256" in refused[0]["message"] and "costs" in refused[1]["message"]
    assert [k for k, _, _ in store.events()].count("bundle_refused") == 2
    swap_pointer(pointer, b)  # a good promotion after the bad ones is taken
    runner.process(bars[200])
    assert runner.bundle_root == b


def _psi_stream(returns: np.ndarray, reference: dict, window: int = 150) -> np.ndarray:
    return np.array(
        [psi(returns[i - window : i], reference) for i in range(window, returns.size + 1)]
    )


def test_return_psi_false_alarm_rate_on_held_out_bars_is_at_most_two_percent():
    for seed in range(3):
        r = np.diff(np.log(steady_frame(9000, seed=seed)["close"].to_numpy()))
        reference = reference_bins(r[:3000])
        values = _psi_stream(r[3000:], reference)
        assert (values > 0.25).mean() <= 0.02  # every bar's check
        assert (values[::150] > 0.25).mean() <= 0.02  # disjoint 150-bar windows


def test_drift_alert_within_150_bars_of_a_volatility_tripling_and_none_without(bundles, tmp_path):
    _, frame, a, b, _ = bundles
    held = steady_frame(3600, seed=5)
    calm = _bars(held)
    pointer = swap_pointer(tmp_path / "deployed", a)
    runner, sink, _ = _runner(pointer, tmp_path, monitor={"min_sharpe": None})
    for bar in calm:
        runner.process(bar)
    assert [x for x in sink.alerts if x["kind"] == "drift"] == []

    # The same stream with every return after bar 3000 three times larger.
    close = held["close"].to_numpy()
    r = np.diff(np.log(close))
    r[2999:] *= 3.0
    shifted_close = close[0] * np.exp(np.concatenate([[0.0], np.cumsum(r)]))
    scale = shifted_close / close
    shifted = held.with_columns(*(pl.col(c) * scale for c in ("open", "high", "low", "close")))
    (tmp_path / "s").mkdir()
    pointer = swap_pointer(tmp_path / "s" / "deployed", a)
    runner, sink, store = _runner(
        pointer, tmp_path / "s", monitor={"min_sharpe": None}, on_drift="flat"
    )
    bars = _bars(shifted)
    drift = lambda: [x for x in sink.alerts if x["kind"] == "drift"]  # noqa: E731
    for bar in bars[:3000]:
        runner.process(bar)
    assert drift() == []
    first = None
    for i, bar in enumerate(bars[3000:3300]):
        runner.process(bar)
        if drift() and first is None:
            first = i + 1
            assert drift()[0]["psi"] > 0.25
    assert first is not None and first <= 150, first
    # Flat from the alert on: every later decision targets no position.
    flat = [d for d in sink.decisions if d["timestamp"] > bars[3000 + first - 1].iso]
    assert flat and all(d["target_position"] == 0.0 and "flat" in d for d in flat)
    assert store.events("drift")
    # A promotion ends the flat spell.
    swap_pointer(pointer, b)
    runner.process(bars[3300])
    assert not runner.flat_until_promotion and "flat" not in sink.decisions[-1]


def _shifted(held: pl.DataFrame, at: int = 3000, factor: float = 3.0) -> pl.DataFrame:
    """The same bars with every return from bar `at` on `factor` times larger."""
    close = held["close"].to_numpy()
    r = np.diff(np.log(close))
    r[at - 1 :] *= factor
    scale = close[0] * np.exp(np.concatenate([[0.0], np.cumsum(r)])) / close
    return held.with_columns(*(pl.col(c) * scale for c in ("open", "high", "low", "close")))


def test_feature_drift_quiet_on_held_out_bars_and_alerts_after_a_volatility_tripling(
    bundles, tmp_path
):
    """The policy's inputs against the bundle's training-split deciles: on held-out bars of
    the training distribution the median feature PSI crosses 0.5 at <= 2 % of the bars (and
    raises no alert); after the volatility triples the alert comes within 200 bars and names
    the features that moved."""
    _, _, a, _, _ = bundles
    manifest = load_bundle(a).manifest
    section = manifest["monitor"]["features"]
    assert len(section["names"]) == len(section["bins"]) == 62
    assert sum(b is not None for b in section["bins"]) >= 40
    for seed in (5, 6):
        held = steady_frame(3000, seed=seed)
        runner = Runner(load_bundle(a), max_ahead_seconds=0, max_jump_seconds=0,
                        monitor={"min_sharpe": None, "drift_psi": None}, sink=Recorder())
        medians = []
        for bar in _bars(held):
            runner.process(bar)
            medians.append(runner.monitor.last_feature_psi)
        checked = np.asarray(medians[300:])
        assert np.isfinite(checked).all()
        assert (checked > 0.5).mean() <= 0.02, (checked > 0.5).mean()
        assert [x for x in runner.sink.alerts if x["kind"] == "feature_drift"] == []

    bars = _bars(_shifted(steady_frame(3600, seed=5)))
    runner, sink, store = _runner(swap_pointer(tmp_path / "deployed", a), tmp_path,
                                  monitor={"min_sharpe": None, "drift_psi": None})
    for bar in bars[:3000]:
        runner.process(bar)
    first = None
    for i, bar in enumerate(bars[3000:3400]):
        runner.process(bar)
        alerts = [x for x in sink.alerts if x["kind"] == "feature_drift"]
        if alerts and first is None:
            first = i + 1
            assert alerts[0]["median_psi"] > 0.5 and len(alerts[0]["features"]) == 5
    assert first is not None and first <= 200, first
    assert store.events("feature_drift")


def test_degradation_alerts_fire_once_per_crossing(bundles):
    _, frame, a, _, _ = bundles
    manifest = load_bundle(a).manifest
    assert manifest["monitor"]["backtest_max_drawdown"] == -0.5
    monitor = Monitor(
        manifest,
        bars_per_year=252.0,
        sharpe_window=20,
        min_sharpe=1.0,
        max_drawdown=-0.05,
        drift_psi=None,
    )
    equity = np.concatenate(
        [np.linspace(1.0, 1.2, 30), np.linspace(1.2, 1.0, 30), np.linspace(1.0, 1.5, 60)]
    )
    kinds = []
    for i, value in enumerate(equity):
        kinds += [x["kind"] for x in monitor.on_bar(100.0, float(value), str(i))]
    # Falling: the Sharpe alert, then the drawdown alert once past -5 %; rising again both
    # clear, and nothing repeats while a condition lasts.
    assert kinds == ["sharpe", "drawdown"]
    # A Sharpe hovering at the threshold alerts once, not at every crossing: returns cycling
    # +1 %, +1 %, -2 % put the 20-bar Sharpe above 0 one bar in three.
    hover = Monitor(manifest, bars_per_year=252.0, sharpe_window=20, min_sharpe=0.0, drift_psi=None)
    equity = np.cumprod(1.0 + np.tile([0.01, 0.01, -0.02], 100))
    kinds = [x["kind"] for i, v in enumerate(equity) for x in hover.on_bar(100.0, v, str(i))]
    assert kinds == ["sharpe"]


def test_live_cli_takes_a_bundle_pointer(bundles, tmp_path):
    from jaxtrade.live.cli import main

    _, frame, a, _, _ = bundles
    pointer = swap_pointer(tmp_path / "deployed", a)
    csv = tmp_path / "bars.csv"
    frame.tail(200).write_csv(csv)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["--bundle-pointer", str(pointer), "--bars", str(csv), "--no-monitor"])
    assert code == 0
    lines = out.getvalue().splitlines()
    assert json.loads(lines[-1])["summary"]["decisions"] == len(lines) - 1 > 100


def test_alerts_reach_a_webhook_through_the_stores_outbox(bundles, tmp_path, monkeypatch):
    import http.server
    import threading

    from jaxtrade.live.sinks import WebhookSink

    received: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (the stdlib's name)
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("JT_ALERTS", f"http://127.0.0.1:{httpd.server_address[1]}/")
        _, frame, a, _, _ = bundles
        store = ReplayStore(tmp_path / "replay.sqlite")
        sink = WebhookSink("JT_ALERTS", store=store)
        runner = Runner(
            load_bundle(a),
            sink=sink,
            store=store,
            max_ahead_seconds=0,
            max_jump_seconds=0,
            monitor={"min_sharpe": 100.0, "sharpe_window": 20},
        )
        for bar in _bars(frame.tail(60)):
            runner.process(bar)
        sink.close()
    finally:
        httpd.shutdown()
        httpd.server_close()
    alerts = [r["alert"] for r in received if "alert" in r]
    assert [x["kind"] for x in alerts] == ["sharpe"]
    assert alerts[0]["threshold"] == 100.0 and alerts[0]["bundle"] == str(a)
    assert store.pending_alerts() == [] and store.events("sharpe")
