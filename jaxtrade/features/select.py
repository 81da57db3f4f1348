"""Feature selection fitted on the training rows only; each returns the selected names.

* `select_by_variance`: the top-N features by variance of their train values after
  *robust* scaling (median/IQR), so units do not decide; raw variance would just rank
  price-scaled columns first.
* `select_by_correlation`: walk features in order, drop any whose |Pearson correlation|
  on train with an already kept feature exceeds the threshold.
* `select_by_importance`: permutation importance of a ridge-regularised linear predictor
  of the next bar's return sign. The model is fitted on the first 75% of the train rows
  and scored (mean squared error) on the last 25%, so importance is out-of-sample
  *within* train; validation/test rows are never read.

NaN warm-up values are set to the train median before any statistic.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from jaxtrade.errors import FeatureError
from jaxtrade.features.normalize import Normalizer, Rows, _as_array, _rows


def next_bar_direction(frame: pl.DataFrame) -> np.ndarray:
    """Sign (+1 / -1 / 0) of close_{t+1} / close_t - 1 per row (per symbol); NaN at the end.

    This is a *target* (it looks one bar ahead by definition), only for fitting selection.
    """
    over = ["symbol"] if "symbol" in frame.columns else None
    nxt = pl.col("close").shift(-1)
    expr = (nxt / pl.col("close") - 1.0).sign()
    expr = expr.over(over) if over else expr
    return frame.select(expr).to_series().cast(pl.Float64).fill_null(np.nan).to_numpy()


def _train_matrix(features: pl.DataFrame | np.ndarray, train_rows: Rows):
    names, x = _as_array(features, None)
    if x.ndim != 2:
        raise FeatureError("feature selection takes a 2-D table [rows, features]")
    rows = _rows(train_rows, x.shape[0])
    scaler = Normalizer.fit(x, rows, method="robust", clip=None, feature_names=names)
    return names, rows, scaler.transform(x[rows])


def select_by_variance(features, train_rows: Rows, top_n: int) -> list[str]:
    names, _, x = _train_matrix(features, train_rows)
    variance = x.var(axis=0)
    order = np.argsort(-variance, kind="stable")[: max(0, int(top_n))]
    return [names[i] for i in sorted(order)]


def select_by_correlation(features, train_rows: Rows, threshold: float = 0.95) -> list[str]:
    if not 0.0 < threshold <= 1.0:
        raise FeatureError(f"correlation threshold must be in (0, 1], got {threshold}")
    names, _, x = _train_matrix(features, train_rows)
    std = x.std(axis=0)
    z = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    corr = np.abs(z.T @ z) / x.shape[0]
    kept: list[int] = []
    for i in range(len(names)):
        if std[i] > 0 and all(corr[i, j] <= threshold for j in kept):
            kept.append(i)
    return [names[i] for i in kept]


def select_by_importance(
    features,
    target: np.ndarray,
    train_rows: Rows,
    top_n: int,
    *,
    ridge: float = 1.0,
    repeats: int = 5,
    seed: int = 0,
) -> list[str]:
    """Top-N features by permutation importance (increase in held-out MSE when shuffled).

    `target` is one value per row (e.g. `next_bar_direction(frame)`); rows where it is NaN
    are skipped. The last train row's target reads the first bar after train, so it is
    dropped too.
    """
    names, rows, x = _train_matrix(features, train_rows)
    y = np.asarray(target, dtype=np.float64)[rows][: x.shape[0]]
    keep = np.isfinite(y)
    keep[-1] = False
    x, y = x[keep], y[keep]
    if x.shape[0] < 20:
        raise FeatureError("importance selection needs at least 20 training rows")
    split = int(0.75 * x.shape[0])
    x_fit, y_fit, x_eval, y_eval = x[:split], y[:split], x[split:], y[split:]
    mean_x, mean_y = x_fit.mean(axis=0), y_fit.mean()
    xc = x_fit - mean_x
    weights = np.linalg.solve(xc.T @ xc + ridge * np.eye(x.shape[1]), xc.T @ (y_fit - mean_y))

    def mse(m: np.ndarray) -> float:
        return float(np.mean(((m - mean_x) @ weights + mean_y - y_eval) ** 2))

    base = mse(x_eval)
    rng = np.random.default_rng(seed)
    importance = np.zeros(x.shape[1])
    for j in range(x.shape[1]):
        for _ in range(repeats):
            shuffled = x_eval.copy()
            shuffled[:, j] = rng.permutation(shuffled[:, j])
            importance[j] += (mse(shuffled) - base) / repeats
    order = np.argsort(-importance, kind="stable")[: max(0, int(top_n))]
    return [names[i] for i in sorted(order)]
