"""Multi-asset bundles: a run on two symbols (MarketData [T, 2, F]) with 4h features on 1h
bars trades in the numpy MultiAssetRunner exactly as the backtest did, for every symbol.

The second symbol misses some hourly bars (in training and in the test split): the runner
carries its prices, zeroes its feature row and fills no order of it there, as the market
and the env do.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from live_helpers import make_policy

import envs
from jaxtrade import features as features_lib
from jaxtrade import market as market_lib
from jaxtrade.data.splits import make_splits
from jaxtrade.data.synthetic import synthetic_frame
from jaxtrade.evaluate.backtest import backtest
from jaxtrade.export import write_bundle
from jaxtrade.live.bars import Bar
from jaxtrade.live.bundle import load_bundle
from jaxtrade.live.engine import Runner
from jaxtrade.live.errors import BundleError
from jaxtrade.live.multi import MultiAssetRunner

COARSE = [
    {"name": "rsi", "window": 14, "timeframe": "4h"},
    {"name": "atr", "timeframe": "4h"},
]


def two_asset_frame(bars: int = 900) -> pl.DataFrame:
    frame = synthetic_frame(seed=3, num_bars=bars, num_assets=2, freq="1h")
    symbols = frame["symbol"].unique(maintain_order=True).to_list()
    rng = np.random.default_rng(0)
    gone = set(rng.choice(np.arange(50, bars), size=25, replace=False).tolist())
    stamps = frame["timestamp"].unique().sort()
    drop = stamps.gather(sorted(gone)).implode()
    keep = ~((pl.col("symbol") == symbols[1]) & pl.col("timestamp").is_in(drop))
    return frame.filter(keep)


def build(frame):
    entries = [e.to_dict() for e in features_lib.default_spec().entries]
    spec = features_lib.FeatureSpec.from_dict(entries + COARSE)
    market = market_lib.build(frame, spec, make_splits(frame["timestamp"].n_unique(), 0.6, 0.2),
                              regimes=True)
    return spec, market


def stream(frame):
    stamps = frame["timestamp"].dt.epoch("us").to_list()
    columns = [frame[c].to_list() for c in ("open", "high", "low", "close", "volume")]
    return [(s, Bar(t, *v)) for s, t, *v in zip(frame["symbol"].to_list(), stamps, *columns)]


@pytest.fixture(scope="module")
def case():
    frame = two_asset_frame()
    spec, market = build(frame)
    return frame, spec, market


def _run(bundle, frame, start_us):
    runner = MultiAssetRunner(load_bundle(bundle))
    decisions = []
    for symbol, bar in stream(frame):
        for decision in runner.process(symbol, bar, trade=bar.timestamp_us >= start_us):
            decisions.append(decision)
    decisions += runner.flush()
    return runner, decisions


def test_two_asset_rows_and_targets_equal_the_backtest_for_every_symbol(case, tmp_path):
    frame, spec, market = case
    assert market.num_assets == 2
    names = market.meta.feature_names
    assert any(n.startswith("cross_corr") for n in names)
    assert any(n.startswith("turbulence") for n in names)
    assert any(n.endswith("_4h") for n in market.meta.feature_names)
    valid = np.asarray(market.valid)
    assert (valid[:, 1] == 0).sum() == 25  # the missing bars really are missing
    env, env_params = envs.make(
        "trading", market, window_bars=8, regime_caps=True, max_leverage=2.0,
        discrete_levels=(-2.0, -1.0, 0.0, 1.0, 2.0),
    )
    cfg, params, policy = make_policy(env, env_params)
    result = backtest(env, env_params, policy, split="test")
    bundle = write_bundle(tmp_path / "two", params=params, network_config=cfg, env=env,
                          env_params=env_params)
    with pytest.raises(BundleError, match="2 symbols"):
        Runner(load_bundle(bundle))

    # Normalized feature rows, every timestamp, both symbols (missing bars: zero rows).
    runner = MultiAssetRunner(load_bundle(bundle))
    rows = []
    by_time = {}
    for symbol, bar in stream(frame):
        by_time.setdefault(bar.timestamp_us, {})[runner.index[symbol]] = bar
    for ts in sorted(by_time):
        runner.step(ts, by_time[ts], trade=False)
        rows.append(runner._window[(runner.bars_seen - 1) % runner.window_bars].copy())
    np.testing.assert_allclose(np.stack(rows), np.asarray(market.features), rtol=1e-5,
                               atol=1e-5)

    start = int(result.timestamps[0].astype("datetime64[us]").astype(np.int64))
    runner, decisions = _run(bundle, frame, start)
    assert len(decisions) == len(result.timestamps)
    symbols = list(market.meta.symbols)
    targets = np.array([[d["target_positions"][s] for s in symbols] for d in decisions])
    reference = result.target_positions
    assert len(np.unique(reference[:-1, 0])) >= 3  # the policy really trades
    np.testing.assert_array_equal(targets[:-1], reference[:-1])
    positions = np.array([[d["positions"][s] for s in symbols] for d in decisions])
    np.testing.assert_allclose(positions, result.positions, atol=1e-5)
    assert any(d["missing"] for d in decisions)  # missing bars inside the test split
    assert len({d["value"] for d in decisions}) > 1  # the critic's state value, bar by bar
    summary = runner.summary()
    for key in ("total_return", "sharpe", "max_drawdown"):
        assert summary[key] == pytest.approx(result.metrics[key], rel=1e-4, abs=1e-6), key


def test_continuous_two_asset_weights_with_stops_match_the_backtest(case, tmp_path):
    frame, _, market = case
    env, env_params = envs.make("trading", market, window_bars=8, action_mode="continuous",
                                max_leverage=1.5, stop_loss_atr=2.0)
    cfg, params, policy = make_policy(env, env_params)
    result = backtest(env, env_params, policy, split="test")
    bundle = write_bundle(tmp_path / "cont", params=params, network_config=cfg, env=env,
                          env_params=env_params)
    start = int(result.timestamps[0].astype("datetime64[us]").astype(np.int64))
    runner, decisions = _run(bundle, frame, start)
    symbols = list(market.meta.symbols)
    targets = np.array([[d["target_positions"][s] for s in symbols] for d in decisions])
    reference = result.target_positions
    assert np.ptp(reference[:, 0]) > 0.5 and np.ptp(reference[:, 1]) > 0.5
    np.testing.assert_allclose(targets[:-1], reference[:-1], atol=2e-4)
    assert runner.ledger.num_stops > 0  # the stop rule really fired
    assert runner.summary()["total_return"] == pytest.approx(
        result.metrics["total_return"], abs=1e-4)


@pytest.mark.parametrize("align", ["inner", "outer"])
def test_cli_run_export_and_runner_py_reproduce_positions_csv_for_every_symbol(tmp_path, align):
    """`jaxtrade train` on a two-symbol CSV whose second symbol misses bars (in training and in
    the test split), `jaxtrade export`, then the bundle's runner.py on the same file: each
    timestamp's target weights equal the run's report/positions.csv. The runner meets the
    missing bars as the run's loading did: `align=inner` (the default) dropped those
    timestamps, so the runner skips them; `align=outer` forward-filled flat bars, so the runner
    trades them with a flat bar at the previous close."""
    import contextlib
    import io
    import json
    import subprocess
    import sys

    from live_helpers import TINY_RUN

    from jaxtrade.cli import main

    frame = synthetic_frame(seed=1, num_bars=500, num_assets=2, freq="1h")
    second = frame["symbol"].unique(maintain_order=True)[1]
    gaps = frame.filter(pl.col("symbol") == second)["timestamp"].gather([100, 101, 250, 470, 471])
    frame = frame.filter(~((pl.col("symbol") == second) & pl.col("timestamp").is_in(gaps)))
    csv = tmp_path / "two.csv"
    frame.write_csv(csv)
    run_dir, bundle = tmp_path / "run", tmp_path / "bundle"
    loading = ([] if align == "inner"
               else ["+data.options.align=outer", "+data.options.fill_gaps=ffill"])
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", *TINY_RUN, *loading, f"data.path={csv}",
                     f"run_dir={run_dir}"]) == 0
        assert main(["export", f"run_dir={run_dir}", f"out={bundle}"]) == 0
    positions = pl.read_csv(run_dir / "report" / "positions.csv").filter(
        pl.col("split") == "test")
    first = positions["timestamp"][0]
    proc = subprocess.run(
        [sys.executable, str(bundle / "runner.py"), "--bars", str(csv), "--start", first],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.strip()]
    decisions = [x for x in lines if "target_positions" in x]
    symbols = positions["symbol"].unique(maintain_order=True).to_list()
    assert len(symbols) == 2
    for symbol in symbols:
        expected = positions.filter(pl.col("symbol") == symbol)["target_position"].to_numpy()
        ours = np.array([d["target_positions"][symbol] for d in decisions])
        assert len(ours) == len(expected)
        # The report's last row is the policy's target before the risk rules (no next bar).
        np.testing.assert_allclose(ours[:-1], expected[:-1], atol=1e-6)
    summary = lines[-1]["summary"]
    assert summary["decisions"] == len(decisions)
    assert str(gaps[3]) >= first.replace("T", " ")  # two of the gaps are in the test split
    if align == "inner":
        assert summary["dropped_timestamps"] == len(gaps) and summary["missing_bars"] == 0
    else:
        assert summary["dropped_timestamps"] == 0 and summary["missing_bars"] == 5
        assert any(d["missing"] == [second] for d in decisions)


def test_runner_py_reads_a_folder_per_symbol_and_json_lines_alike(case, tmp_path):
    """The same bars as one file with a symbol column, a folder with one file per symbol, and
    JSON lines on stdin give the same decisions; a late bar is rejected, not applied."""
    import json
    import subprocess
    import sys

    frame, _, market = case
    env, env_params = envs.make("trading", market, window_bars=8)
    cfg, params, _ = make_policy(env, env_params)
    bundle = write_bundle(tmp_path / "b", params=params, network_config=cfg, env=env,
                          env_params=env_params)
    frame = frame.tail(400)
    one = tmp_path / "one.csv"
    frame.write_csv(one)
    folder = tmp_path / "per_symbol"
    folder.mkdir()
    for (symbol,), part in frame.group_by("symbol", maintain_order=True):
        part.drop("symbol").write_csv(folder / f"{symbol}.csv")
    rows = frame.with_columns(pl.col("timestamp").dt.to_string("%Y-%m-%dT%H:%M:%SZ")).to_dicts()
    late = dict(rows[10])  # a bar of a timestamp already processed
    lines = [json.dumps(r) for r in rows[:200]] + [json.dumps(late)]
    lines += [json.dumps(r) for r in rows[200:]]

    def run(*args, stdin=None):
        proc = subprocess.run([sys.executable, str(bundle / "runner.py"), *args],
                              input=stdin, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        out = [json.loads(x) for x in proc.stdout.splitlines() if x.strip()]
        return [x for x in out if "target_positions" in x], out[-1]["summary"]

    by_file, _ = run("--bars", str(one))
    by_folder, _ = run("--bars", str(folder))
    by_stdin, summary = run("--stdin", stdin="\n".join(lines) + "\n")
    assert len(by_file) > 100
    for other in (by_folder, by_stdin):
        assert [d["timestamp"] for d in other] == [d["timestamp"] for d in by_file]
        assert [d["target_positions"] for d in other] == [d["target_positions"] for d in by_file]
    assert summary["rejected_bars"] == 1


def test_multi_asset_alerts_reach_the_sink(case, tmp_path):
    """Degradation on the [A]-asset ledger's equity and feature drift over every symbol's
    rows: returns five times larger from bar 600 on raise the feature drift alert after it."""
    from jaxtrade.live.sinks import Sink

    class Recorder(Sink):
        def __init__(self) -> None:
            self.alerts: list[dict] = []

        def emit(self, decision: dict) -> None:
            pass

        def alert(self, payload: dict) -> None:
            self.alerts.append(payload)

    frame, _, market = case
    env, env_params = envs.make("trading", market, window_bars=8)
    cfg, params, _ = make_policy(env, env_params)
    bundle = write_bundle(tmp_path / "b", params=params, network_config=cfg, env=env,
                          env_params=env_params)
    assert load_bundle(bundle).manifest["monitor"]["features"]["bins"]
    shifted, cut = _returns_five_times_larger_from(frame, 600)
    sink = Recorder()
    runner = MultiAssetRunner(load_bundle(bundle), sink=sink, monitor={
        "min_sharpe": 100.0, "sharpe_window": 20, "drift_psi": None, "feature_window": 200})
    runner.run(stream(shifted))
    kinds = [a["kind"] for a in sink.alerts]
    assert "sharpe" in kinds
    drift = [a for a in sink.alerts if a["kind"] == "feature_drift"]
    assert drift and any(a["timestamp"] >= cut.strftime("%Y-%m-%dT%H") for a in drift)
    assert runner.summary()["alerts"] == len(sink.alerts)


def _returns_five_times_larger_from(frame: pl.DataFrame, index: int):
    """The bars with log returns five times larger from the `index`-th timestamp on (both
    symbols), and that timestamp."""
    stamps = frame["timestamp"].unique().sort()
    cut = stamps[index]
    factor = pl.when(pl.col("timestamp") >= cut).then(5.0).otherwise(1.0)
    r = (pl.col("close") / pl.col("close").shift(1)).log().over("symbol").fill_null(0.0)
    shifted = frame.with_columns(
        ((r * factor).cum_sum().over("symbol").exp() / r.cum_sum().over("symbol").exp())
        .alias("__scale"))
    shifted = shifted.with_columns(
        *(pl.col(c) * pl.col("__scale") for c in ("open", "high", "low", "close"))
    ).drop("__scale")
    return shifted, cut


def test_on_drift_flat_holds_every_symbol_flat_after_a_drift_alert(case, tmp_path):
    """`on_drift="flat"`: decisions follow the policy until the feature drift alert, then
    every symbol's target is 0 and the held positions go to 0 at the next fill; the same run
    with on_drift="alert" keeps trading the policy's targets."""
    frame, _, market = case
    env, env_params = envs.make("trading", market, window_bars=8)
    cfg, params, _ = make_policy(env, env_params)
    bundle = write_bundle(tmp_path / "b", params=params, network_config=cfg, env=env,
                          env_params=env_params)
    shifted, _ = _returns_five_times_larger_from(frame, 600)
    options = {"min_sharpe": None, "drift_psi": None, "feature_window": 200}
    runs = {}
    for mode in ("alert", "flat"):
        runner = MultiAssetRunner(load_bundle(bundle), monitor=options, on_drift=mode)
        decisions = [d for symbol, bar in stream(shifted)
                     for d in runner.process(symbol, bar)] + runner.flush()
        runs[mode] = (runner, decisions)
    alerted, flat = runs["alert"][1], runs["flat"][1]
    assert [d["timestamp"] for d in alerted] == [d["timestamp"] for d in flat]
    first = next(i for i, d in enumerate(flat) if "flat" in d)
    assert 0 < first < len(flat) - 10  # the alert came in the middle of the run
    assert runs["flat"][0].flat_after_drift and not runs["alert"][0].flat_after_drift
    assert all("flat" in d for d in flat[first:])
    # Before the alert both runs are the same; after it only the flat run holds nothing.
    assert [d["target_positions"] for d in flat[:first]] == [
        d["target_positions"] for d in alerted[:first]]
    assert all(w == 0.0 for d in flat[first:] for w in d["target_positions"].values())
    assert all(w == 0.0 for d in flat[first + 1:] for w in d["positions"].values())
    assert any(w != 0.0 for d in alerted[first:] for w in d["target_positions"].values())
    with pytest.raises(BundleError, match="on_drift must be alert or flat"):
        MultiAssetRunner(load_bundle(bundle), on_drift="sell")


