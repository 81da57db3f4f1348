"""Declarative feature sets: a list of named entries with parameters.

YAML form (configs/features/*.yaml):

    features:
      - {name: rsi, window: 14}
      - {name: rsi, window: 14, timeframe: 4h}   # on 4h bars, joined onto finer bars

Every entry is validated when the spec is built (unknown names or parameters raise
`FeatureError`), and stored with all parameters resolved, so `to_dict()` is complete and
reproducible by export.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from jaxtrade.errors import FeatureError
from jaxtrade.features import registry

# Features that read the volume column (zscore does when its column is volume or log_volume).
VOLUME_FEATURES = ("obv", "volume_roc")

_TIMEFRAME = re.compile(r"^[1-9][0-9]*(m|h|d|w)$")
_TIMEFRAME_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def timeframe_seconds(timeframe: str) -> int:
    return int(timeframe[:-1]) * _TIMEFRAME_SECONDS[timeframe[-1]]


@dataclasses.dataclass(frozen=True)
class FeatureEntry:
    name: str
    params: dict[str, Any]
    timeframe: str | None = None

    def columns(self) -> list[str]:
        cols = registry.get(self.name).columns(self.params)
        return [f"{c}_{self.timeframe}" for c in cols] if self.timeframe else cols

    @property
    def cross_asset(self) -> bool:
        return registry.get(self.name).cross_asset

    @property
    def uses_volume(self) -> bool:
        return self.name in VOLUME_FEATURES or (
            self.name == "zscore" and self.params.get("column") in ("volume", "log_volume"))

    def label(self) -> str:
        """`obv`, `zscore(log_volume)`: the entry in a notice."""
        return f"zscore({self.params['column']})" if self.name == "zscore" else self.name

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, **self.params}
        if self.timeframe:
            out["timeframe"] = self.timeframe
        return out

    @classmethod
    def from_dict(cls, raw: Any) -> FeatureEntry:
        if isinstance(raw, str):
            raw = {"name": raw}
        if not isinstance(raw, dict) or "name" not in raw:
            raise FeatureError(f"a feature entry must be a mapping with a 'name', got {raw!r}")
        raw = dict(raw)
        name = str(raw.pop("name"))
        timeframe = raw.pop("timeframe", None)
        params = registry.validate_params(name, raw)
        if timeframe is not None:
            timeframe = str(timeframe)
            if not _TIMEFRAME.match(timeframe):
                raise FeatureError(
                    f"feature '{name}': timeframe must look like 15m, 4h, 1d or 1w, "
                    f"got {timeframe!r}"
                )
            if registry.get(name).cross_asset:
                raise FeatureError(f"feature '{name}': cross-asset features take no timeframe")
        return cls(name=name, params=params, timeframe=timeframe)


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    entries: tuple[FeatureEntry, ...]

    def __post_init__(self) -> None:
        seen: dict[str, FeatureEntry] = {}
        for e in self.entries:
            for c in e.columns():
                if c in seen:
                    raise FeatureError(
                        f"feature column '{c}' is produced twice "
                        f"(entries {seen[c].to_dict()} and {e.to_dict()})"
                    )
                seen[c] = e

    def columns(self, multi_asset: bool) -> list[str]:
        """Output columns in order; cross-asset features only for multi-asset frames."""
        return [c for e in self.entries if multi_asset or not e.cross_asset for c in e.columns()]

    def to_dict(self) -> dict[str, Any]:
        return {"features": [e.to_dict() for e in self.entries]}

    def without_volume(self) -> tuple[FeatureSpec, list[FeatureEntry]]:
        """(this spec less the entries that read volume, those entries): for bars without
        volume, where they would be constants or 0/0."""
        dropped = [e for e in self.entries if e.uses_volume]
        kept = tuple(e for e in self.entries if not e.uses_volume)
        if dropped and not kept:
            raise FeatureError("every feature of the spec needs volume and the bars have none: "
                               f"{', '.join(e.label() for e in dropped)}")
        return FeatureSpec(kept), dropped

    @classmethod
    def from_dict(cls, raw: Any) -> FeatureSpec:
        """From {"features": [...]} or a bare list of entries (mappings or names)."""
        raw = _plain(raw)  # OmegaConf nodes (Hydra configs) to plain dicts and lists
        if isinstance(raw, dict):
            if "features" not in raw:
                raise FeatureError("a feature spec needs a 'features' list")
            raw = raw["features"]
        if not isinstance(raw, (list, tuple)) or not raw:
            raise FeatureError("a feature spec must list at least one feature")
        return cls(tuple(FeatureEntry.from_dict(e) for e in raw))

    @classmethod
    def from_yaml(cls, path: str | Path) -> FeatureSpec:
        import yaml

        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise FeatureError(f"{path}: cannot read feature spec: {exc}") from exc
        return cls.from_dict(raw)

    def to_yaml(self, path: str | Path) -> None:
        import yaml

        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _plain(x: Any) -> Any:
    """OmegaConf/ListConfig nodes to plain dicts/lists."""
    if hasattr(x, "items"):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)) or (hasattr(x, "__iter__") and not isinstance(x, str)):
        return [_plain(v) for v in x]
    return x


_DEFAULT: list[dict[str, Any]] = [
    {"name": "returns", "lags": [1, 2, 3, 5, 10, 20]},
    {"name": "log_returns", "lags": [1, 5, 20]},
    {"name": "sma_ratio", "windows": [5, 10, 20, 50, 100, 200]},
    {"name": "ema_ratio", "windows": [5, 12, 26, 50]},
    {"name": "rsi", "window": 14},
    {"name": "rsi", "window": 7},
    {"name": "macd", "fast": 12, "slow": 26, "signal": 9, "relative": True},
    {"name": "bollinger", "window": 20, "num_std": 2.0},
    {"name": "atr", "window": 14},
    {"name": "adx", "window": 14},
    {"name": "stochastic", "window": 14, "smooth": 3},
    {"name": "williams_r", "window": 14},
    {"name": "cci", "window": 20},
    {"name": "obv", "window": 20},
    {"name": "volume_roc", "lags": [1, 10]},
    {"name": "realized_vol", "windows": [5, 10, 20, 60]},
    {"name": "parkinson_vol", "window": 20},
    {"name": "garman_klass_vol", "window": 20},
    {"name": "zscore", "column": "close", "windows": [20, 50]},
    {"name": "zscore", "column": "log_volume", "windows": [20]},
    {"name": "skew", "windows": [20, 60]},
    {"name": "candle"},
    {"name": "high_low_distance", "windows": [20, 100]},
    {"name": "calendar"},
    {"name": "cross_corr", "window": 60},
    {"name": "turbulence", "window": 60},
]


def default_spec() -> FeatureSpec:
    """The documented default set (configs/features/default.yaml mirrors it)."""
    return FeatureSpec.from_dict({"features": _DEFAULT})
