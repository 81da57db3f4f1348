"""Market regimes: a Gaussian HMM fitted on the training split, forward-filtered on any frame.

Fit (`fit_regimes`) uses hmmlearn's EM on causal return/volatility inputs of the TRAIN frame.
Transform (`RegimeModel.transform`) is our own scaled forward recursion,

    p_t(k) = P(state_t = k | x_1..x_t)  ~  N(x_t; mean_k, cov_k) * sum_j p_{t-1}(j) A[j, k],

so the probability at bar t depends on bars <= t only. hmmlearn's `predict_proba` is the
forward-backward smoother, which uses future bars: it is never used for the features.

Inputs. Regimes are market-wide. For a single series the input series is the bar's log return
log(close_t / close_{t-1}); for a multi-asset frame (with `symbol`) it is the equal-weight
market return: each symbol's log return, averaged over the symbols that have a bar at that
timestamp. The HMM features are computed from that series (all causal):
  log_return              r_t
  abs_return              |r_t|
  realized_vol_N          sample std (ddof=1) of r over the last N bars
  log_realized_vol_N      log of realized_vol_N
  momentum_N              mean of r over the last N bars
They are z-scored with the training mean/std (stored in the model). While a feature is not
defined yet (first bar, warm-up windows) the bar carries no evidence: the filter only applies
the transition (p_t = p_{t-1} A). Every row of a timestamp gets the same regime probabilities.

Naming rule (states -> trend, range, defensive). On the training series each HMM state gets
the posterior-weighted mean and std of the market log return. The state with the largest
return std is `defensive`; of the other states the one with the largest absolute drift
|mean| is `trend`; every remaining state is `range`. (|mean| / std was tried and rejected:
it favours the calmest state, whose small std magnifies a small, noisy mean.) A named
regime's probability is the sum over its states.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from jaxtrade.errors import DataError, FeatureError

REGIME_NAMES = ("trend", "range", "defensive")
REGIME_COLUMNS = tuple(f"regime_{name}" for name in REGIME_NAMES)
DEFAULT_FEATURES = ("log_return", "log_realized_vol_10")

_WINDOWED = re.compile(r"^(realized_vol|log_realized_vol|momentum)_(\d+)$")


def _window(name: str) -> int:
    if name in ("log_return", "abs_return"):
        return 1
    match = _WINDOWED.match(name)
    if match is None or int(match.group(2)) < 2:
        raise FeatureError(
            f"unknown regime feature {name!r}; use log_return, abs_return, realized_vol_N, "
            "log_realized_vol_N or momentum_N (N >= 2)"
        )
    return int(match.group(2))


def _rolling_windows(returns: np.ndarray, window: int) -> np.ndarray:
    """[T, window] trailing windows ending at each bar; rows before the first full one are NaN."""
    padded = np.concatenate([np.full(window - 1, np.nan), returns])
    return np.lib.stride_tricks.sliding_window_view(padded, window)


def regime_inputs(returns: np.ndarray, features: Sequence[str]) -> np.ndarray:
    """Causal HMM inputs [T, F] from a log-return series [T] (NaN where not yet defined)."""
    returns = np.asarray(returns, dtype=np.float64)
    columns = []
    for name in features:
        window = _window(name)
        if name == "log_return":
            columns.append(returns)
        elif name == "abs_return":
            columns.append(np.abs(returns))
        else:
            windows = _rolling_windows(returns, window)  # NaN anywhere -> NaN
            kind = _WINDOWED.match(name).group(1)
            if kind == "momentum":
                columns.append(windows.mean(axis=1))
            else:
                vol = windows.std(axis=1, ddof=1)
                if kind == "log_realized_vol":
                    with np.errstate(divide="ignore"):
                        vol = np.log(np.maximum(vol, 1e-12))
                columns.append(vol)
    return np.stack(columns, axis=1)


def market_returns(frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(timestamps [T'], market log return [T']) and the row -> timestamp index [rows].

    Returns the tuple (returns, row_index): `returns[i]` is the market log return at the i-th
    distinct timestamp (sorted), `row_index[r]` the timestamp index of frame row r.
    """
    for column in ("timestamp", "close"):
        if column not in frame.columns:
            raise DataError(f"regime detection needs a {column!r} column")
    has_symbol = "symbol" in frame.columns
    rows = frame.select(
        pl.col("timestamp"),
        (pl.col("symbol") if has_symbol else pl.lit("")).alias("symbol"),
        pl.col("close").cast(pl.Float64),
        pl.int_range(pl.len()).alias("row"),
    )
    rows = rows.sort("symbol", "timestamp").with_columns(
        pl.col("close").log().diff().over("symbol").alias("log_return")
    )
    per_timestamp = (
        rows.group_by("timestamp")
        .agg(pl.col("log_return").drop_nulls().mean())
        .sort("timestamp")
        .with_columns(pl.int_range(pl.len()).alias("t"))
    )
    row_index = (
        rows.join(per_timestamp.select("timestamp", "t"), on="timestamp", how="left")
        .sort("row")
        .get_column("t")
        .to_numpy()
    )
    returns = per_timestamp.get_column("log_return").fill_null(np.nan).to_numpy()
    return returns.astype(np.float64), row_index