def test_a_promoted_bundle_takes_over_between_timestamps_and_the_book_carries_on(case,
                                                                                tmp_path):
    """`pointer=`: a bundle of other actions is refused with an alert (the running one trades
    on); a promoted bundle of the same book takes over at the next timestamp, and from there
    the runner decides exactly as the running runner would with the promoted policy swapped
    in (same features, same ledger and positions)."""
    import copy

    from jaxtrade.live.network import ActorNetwork
    from jaxtrade.live.pointer import swap_pointer
    from jaxtrade.live.sinks import Sink

    class Alerts(Sink):
        def __init__(self) -> None:
            self.alerts: list[dict] = []

        def emit(self, decision: dict) -> None:
            pass

        def alert(self, payload: dict) -> None:
            self.alerts.append(payload)

    frame, _, market = case
    env, env_params = envs.make("trading", market, window_bars=8)
    cfg, params_a, _ = make_policy(env, env_params, seed=0)
    _, params_b, _ = make_policy(env, env_params, seed=1)
    bundles = {name: write_bundle(tmp_path / name, params=p, network_config=cfg, env=env,
                                  env_params=env_params)
               for name, p in (("a", params_a), ("b", params_b))}
    env_c, params_c = envs.make("trading", market, window_bars=8, action_mode="continuous")
    cfg_c, weights_c, _ = make_policy(env_c, params_c)
    bundles["continuous"] = write_bundle(tmp_path / "c", params=weights_c, network_config=cfg_c,
                                         env=env_c, env_params=params_c)
    pointer = tmp_path / "deployed"
    swap_pointer(pointer, bundles["a"])
    stamps = frame["timestamp"].unique().sort().dt.epoch("us").to_list()
    start, refuse_at, promote_at = stamps[300], stamps[400], stamps[600]
    sink = Alerts()
    runner = MultiAssetRunner(load_bundle(bundles["a"]), sink=sink, pointer=pointer)
    only_a = MultiAssetRunner(load_bundle(bundles["a"]))
    reference = None
    ours, theirs, a_alone = [], [], []
    for symbol, bar in stream(frame):
        ts = bar.timestamp_us
        if ts == refuse_at and runner._pending_us != ts:
            runner.flush()
            swap_pointer(pointer, bundles["continuous"])
        if ts == promote_at and reference is None:
            runner.flush()
            only_a.flush()
            swap_pointer(pointer, bundles["b"])
            # The running runner with B's policy swapped in: what the promotion must give.
            reference = copy.deepcopy(runner)
            reference.pointer = None
            reference.network = ActorNetwork(load_bundle(bundles["b"]).manifest["network"],
                                             load_bundle(bundles["b"]).weights)
            reference.carry = reference.network.initial_carry()
        trade = ts >= start
        got = runner.process(symbol, bar, trade=trade)
        a_alone += only_a.process(symbol, bar, trade=trade)
        if reference is not None:
            theirs += reference.process(symbol, bar, trade=trade)
            ours += got
    ours += runner.flush()
    theirs += reference.flush()
    a_alone += only_a.flush()

    assert [a["kind"] for a in sink.alerts] == ["bundle_refused"]
    assert "other action" in sink.alerts[0]["message"]
    assert runner.switches == 1 and runner.bundle_root == bundles["b"]
    assert runner.summary()["bundle_switches"] == 1
    assert len(ours) == len(theirs) > 100
    assert [d["target_positions"] for d in ours] == [d["target_positions"] for d in theirs]
    assert [d["positions"] for d in ours] == [d["positions"] for d in theirs]
    # The switch mattered: policy A alone decides otherwise after the promotion.
    after = [d for d in a_alone if d["timestamp"] >= ours[0]["timestamp"]]
    assert [d["target_positions"] for d in after] != [d["target_positions"] for d in ours]


