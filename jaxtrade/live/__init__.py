"""Thin live-inference runner for exported bundles: numpy and the standard library only.

This package is copied verbatim into every bundle (as `BUNDLE/jaxtrade_live/`), so it uses
relative imports only and never imports jax, flax, polars or pandas (a test checks it).

    python BUNDLE/runner.py --bars bars.csv --start 2024-01-02        # paper trading on history
    python BUNDLE/runner.py --stdin --store replay.sqlite < bars.jsonl  # JSON lines, stored
    jaxtrade live bundle=BUNDLE source=replay path=bars.csv start=2024-01-02

Per bar the runner reads the record as training read its bars (formats.py), validates it
(bars.py), fills the previous decision on this bar's open with the manifest's cost model
(ledger.py, the env's rules in float32), updates every feature incrementally (features.py)
and the regime filter (regimes.py), normalizes with the training statistics, runs the numpy
actor (network.py; or the bundle's policy.onnx through onnxruntime with `--engine onnx`,
onnx_engine.py, the one optional import), writes bar, decision and fills to the SQLite replay
store in one transaction (store.py), and only then prints the decision (sinks.py):

    {"timestamp": "2024-01-02T00:00:00Z", "action": 2, "probabilities": [0.1, 0.2, 0.7],
     "confidence": 0.7, "target_position": 1.0, "position": 0.0, "equity": 1.0,
     "latency_us": 180.2}

At the end of a stream one `{"summary": {...}}` line reports P&L, costs and metrics with the
conventions of jaxtrade.metrics. Bars before `--start` only warm the features up; the first
decision needs `window_bars` bars, and features with infinite memory (EMAs, Wilder averages)
equal training's exactly only when the runner saw the same history from its first bar.

manifest.json (format_version 1): bars (how training read its file: format, separator,
columns, explicit_columns, aliases, timestamp {kind, unit, format, timezone}, adjust,
fill_gaps; applied by formats.BarFormat), symbol, symbols, features {spec, columns,
bar_spacing_seconds (for `timeframe` entries), normalizer, regimes},
observation {window_bars, layout, include_portfolio, shape}, action {mode, discrete_levels |
low/high, squash}, trading / costs / risk (the env's TradingConfig, TransactionConfig,
RiskConfig),
market {atr_window, volatility_window}, network {config, obs_shape}, weights {file: sha256},
bars_per_year, bar_interval_seconds, gap_threshold_seconds, monitor {returns {edges, shares},
features {names, bins}, backtest_max_drawdown} (monitor.py), versions, source, run_config.

An ensemble bundle (network.family "ensemble": every member's network and the combination
state) runs its members and their combination in ensemble.py, and each line also carries
`rule`, `member_weights`, `member_targets` and `trade_probability` (with several symbols, in
multi.MultiAssetRunner: `member_targets` {member: {symbol: weight}}).

A bundle trained on several symbols (`symbols` lists them) runs in multi.MultiAssetRunner:
one decision per timestamp with `target_positions` {symbol: weight} (runner.py picks it);
with a store, each timestamp is one transaction there (store.record_timestamp).

`--bundle-pointer P` follows a pointer that `jaxtrade retrain` swaps on a promotion
(pointer.py): the promoted bundle takes over between bars (engine.Runner.follow_pointer).
"""
