"""One-step Gaussian-HMM forward filter for the regime columns (mirrors features.regimes).

p_t(k) is proportional to N(x_t; mean_k, cov_k) * sum_j p_{t-1}(j) A[j, k]; bars whose inputs
are not yet defined carry no evidence (p_t = p_{t-1} A). The inputs are the bar's log return
and windowed statistics of it (realized vol, its log, momentum), z-scored with training stats.
Filtering only: P(state_t | bars <= t), never smoothed.
"""

from __future__ import annotations

import math
import re

import numpy as np

from .errors import BundleError
from .features import Ring

_WINDOWED = re.compile(r"^(realized_vol|log_realized_vol|momentum)_(\d+)$")


class RegimeFilter:
    def __init__(self, model: dict) -> None:
        if model.get("kind") != "gaussian_hmm_forward_filter":
            raise BundleError(f"regime model kind {model.get('kind')!r} is not supported")
        self.features = list(model["features"])
        self.windows = []
        for name in self.features:
            if name in ("log_return", "abs_return"):
                self.windows.append(1)
                continue
            match = _WINDOWED.match(name)
            if match is None:
                raise BundleError(f"regime input {name!r} is not supported by the runner")
            self.windows.append(int(match.group(2)))
        self.mean = np.asarray(model["feature_mean"], dtype=np.float64)
        self.std = np.asarray(model["feature_std"], dtype=np.float64)
        self.startprob = np.asarray(model["startprob"], dtype=np.float64)
        self.transmat = np.asarray(model["transmat"], dtype=np.float64)
        self.means = np.asarray(model["means"], dtype=np.float64)
        covars = np.asarray(model["covars"], dtype=np.float64)
        chols = np.linalg.cholesky(covars)
        self.inv_chols = np.linalg.inv(chols)
        dim = self.means.shape[1]
        log_dets = 2.0 * np.log(np.diagonal(chols, axis1=1, axis2=2)).sum(axis=1)
        self.log_norm = -0.5 * (log_dets + dim * math.log(2.0 * math.pi))
        self.mapping = np.zeros((self.startprob.shape[0], 3))
        self.mapping[np.arange(self.startprob.shape[0]), list(model["state_regime"])] = 1.0
        self.returns = Ring(max(self.windows) + 1)
        self.prob: np.ndarray | None = None

    def _inputs(self, r: float) -> np.ndarray:
        values = []
        for name, window in zip(self.features, self.windows):
            if name == "log_return":
                values.append(r)
            elif name == "abs_return":
                values.append(abs(r))
            else:
                x = self.returns.tail(window)
                if x is None or np.isnan(x).any():
                    values.append(math.nan)
                elif name.startswith("momentum"):
                    values.append(float(x.mean()))
                else:
                    vol = float(x.std(ddof=1))
                    values.append(math.log(max(vol, 1e-12)) if name.startswith("log_") else vol)
        return np.asarray(values, dtype=np.float64)

    def update(self, log_return: float) -> np.ndarray:
        """Named probabilities (trend, range, defensive) after this bar's log return."""
        self.returns.push(log_return)
        x = self._inputs(log_return)
        predicted = self.startprob if self.prob is None else self.prob @ self.transmat
        if np.isnan(x).any():
            self.prob = predicted / predicted.sum()
        else:
            z = (x - self.mean) / self.std
            solved = np.einsum("kij,kj->ki", self.inv_chols, z[None, :] - self.means)
            log_density = self.log_norm - 0.5 * (solved**2).sum(axis=1)
            log_weight = np.log(np.maximum(predicted, 1e-300)) + log_density
            weight = np.exp(log_weight - log_weight.max())
            self.prob = weight / weight.sum()
        return self.prob @ self.mapping