def test_runner_py_takes_a_bundle_pointer_and_on_drift_flat_for_several_symbols(case,
                                                                                tmp_path):
    """The command line passes --bundle-pointer and --on-drift flat to the multi-asset
    runner (the decisions of --bundle while the pointer does not move, every symbol flat
    from the default monitor's drift alert on), with --store too (the alert stored)."""
    import json
    import subprocess
    import sys

    from jaxtrade.live.pointer import swap_pointer

    frame, _, market = case
    env, env_params = envs.make("trading", market, window_bars=8)
    cfg, params, _ = make_policy(env, env_params)
    bundle = write_bundle(tmp_path / "b", params=params, network_config=cfg, env=env,
                          env_params=env_params)
    pointer = tmp_path / "deployed"
    swap_pointer(pointer, bundle)
    bars = tmp_path / "two.csv"
    frame.tail(300).write_csv(bars)

    def run(*args):
        proc = subprocess.run([sys.executable, str(bundle / "runner.py"), "--bars", str(bars),
                               *args], capture_output=True, text=True, timeout=300)
        lines = [json.loads(x) for x in proc.stdout.splitlines() if x.strip()]
        return proc, [x for x in lines if "target_positions" in x]

    plain_proc, plain = run()
    followed_proc, followed = run("--bundle-pointer", str(pointer), "--on-drift", "flat")
    assert plain_proc.returncode == 0 and followed_proc.returncode == 0, followed_proc.stderr
    assert len(plain) > 100 and len(followed) == len(plain)
    # The same decisions until the runner's drift alert, then every symbol flat.
    first = next(i for i, d in enumerate(followed) if "flat" in d)
    assert [d["target_positions"] for d in followed[:first]] == [
        d["target_positions"] for d in plain[:first]]
    assert all(w == 0.0 for d in followed[first:] for w in d["target_positions"].values())
    assert any(w != 0.0 for d in plain[first:] for w in d["target_positions"].values())
    # With --store the same decisions, and the drift alert is stored in `events`.
    import sqlite3

    store = tmp_path / "s.sqlite"
    store_proc, stored = run("--bundle-pointer", str(pointer), "--on-drift", "flat",
                             "--store", str(store))
    assert store_proc.returncode == 0, store_proc.stderr
    assert _same(stored) == _same(followed)
    with sqlite3.connect(store) as db:
        kinds = [k for (k,) in db.execute("SELECT kind FROM events")]
    assert "feature_drift" in kinds or "drift" in kinds


