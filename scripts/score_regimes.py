"""Score the HMM regime detector against the true regimes of the synthetic market.

For each seed: generate a synthetic market, fit `fit_regimes` on the first `--train-fraction`
of the bars, forward-filter the whole series, and compare argmax(filtered probabilities) with
the true regime on the held-out remainder. Printed beside it, measured in the same run:
  smoothed   hmmlearn's predict_proba (forward-backward) with the same fitted HMM: it peeks at
             future bars, so it is an upper reference a causal filter cannot be expected to beat
  majority   always guessing the most frequent true regime of the held-out bars

    python scripts/score_regimes.py            # 5 seeds x 10,000 bars
    python scripts/score_regimes.py --quick    # 2 seeds x 5,000 bars (smoke test)
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402
from hmmlearn.hmm import GaussianHMM  # noqa: E402

from jaxtrade.data.synthetic import REGIME_NAMES, synthetic_frame  # noqa: E402
from jaxtrade.features.regimes import DEFAULT_FEATURES, RegimeModel, fit_regimes  # noqa: E402


def smoothed_probabilities(model: RegimeModel, inputs: np.ndarray) -> np.ndarray:
    """Named forward-backward (look-ahead) probabilities from hmmlearn, NaN on warm-up rows."""
    hmm = GaussianHMM(n_components=model.n_states, covariance_type="full")
    hmm.n_features = model.means.shape[1]
    hmm.startprob_ = model.startprob
    hmm.transmat_ = model.transmat
    hmm.means_ = model.means
    hmm.covars_ = model.covars
    defined = ~np.any(np.isnan(inputs), axis=1)
    out = np.full((inputs.shape[0], 3), np.nan)
    z = (inputs[defined] - model.feature_mean) / model.feature_std
    out[defined] = model.named_probabilities(hmm.predict_proba(z))
    return out


def confusion(truth: np.ndarray, detected: np.ndarray) -> np.ndarray:
    matrix = np.zeros((3, 3), dtype=int)
    np.add.at(matrix, (truth, detected), 1)
    return matrix


def score_seed(seed: int, args: argparse.Namespace) -> dict[str, float | np.ndarray]:
    frame, truth = synthetic_frame(seed=seed, num_bars=args.num_bars, return_regimes=True)
    cut = int(args.train_fraction * args.num_bars)
    started = time.perf_counter()
    model = fit_regimes(frame.head(cut), n_states=args.n_states, seed=seed, features=args.features)
    fit_s = time.perf_counter() - started
    started = time.perf_counter()
    filtered = model.transform(frame).to_numpy()
    filter_s = time.perf_counter() - started
    inputs, _ = model.inputs(frame)
    smoothed = smoothed_probabilities(model, inputs)
    test_truth = truth[cut:]
    detected = filtered[cut:].argmax(axis=1)
    return {
        "filtered": float(np.mean(detected == test_truth)),
        "smoothed": float(np.mean(smoothed[cut:].argmax(axis=1) == test_truth)),
        "majority": float(np.bincount(test_truth, minlength=3).max() / len(test_truth)),
        "confusion": confusion(test_truth, detected),
        "fit_s": fit_s,
        "filter_s": filter_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--num-bars", type=int, default=10_000)
    parser.add_argument("--train-fraction", type=float, default=0.6)
    parser.add_argument("--n-states", type=int, default=3)
    parser.add_argument("--features", nargs="+", default=list(DEFAULT_FEATURES))
    parser.add_argument("--quick", action="store_true", help="2 seeds x 5,000 bars")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.num_bars = [0, 1], 5_000

    print(
        f"synthetic default market, {args.num_bars} bars, fit on first "
        f"{args.train_fraction:.0%}, scored on the rest; features {args.features}"
    )
    print(
        f"{'seed':>4} {'filtered':>9} {'smoothed':>9} {'ratio':>6} {'majority':>9} "
        f"{'fit s':>6} {'filter s':>8}"
    )
    rows = []
    for seed in args.seeds:
        row = score_seed(seed, args)
        rows.append(row)
        print(
            f"{seed:>4} {row['filtered']:>9.3f} {row['smoothed']:>9.3f} "
            f"{row['filtered'] / row['smoothed']:>6.2f} {row['majority']:>9.3f} "
            f"{row['fit_s']:>6.2f} {row['filter_s']:>8.2f}"
        )
    filtered = np.array([r["filtered"] for r in rows])
    smoothed = np.array([r["smoothed"] for r in rows])
    print(
        f"mean filtered accuracy {filtered.mean():.3f} (min {filtered.min():.3f}); "
        f"smoothed (look-ahead reference) {smoothed.mean():.3f}; "
        f"ratio filtered/smoothed {filtered.mean() / smoothed.mean():.2f}; chance 0.333"
    )
    total = sum(r["confusion"] for r in rows)
    print("confusion matrix over all seeds (rows: true regime, columns: detected; row %)")
    width = max(len(n) for n in REGIME_NAMES) + 2
    print(" " * width + "".join(f"{n:>{width}}" for n in REGIME_NAMES))
    for name, counts in zip(REGIME_NAMES, total):
        share = 100.0 * counts / max(counts.sum(), 1)
        print(f"{name:>{width}}" + "".join(f"{s:>{width - 1}.1f}%" for s in share))


if __name__ == "__main__":
    main()
