"""The catalogue of named features: parameters with defaults, output columns, builders.

A feature entry in a spec names one of these and overrides some parameters. Each
definition turns its (validated) parameters into output column names and, for per-symbol
features, into polars expressions from `indicators`. Cross-asset features (`cross_corr`,
`turbulence`) are computed by `cross_asset` on the whole multi-symbol frame and produce no
columns for a single-symbol frame.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from typing import Any

from jaxtrade.errors import FeatureError
from jaxtrade.features import indicators as ind

Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class FeatureDef:
    name: str
    description: str
    defaults: Params
    columns: Callable[[Params], list[str]]
    # Per-symbol stages (see indicators.Staged) whose last stage holds one expression per
    # column, given the params and a unique temp-column prefix; None for cross-asset.
    build: Callable[[Params, str], ind.Staged] | None
    cross_asset: bool = False
    choices: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)


def _relative(stages: ind.Staged, relative: bool) -> ind.Staged:
    """Divide the output stage by close (MACD in fractions of price rather than price units)."""
    if not relative:
        return stages
    return [*stages[:-1], [e / ind.C for e in stages[-1]]]


_ZSCORE_SOURCES = {
    "close": lambda: ind.C,
    "volume": lambda: ind.V,
    "log_volume": lambda: (ind.V + 1.0).log(),
    "log_return": lambda: ind.log_return(),
}

_DEFS: list[FeatureDef] = [
    FeatureDef(
        "returns",
        "Simple returns close_t / close_{t-lag} - 1 for each lag.",
        {"lags": [1, 2, 3, 5, 10, 20]},
        lambda p: [f"ret_{k}" for k in p["lags"]],
        lambda p, _: [[ind.simple_return(k) for k in p["lags"]]],
    ),
    FeatureDef(
        "log_returns",
        "Log returns log(close_t / close_{t-lag}) for each lag.",
        {"lags": [1, 5, 20]},
        lambda p: [f"logret_{k}" for k in p["lags"]],
        lambda p, _: [[ind.log_return(k) for k in p["lags"]]],
    ),
    FeatureDef(
        "sma_ratio",
        "close / SMA(window) - 1 for each window.",
        {"windows": [5, 10, 20, 50, 100, 200]},
        lambda p: [f"sma_ratio_{w}" for w in p["windows"]],
        lambda p, _: [[ind.C / ind.sma(ind.C, w) - 1.0 for w in p["windows"]]],
    ),
    FeatureDef(
        "ema_ratio",
        "close / EMA(window) - 1 (TA-Lib EMA seeded with the SMA) for each window.",
        {"windows": [5, 12, 26, 50]},
        lambda p: [f"ema_ratio_{w}" for w in p["windows"]],
        lambda p, _: [[ind.C / ind.ema(ind.C, w) - 1.0 for w in p["windows"]]],
    ),
    FeatureDef(
        "rsi",
        "Relative strength index with Wilder smoothing (TA-Lib RSI), 0..100.",
        {"window": 14},
        lambda p: [f"rsi_{p['window']}"],
        lambda p, t: ind.rsi(p["window"], t),
    ),
    FeatureDef(
        "macd",
        "MACD line, signal and histogram (TA-Lib EMAs); relative=true divides by close.",
        {"fast": 12, "slow": 26, "signal": 9, "relative": False},
        lambda p: [
            f"macd{s}_{p['fast']}_{p['slow']}_{p['signal']}" for s in ("", "_signal", "_hist")
        ],
        lambda p, t: _relative(ind.macd(p["fast"], p["slow"], p["signal"], t), p["relative"]),
    ),
    FeatureDef(
        "bollinger",
        "Bollinger %b = (close - lower) / (upper - lower) and width = (upper - lower) / middle.",
        {"window": 20, "num_std": 2.0},
        lambda p: [f"bb_pctb_{p['window']}", f"bb_width_{p['window']}"],
        lambda p, t: ind.bollinger(p["window"], p["num_std"], t),
    ),
    FeatureDef(
        "atr",
        "Average true range (Wilder, TA-Lib ATR) in price units and relative to close.",
        {"window": 14},
        lambda p: [f"atr_{p['window']}", f"atr_pct_{p['window']}"],
        lambda p, t: ind.atr(p["window"], t),
    ),
    FeatureDef(
        "adx",
        "Average directional index and +DI / -DI (Wilder, TA-Lib ADX/PLUS_DI/MINUS_DI).",
        {"window": 14},
        lambda p: [f"adx_{p['window']}", f"plus_di_{p['window']}", f"minus_di_{p['window']}"],
        lambda p, t: ind.directional(p["window"], t),
    ),
    FeatureDef(
        "stochastic",
        "Fast stochastic %K over window and %D = SMA(smooth) of %K (TA-Lib STOCHF), 0..100.",
        {"window": 14, "smooth": 3},
        lambda p: [f"stoch_k_{p['window']}", f"stoch_d_{p['window']}_{p['smooth']}"],
        lambda p, t: ind.stochastic(p["window"], p["smooth"], t),
    ),
    FeatureDef(
        "williams_r",
        "Williams %R over window, -100..0.",
        {"window": 14},
        lambda p: [f"willr_{p['window']}"],
        lambda p, t: ind.williams_r(p["window"], t),
    ),
    FeatureDef(
        "cci",
        "Commodity channel index (typical price, mean absolute deviation, 0.015).",
        {"window": 20},
        lambda p: [f"cci_{p['window']}"],
        lambda p, t: ind.cci(p["window"], t),
    ),
    FeatureDef(
        "obv",
        "On-balance volume (TA-Lib) and its slope: net signed volume over window / volume.",
        {"window": 20},
        lambda p: ["obv", f"obv_slope_{p['window']}"],
        lambda p, t: ind.obv(p["window"], t),
    ),
    FeatureDef(
        "volume_roc",
        "Volume rate of change volume_t / volume_{t-lag} - 1 for each lag.",
        {"lags": [1, 10]},
        lambda p: [f"volume_roc_{k}" for k in p["lags"]],
        lambda p, _: [[ind.volume_roc(k) for k in p["lags"]]],
    ),
    FeatureDef(
        "realized_vol",
        "Rolling std (ddof=1) of one-bar log returns for each window, per bar.",
        {"windows": [5, 10, 20, 60]},
        lambda p: [f"rvol_{w}" for w in p["windows"]],
        lambda p, _: [[ind.realized_vol(w) for w in p["windows"]]],
    ),
    FeatureDef(
        "parkinson_vol",
        "Parkinson high-low volatility estimator over window, per bar.",
        {"window": 20},
        lambda p: [f"parkinson_vol_{p['window']}"],
        lambda p, _: [[ind.parkinson_vol(p["window"])]],
    ),
    FeatureDef(
        "garman_klass_vol",
        "Garman-Klass OHLC volatility estimator over window, per bar.",
        {"window": 20},
        lambda p: [f"gk_vol_{p['window']}"],
        lambda p, _: [[ind.garman_klass_vol(p["window"])]],
    ),
    FeatureDef(
        "zscore",
        "Rolling z-score (x - mean) / std of close, volume, log_volume = log(1 + volume) "
        "or log_return.",
        {"column": "close", "windows": [20, 50]},
        lambda p: [f"zscore_{p['column']}_{w}" for w in p["windows"]],
        lambda p, _: [[ind.zscore(_ZSCORE_SOURCES[p["column"]](), w) for w in p["windows"]]],
        choices={"column": tuple(_ZSCORE_SOURCES)},
    ),
    FeatureDef(
        "skew",
        "Rolling skewness (biased, population moments) of one-bar log returns.",
        {"windows": [20, 60]},
        lambda p: [f"skew_{w}" for w in p["windows"]],
        lambda p, _: [[ind.rolling_skew(ind.log_return(), w) for w in p["windows"]]],
    ),
    FeatureDef(
        "candle",
        "Candle body, upper and lower wick as fractions of high - low, and range / close.",
        {},
        lambda p: ["candle_body", "candle_upper_wick", "candle_lower_wick", "candle_range"],
        lambda p, _: [list(ind.candle())],
    ),
    FeatureDef(
        "high_low_distance",
        "close / rolling max(high) - 1 and close / rolling min(low) - 1 for each window.",
        {"windows": [20, 100]},
        lambda p: [f"{k}_{w}" for w in p["windows"] for k in ("dist_high", "dist_low")],
        lambda p, _: [[e for w in p["windows"] for e in ind.distance_high_low(w)]],
    ),
    FeatureDef(
        "calendar",
        "sin / cos of the hour of day and of the day of week (from the bar timestamp).",
        {},
        lambda p: ["hour_sin", "hour_cos", "dow_sin", "dow_cos"],
        lambda p, _: [list(ind.calendar())],
    ),
    FeatureDef(
        "cross_corr",
        "Multi-asset only: rolling correlation of the asset's log return with the mean "
        "log return of the other assets at the same bars.",
        {"window": 60},
        lambda p: [f"cross_corr_{p['window']}"],
        None,
        cross_asset=True,
    ),
    FeatureDef(
        "turbulence",
        "Multi-asset only: turbulence index (Mahalanobis distance of the current return "
        "vector from the mean/covariance of the previous window bars), same for all assets.",
        {"window": 60},
        lambda p: [f"turbulence_{p['window']}"],
        None,
        cross_asset=True,
    ),
]

REGISTRY: dict[str, FeatureDef] = {d.name: d for d in _DEFS}


def get(name: str) -> FeatureDef:
    if name not in REGISTRY:
        close = difflib.get_close_matches(str(name), list(REGISTRY), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise FeatureError(f"unknown feature '{name}'{hint}; known: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def _check_window(name: str, key: str, v: Any, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise FeatureError(f"feature '{name}': {key} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def validate_params(name: str, params: Params) -> Params:
    """Merge params over the defaults of `name`, checking keys, types and ranges."""
    d = get(name)
    unknown = set(params) - set(d.defaults)
    if unknown:
        allowed = ", ".join(d.defaults) or "none"
        raise FeatureError(
            f"feature '{name}': unknown parameter(s) {sorted(unknown)}; allowed: {allowed}"
        )
    out: Params = {}
    for key, default in d.defaults.items():
        v = params.get(key, default)
        if isinstance(default, bool):
            if not isinstance(v, bool):
                raise FeatureError(f"feature '{name}': {key} must be true or false, got {v!r}")
        elif isinstance(default, int):
            v = _check_window(name, key, v, 1 if key in ("smooth", "signal") else 2)
        elif isinstance(default, float):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise FeatureError(f"feature '{name}': {key} must be a number > 0, got {v!r}")
            v = float(v)
        elif isinstance(default, list):
            if not isinstance(v, (list, tuple)) or not v:
                raise FeatureError(f"feature '{name}': {key} must be a non-empty list, got {v!r}")
            v = [_check_window(name, key, x, 1 if key == "lags" else 2) for x in v]
            if len(set(v)) != len(v):
                raise FeatureError(f"feature '{name}': {key} has duplicates: {v}")
        elif isinstance(default, str):
            if v not in d.choices.get(key, (v,)):
                raise FeatureError(
                    f"feature '{name}': {key} must be one of {list(d.choices[key])}, got {v!r}"
                )
        out[key] = v
    if name == "macd" and out["fast"] >= out["slow"]:
        raise FeatureError(f"feature 'macd': fast ({out['fast']}) must be < slow ({out['slow']})")
    return out


def list_features() -> list[dict[str, Any]]:
    """Every feature: name, default params, description, output columns, multi_asset_only."""
    return [
        {
            "name": d.name,
            "params": {k: (list(v) if isinstance(v, list) else v) for k, v in d.defaults.items()},
            "description": d.description,
            "columns": d.columns(d.defaults),
            "multi_asset_only": d.cross_asset,
        }
        for d in _DEFS
    ]


def describe_features() -> str:
    """Plain-text table of `list_features()` for the CLI."""
    lines = []
    for f in list_features():
        params = ", ".join(f"{k}={v}" for k, v in f["params"].items()) or "-"
        lines.append(f"{f['name']:<18} {params}")
        lines.append(f"{'':<18} {f['description']}")
        lines.append(f"{'':<18} columns: {', '.join(f['columns'])}")
    lines.append(
        "Any entry may add timeframe: <n>m|h|d|w to compute it on coarser bars "
        "(columns get the suffix _<timeframe>)."
    )
    return "\n".join(lines)
