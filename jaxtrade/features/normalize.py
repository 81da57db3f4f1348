"""Feature normalization fitted on the training rows only.

    y = clip((x - center) / scale, -clip, clip),   NaN/null -> 0

`zscore`: center = mean, scale = std (ddof=0). `robust`: center = median, scale =
IQR / 1.349 (the IQR of a normal distribution is 1.349 std, so both put typical values on
the same scale). Statistics ignore NaN (warm-up) values; a feature that is constant or
all-NaN on train gets scale 1. NaN becomes 0 after normalization, i.e. "the train mean",
so warm-up bars look average rather than extreme.

`to_dict()` is plain JSON (lists of floats) and `normalize_numpy(stats, x)` reproduces the
transform with numpy alone, which is what an exported bundle does.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import polars as pl

from jaxtrade.errors import FeatureError

KEY_COLUMNS = ("timestamp", "symbol")
IQR_TO_STD = 1.349

Rows = slice | tuple[int, int] | np.ndarray | None


def normalize_numpy(stats: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """Apply normalization stats (from `Normalizer.to_dict()`) to x [..., F] with numpy."""
    center = np.asarray(stats["center"], dtype=np.float64)
    scale = np.asarray(stats["scale"], dtype=np.float64)
    y = (np.asarray(x, dtype=np.float64) - center) / scale
    if stats.get("clip") is not None:
        y = np.clip(y, -stats["clip"], stats["clip"])
    return np.where(np.isfinite(y), y, 0.0)


@dataclasses.dataclass(frozen=True, eq=False)
class Normalizer:
    feature_names: tuple[str, ...]
    center: np.ndarray
    scale: np.ndarray
    method: str = "zscore"
    clip: float | None = 5.0

    @classmethod
    def fit(
        cls,
        features: pl.DataFrame | np.ndarray,
        train_rows: Rows = None,
        *,
        method: str = "zscore",
        clip: float | None = 5.0,
        mask: np.ndarray | None = None,
        feature_names: tuple[str, ...] | None = None,
    ) -> Normalizer:
        """Fit on `features[train_rows]` (first axis); `mask` (leading dims) drops entries.

        `features` is a frame from `compute` (key columns are ignored) or an array [..., F].
        `train_rows` is a slice, a (start, end) pair, a boolean row mask or None (all rows).
        """
        if method not in ("zscore", "robust"):
            raise FeatureError(f"normalization must be 'zscore' or 'robust', got {method!r}")
        if clip is not None and not clip > 0:
            raise FeatureError(f"normalization clip must be > 0 or None, got {clip!r}")
        names, x = _as_array(features, feature_names)
        rows = _rows(train_rows, x.shape[0])
        x = x[rows]
        if mask is not None:
            x = x[np.asarray(mask, dtype=bool)[rows]]
        x = x.reshape(-1, x.shape[-1])
        if x.shape[0] == 0:
            raise FeatureError("normalization: the training rows are empty")
        x = np.where(np.isfinite(x), x, np.nan)
        with np.errstate(all="ignore"), _quiet_nan_warnings():
            if method == "zscore":
                center = np.nanmean(x, axis=0)
                scale = np.nanstd(x, axis=0)
            else:
                q25, center, q75 = np.nanpercentile(x, [25.0, 50.0, 75.0], axis=0)
                scale = (q75 - q25) / IQR_TO_STD
        center = np.where(np.isfinite(center), center, 0.0)
        scale = np.where(np.isfinite(scale) & (scale > 1e-12), scale, 1.0)
        return cls(names, center, scale, method, None if clip is None else float(clip))

    def transform(self, features: pl.DataFrame | np.ndarray) -> pl.DataFrame | np.ndarray:
        """Normalized copy: a frame keeps its key columns; an array keeps its shape."""
        stats = self.to_dict()
        if isinstance(features, pl.DataFrame):
            missing = [c for c in self.feature_names if c not in features.columns]
            if missing:
                raise FeatureError(f"normalization: frame lacks fitted column(s) {missing}")
            x = features.select(self.feature_names).to_numpy().astype(np.float64)
            y = normalize_numpy(stats, x)
            keys = [c for c in KEY_COLUMNS if c in features.columns]
            return features.select(keys).hstack(pl.DataFrame(y, schema=list(self.feature_names)))
        x = np.asarray(features, dtype=np.float64)
        if x.shape[-1] != len(self.feature_names):
            raise FeatureError(
                f"normalization: expected {len(self.feature_names)} features, got {x.shape[-1]}"
            )
        return normalize_numpy(stats, x)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "clip": self.clip,
            "feature_names": list(self.feature_names),
            "center": [float(v) for v in self.center],
            "scale": [float(v) for v in self.scale],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalizer:
        return cls(
            tuple(d["feature_names"]),
            np.asarray(d["center"], dtype=np.float64),
            np.asarray(d["scale"], dtype=np.float64),
            d.get("method", "zscore"),
            d.get("clip"),
        )


def _as_array(features: Any, names: tuple[str, ...] | None) -> tuple[tuple[str, ...], np.ndarray]:
    if isinstance(features, pl.DataFrame):
        cols = [c for c in features.columns if c not in KEY_COLUMNS]
        return tuple(cols), features.select(cols).to_numpy().astype(np.float64)
    x = np.asarray(features, dtype=np.float64)
    return tuple(names or (f"f{i}" for i in range(x.shape[-1]))), x


def _rows(train_rows: Rows, n: int) -> slice | np.ndarray:
    if train_rows is None:
        return slice(0, n)
    if isinstance(train_rows, slice):
        return train_rows
    if isinstance(train_rows, tuple) and len(train_rows) == 2:
        return slice(int(train_rows[0]), int(train_rows[1]))
    mask = np.asarray(train_rows)
    if mask.dtype != bool or mask.shape != (n,):
        raise FeatureError("train_rows must be a slice, a (start, end) pair or a boolean mask")
    return mask


class _quiet_nan_warnings:
    """All-NaN columns are expected (warm-up longer than train); silence numpy about them."""

    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)