# --- the replay store with several symbols ---------------------------------------------------
class _Killed(BaseException):
    """Stands in for SIGKILL between the store's commit and the printed line."""


@pytest.fixture(scope="module")
def store_case(case, tmp_path_factory):
    """A continuous two-asset bundle with stops (fills every few bars) and the last 400 rows
    of the two-symbol frame as JSON-ready dicts (one symbol misses some bars there)."""
    frame, _, market = case
    env, env_params = envs.make("trading", market, window_bars=8, action_mode="continuous",
                                max_leverage=1.5, stop_loss_atr=2.0)
    cfg, params, _ = make_policy(env, env_params)
    bundle = write_bundle(tmp_path_factory.mktemp("store") / "b", params=params,
                          network_config=cfg, env=env, env_params=env_params)
    tail = frame.tail(400)
    rows = tail.with_columns(pl.col("timestamp").dt.to_string("%Y-%m-%dT%H:%M:%SZ")).to_dicts()
    return bundle, tail, rows


def _same(decisions: list[dict]) -> list[dict]:
    return [{k: v for k, v in d.items() if k != "latency_us"} for d in decisions]


def test_multi_asset_store_restart_after_sigkill_prints_what_one_run_prints(store_case,
                                                                            tmp_path):
    """runner.py --stdin --store killed mid-stream, then restarted on the whole file with the
    same store: acknowledged lines plus the restarted run's are the uninterrupted run's, and
    the store holds every timestamp, bar and target once."""
    import json
    import os
    import signal
    import sqlite3
    import subprocess
    import sys

    from jaxtrade.live.bars import parse_timestamp

    bundle, tail, rows = store_case
    csv = tmp_path / "two.csv"
    tail.write_csv(csv)
    runner_py = [sys.executable, str(bundle / "runner.py")]

    def run(*args):
        proc = subprocess.run([*runner_py, *args], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return [json.loads(x) for x in proc.stdout.splitlines() if "target_positions" in x]

    reference = run("--bars", str(csv))
    assert len(reference) > 180
    store = tmp_path / "replay.sqlite"
    proc = subprocess.Popen([*runner_py, "--stdin", "--store", str(store)], text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=1)
    cut = 201
    for row in rows[:cut]:
        proc.stdin.write(json.dumps(row) + "\n")
    proc.stdin.flush()
    # Every timestamp before the last row's is complete (a later bar came): it is printed.
    last_us = parse_timestamp(rows[cut - 1]["timestamp"])
    owed = sum(parse_timestamp(d["timestamp"]) < last_us for d in reference)
    acknowledged = [json.loads(proc.stdout.readline()) for _ in range(owed)]
    for row in rows[cut:cut + 5]:  # more bars in flight
        proc.stdin.write(json.dumps(row) + "\n")
    proc.stdin.flush()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    # Lines printed between the last read and the kill are in the pipe: a reader got them.
    acknowledged += [json.loads(x) for x in proc.stdout.read().splitlines()
                     if "target_positions" in x]

    restarted = run("--bars", str(csv), "--store", str(store))
    acked_us = parse_timestamp(acknowledged[-1]["timestamp"])
    again = [d for d in restarted if parse_timestamp(d["timestamp"]) <= acked_us]
    assert len(again) <= 1  # at least once: printed, killed before it was marked
    assert _same(again) == _same(acknowledged[-len(again):] if again else [])
    printed = acknowledged + [d for d in restarted if parse_timestamp(d["timestamp"]) > acked_us]
    assert _same(printed) == _same(reference)

    with sqlite3.connect(store) as db:
        count, distinct = db.execute(
            "SELECT COUNT(*), COUNT(DISTINCT timestamp_us) FROM decisions").fetchone()
        assert count == distinct == len(reference)
        assert db.execute("SELECT COUNT(*) FROM symbol_bars").fetchone()[0] == len(rows)
        assert db.execute("SELECT COUNT(*) FROM decisions WHERE emitted = 0").fetchone()[0] == 0
        targets = db.execute("SELECT timestamp_us, symbol, target_position FROM targets"
                             " ORDER BY timestamp_us, symbol").fetchall()
        fills = db.execute("SELECT COUNT(*), COUNT(DISTINCT symbol) FROM fills").fetchone()
    expected = sorted((parse_timestamp(d["timestamp"]), s, w) for d in reference
                      for s, w in d["target_positions"].items())
    assert targets == expected
    assert fills[0] > 0 and fills[1] == 2


def test_multi_asset_restart_prints_the_unprinted_decision_and_counts_no_rejection_twice(
    store_case, tmp_path
):
    """Killed between a timestamp's commit and its line, with rejected records before (one
    pair in the middle of a timestamp) and after the restart point: the restart prints the
    stored line first, trades on as one run would, and counts only the new rejections."""
    from jaxtrade.live.sinks import Sink
    from jaxtrade.live.store import ReplayStore

    class ListSink(Sink):
        def __init__(self, kill_at: int | None = None) -> None:
            self.decisions: list[dict] = []
            self.kill_at = kill_at

        def emit(self, decision: dict) -> None:
            if len(self.decisions) == self.kill_at:
                raise _Killed
            self.decisions.append(decision)

    bundle, _, rows = store_case
    within = next(i for i in range(100, len(rows)) if rows[i]["timestamp"] ==
                  rows[i + 1]["timestamp"])
    junk = [{"symbol": rows[0]["symbol"], "timestamp": "not a time", "close": 1.0},
            {"timestamp": rows[0]["timestamp"], "close": 1.0}]
    records = [*rows[:within + 1], *junk, *rows[within + 1:300], *junk, *rows[300:]]

    one = ListSink()
    MultiAssetRunner(load_bundle(bundle), sink=one).run(records)
    path = tmp_path / "replay.sqlite"
    first = ListSink(kill_at=80)  # the 81st decision is stored, then the process dies
    runner = MultiAssetRunner(load_bundle(bundle), sink=first, store=ReplayStore(path))
    with pytest.raises(_Killed):
        runner.run(records)
    runner.store.close()
    assert runner.rejected == 2

    second, store = ListSink(), ReplayStore(path)
    runner = MultiAssetRunner(load_bundle(bundle), sink=second, store=store)
    resume = runner.replay_store(None)
    assert runner.emit_unemitted() == 1
    summary = runner.run(records, resume_after_us=resume)
    assert _same(first.decisions + second.decisions) == _same(one.decisions)
    assert summary["rejected_bars"] == 2  # only the junk after the restart point
    assert store.db.execute("SELECT COUNT(*) FROM rejections").fetchone()[0] == 4
    assert store.unemitted_lines() == []
    # A store of the single-symbol runner is not taken for a multi-asset one.
    single = ReplayStore(tmp_path / "single.sqlite")
    single.record_bar(Bar(1, 1.0, 1.0, 1.0, 1.0, 0.0))
    with pytest.raises(BundleError, match="single-symbol"):
        MultiAssetRunner(load_bundle(bundle), store=single).replay_store(None)