def _gaussian_log_density(x: np.ndarray, means: np.ndarray, covars: np.ndarray) -> np.ndarray:
    """log N(x_t; mean_k, cov_k) for every row x_t [T, F] and state k -> [T, K]."""
    out = np.empty((x.shape[0], means.shape[0]))
    dim = x.shape[1]
    for k in range(means.shape[0]):
        chol = np.linalg.cholesky(covars[k])
        solved = np.linalg.solve(chol, (x - means[k]).T)
        log_det = 2.0 * np.sum(np.log(np.diag(chol)))
        out[:, k] = -0.5 * (np.sum(solved**2, axis=0) + log_det + dim * np.log(2.0 * np.pi))
    return out


@dataclasses.dataclass(frozen=True)
class RegimeModel:
    """A fitted HMM and everything the forward filter needs (plain numpy: live-runner ready)."""

    features: tuple[str, ...]
    feature_mean: np.ndarray  # [F] training mean of each input (z-scoring)
    feature_std: np.ndarray  # [F] training std of each input
    startprob: np.ndarray  # [K] prior before the first bar: stationary distribution
    transmat: np.ndarray  # [K, K]
    means: np.ndarray  # [K, F] in z-scored units
    covars: np.ndarray  # [K, F, F] in z-scored units
    state_regime: tuple[int, ...]  # [K] index into REGIME_NAMES for each state
    state_return_mean: np.ndarray  # [K] posterior-weighted training mean log return
    state_return_std: np.ndarray  # [K] posterior-weighted training std of log return

    @property
    def n_states(self) -> int:
        return int(self.startprob.shape[0])

    @property
    def warmup_bars(self) -> int:
        """Bars (closes) needed before every input is defined: the longest window + 1."""
        return max(_window(name) for name in self.features) + 1

    # --- the forward filter -------------------------------------------------------------

    def filter_step(self, prob_prev: np.ndarray | None, x_t: np.ndarray) -> np.ndarray:
        """One step of the scaled forward recursion: P(state_t | x_1..x_t) [K].

        `prob_prev` is the previous output (None before the first bar); `x_t` the raw
        (not z-scored) inputs of bar t as made by `regime_inputs`; NaN inputs carry no
        evidence. The same arithmetic as `filter`, so stepping bar by bar equals the batch.
        """
        predicted = self.startprob if prob_prev is None else prob_prev @ self.transmat
        x_t = np.asarray(x_t, dtype=np.float64)
        if np.any(np.isnan(x_t)):
            return predicted / predicted.sum()
        z = ((x_t - self.feature_mean) / self.feature_std)[None, :]
        log_density = _gaussian_log_density(z, self.means, self.covars)[0]
        return self._update(predicted, log_density)

    @staticmethod
    def _update(predicted: np.ndarray, log_density: np.ndarray) -> np.ndarray:
        # Work relative to the best state so exp() cannot underflow everything at once.
        log_weight = np.log(np.maximum(predicted, 1e-300)) + log_density
        weight = np.exp(log_weight - log_weight.max())
        return weight / weight.sum()

    def filter(self, inputs: np.ndarray) -> np.ndarray:
        """Filtered state probabilities [T, K] for raw inputs [T, F] (bar by bar, causal)."""
        inputs = np.asarray(inputs, dtype=np.float64)
        missing = np.any(np.isnan(inputs), axis=1)
        z = (np.nan_to_num(inputs) - self.feature_mean) / self.feature_std
        log_density = _gaussian_log_density(z, self.means, self.covars)
        out = np.empty((inputs.shape[0], self.n_states))
        prob = None
        for t in range(inputs.shape[0]):
            predicted = self.startprob if prob is None else prob @ self.transmat
            if missing[t]:
                prob = predicted / predicted.sum()
            else:
                prob = self._update(predicted, log_density[t])
            out[t] = prob
        return out

    def named_probabilities(self, state_probs: np.ndarray) -> np.ndarray:
        """Sum state probabilities [.., K] into (trend, range, defensive) [.., 3]."""
        mapping = np.zeros((self.n_states, len(REGIME_NAMES)))
        mapping[np.arange(self.n_states), list(self.state_regime)] = 1.0
        return state_probs @ mapping

    def inputs(self, frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(raw inputs [T', F] per distinct timestamp, row -> timestamp index [rows])."""
        returns, row_index = market_returns(frame)
        return regime_inputs(returns, self.features), row_index

    def transform(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Columns regime_trend, regime_range, regime_defensive: filtered, same rows as frame."""
        inputs, row_index = self.inputs(frame)
        named = self.named_probabilities(self.filter(inputs))[row_index]
        return pl.DataFrame(
            {column: named[:, i] for i, column in enumerate(REGIME_COLUMNS)},
            schema={column: pl.Float64 for column in REGIME_COLUMNS},
        )

    # --- serialization ------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (lists of floats) for export bundles and live runners."""
        return {
            "kind": "gaussian_hmm_forward_filter",
            "version": 1,
            "inputs": "market log return (equal-weight mean over symbols)",
            "features": list(self.features),
            "feature_mean": self.feature_mean.tolist(),
            "feature_std": self.feature_std.tolist(),
            "startprob": self.startprob.tolist(),
            "transmat": self.transmat.tolist(),
            "means": self.means.tolist(),
            "covars": self.covars.tolist(),
            "state_regime": list(self.state_regime),
            "regime_names": list(REGIME_NAMES),
            "state_return_mean": self.state_return_mean.tolist(),
            "state_return_std": self.state_return_std.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RegimeModel:
        array = lambda key: np.asarray(data[key], dtype=np.float64)
        return cls(
            features=tuple(data["features"]),
            feature_mean=array("feature_mean"),
            feature_std=array("feature_std"),
            startprob=array("startprob"),
            transmat=array("transmat"),
            means=array("means"),
            covars=array("covars"),
            state_regime=tuple(int(i) for i in data["state_regime"]),
            state_return_mean=array("state_return_mean"),
            state_return_std=array("state_return_std"),
        )


def stationary_distribution(transmat: np.ndarray) -> np.ndarray:
    """The left eigenvector of a row-stochastic matrix for eigenvalue 1, normalized."""
    values, vectors = np.linalg.eig(transmat.T)
    vector = np.abs(np.real(vectors[:, np.argmin(np.abs(values - 1.0))]))
    return vector / vector.sum()


def name_states(return_mean: np.ndarray, return_std: np.ndarray) -> tuple[int, ...]:
    """The naming rule of the module docstring: state -> index into REGIME_NAMES."""
    n_states = len(return_mean)
    defensive = int(np.argmax(return_std))
    others = [k for k in range(n_states) if k != defensive]
    trend = others[int(np.argmax(np.abs(return_mean[others])))]
    names = [REGIME_NAMES.index("range")] * n_states
    names[defensive] = REGIME_NAMES.index("defensive")
    names[trend] = REGIME_NAMES.index("trend")
    return tuple(names)


def fit_regimes(
    train_frame: pl.DataFrame,
    n_states: int = 3,
    seed: int = 0,
    features: Sequence[str] = DEFAULT_FEATURES,
    *,
    n_init: int = 3,
    n_iter: int = 200,
) -> RegimeModel:
    """Fit a full-covariance Gaussian HMM on the causal inputs of the TRAINING frame only.

    EM is restarted `n_init` times (seeds seed, seed+1, ...) and the best training
    log-likelihood kept. Returns a `RegimeModel` whose `transform` is forward-filtered.
    """
    from hmmlearn.hmm import GaussianHMM
    from threadpoolctl import threadpool_limits

    if n_states < 3:
        raise FeatureError(f"regime detection needs n_states >= 3, got {n_states}")
    features = tuple(features)
    for name in features:
        _window(name)
    returns, _ = market_returns(train_frame)
    inputs = regime_inputs(returns, features)
    defined = ~np.any(np.isnan(inputs), axis=1)
    if defined.sum() < 10 * n_states * (1 + len(features)):
        raise DataError(
            f"too few training bars for a {n_states}-state regime HMM: {int(defined.sum())} "
            "bars with all inputs defined"
        )
    # Undefined rows are warm-up bars at the start (or timestamps where no symbol has a
    # return); dropping them joins the rest into one sequence.
    x = inputs[defined]
    returns = returns[defined]
    feature_mean = x.mean(axis=0)
    feature_std = np.maximum(x.std(axis=0), 1e-12)
    z = (x - feature_mean) / feature_std

    best, best_score = None, -np.inf
    for attempt in range(n_init):
        hmm = GaussianHMM(
            n_components=n_states,
            covariance_type="full",
            n_iter=n_iter,
            tol=1e-4,
            random_state=seed + attempt,
        )
        # EM on a few thousand rows x 3 states is tiny: multi-threaded BLAS only adds
        # contention (30x slower on a busy 2-core machine), so keep it on one thread.
        with threadpool_limits(limits=1):
            hmm.fit(z)
            score = hmm.score(z)
        if np.isfinite(score) and score > best_score:
            best, best_score = hmm, score
    if best is None:
        raise FeatureError("regime HMM fit did not converge to a finite likelihood")

    # Naming uses smoothed posteriors on TRAIN only: a fitting step, never a feature.
    with threadpool_limits(limits=1):
        posterior = best.predict_proba(z)
    weight = posterior / np.maximum(posterior.sum(axis=0, keepdims=True), 1e-12)
    state_mean = weight.T @ returns
    state_std = np.sqrt(np.maximum(weight.T @ returns**2 - state_mean**2, 0.0))
    return RegimeModel(
        features=features,
        feature_mean=feature_mean,
        feature_std=feature_std,
        # The filter may start anywhere (a later frame, a live feed), not where the training
        # split started, so its prior is the chain's stationary distribution.
        startprob=stationary_distribution(np.asarray(best.transmat_, dtype=np.float64)),
        transmat=np.asarray(best.transmat_, dtype=np.float64),
        means=np.asarray(best.means_, dtype=np.float64),
        covars=np.asarray(best.covars_, dtype=np.float64),
        state_regime=name_states(state_mean, state_std),
        state_return_mean=state_mean,
        state_return_std=state_std,
    )
