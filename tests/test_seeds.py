"""Several seeds are several results: IQM and its bootstrap interval against references,
and a `train.num_seeds=3` run whose console, report.html, metrics.json and W&B show every
seed beside the aggregate."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from jaxtrade.evaluate import seeds


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 13, 50])
def test_iqm_is_scipys_quarter_trimmed_mean_for_every_sample_size(n: int) -> None:
    # rliable's IQM is scipy.stats.trim_mean(x, 0.25); sizes not divisible by 4 cut
    # int(0.25 * n) values at each end.
    x = np.random.default_rng(n).standard_t(3, size=n)
    assert seeds.interquartile_mean(x) == pytest.approx(stats.trim_mean(x, 0.25), abs=1e-12)
    matrix = np.random.default_rng(n + 100).normal(size=(n, 3))
    assert seeds.interquartile_mean(matrix) == pytest.approx(
        stats.trim_mean(matrix, 0.25, axis=None), abs=1e-12
    )
    assert seeds.interquartile_mean(matrix.T, axis=1) == pytest.approx(
        stats.trim_mean(matrix.T, 0.25, axis=1), abs=1e-12
    )


def test_iqm_closed_form_cases() -> None:
    assert seeds.interquartile_mean([8, 1, 7, 2, 6, 3, 5, 4]) == 4.5  # mean of 3, 4, 5, 6
    assert seeds.interquartile_mean([0, 1, 2, 3, 4, 100]) == 2.5  # one cut each end of 6
    assert seeds.interquartile_mean([1.0, 2.0, 9.0]) == 4.0  # fewer than 4: the mean
    assert seeds.interquartile_mean([0, 1, 1, 1, 1, 2, 1e9, -1e9]) == 1.0  # outliers gone
    with pytest.raises(ValueError):
        seeds.interquartile_mean([])


def test_bootstrap_ci_is_deterministic_and_brackets_the_estimate() -> None:
    x = np.random.default_rng(1).normal(size=12)
    ci = seeds.bootstrap_ci(x, seed=3)
    assert ci == seeds.bootstrap_ci(x, seed=3)
    assert ci != seeds.bootstrap_ci(x, seed=4)
    assert x.min() <= ci[0] < seeds.interquartile_mean(x) < ci[1] <= x.max()
    assert seeds.bootstrap_ci(np.full(6, 0.7)) == (0.7, 0.7)
    narrow = seeds.bootstrap_ci(x, confidence=0.5, seed=3)
    assert ci[0] < narrow[0] < narrow[1] < ci[1]


def test_bootstrap_ci_of_the_mean_matches_scipys_percentile_bootstrap() -> None:
    x = np.random.default_rng(2).exponential(size=30)
    ours = seeds.bootstrap_ci(x, np.mean, num_resamples=20_000, seed=0)
    ref = stats.bootstrap(
        (x,), np.mean, n_resamples=20_000, method="percentile", random_state=0
    ).confidence_interval
    assert ours == pytest.approx((ref.low, ref.high), abs=0.02)


def test_bootstrap_ci_coverage_on_a_known_distribution() -> None:
    # The IQM of a symmetric distribution is its centre: a 90% interval from 40 normal
    # draws should hold the true value about 90% of the time.
    rng = np.random.default_rng(7)
    trials, hits = 300, 0
    for trial in range(trials):
        x = rng.normal(1.0, 2.0, size=40)
        low, high = seeds.bootstrap_ci(x, confidence=0.9, num_resamples=2000, seed=trial)
        hits += low <= 1.0 <= high
    assert 0.84 <= hits / trials <= 0.96


def test_stratified_bootstrap_resamples_runs_within_each_task() -> None:
    # Task 0 scores 0, task 1 scores 10: a stratified resample keeps half of every resample
    # in each task, so the pooled mean is always 5 (an unstratified one would not be).
    scores = np.stack([np.zeros(5), np.full(5, 10.0)], axis=1)
    assert seeds.bootstrap_ci(scores, np.mean) == (5.0, 5.0)


def test_aggregate_and_small_sample_honesty() -> None:
    four = seeds.aggregate([1.0, 2.0, 3.0, 10.0])
    assert four["n"] == 4 and four["mean"] == 4.0 and four["iqm"] == 2.5
    assert four["std"] == pytest.approx(np.std([1, 2, 3, 10], ddof=1))
    assert four["iqm_ci"] is not None and four["iqm_ci"][0] <= 2.5 <= four["iqm_ci"][1]
    three = seeds.aggregate([1.0, None, 2.0, float("nan"), 3.0])
    assert three["n"] == 3 and three["iqm"] == 2.0 and three["iqm_ci"] is None
    assert seeds.aggregate([0.5])["std"] is None
    assert seeds.aggregate([None])["mean"] is None
    assert seeds.ci_note(4) is None
    assert "3 seeds" in seeds.ci_note(3) and "train.num_seeds>=4" in seeds.ci_note(3)
