"""Split bounds: embargo exact, no overlap, walk-forward test windows tile without overlap."""

from __future__ import annotations

import numpy as np
import pytest

from jaxtrade.data import Splits, make_splits, walk_forward
from jaxtrade.errors import ConfigError


def test_one_default_split_for_the_library_and_the_cli() -> None:
    """make_splits (and so jaxtrade.market.build) defaulted to 60/20/20, the CLI to 70/15/15."""
    from jaxtrade.config.schema import DataConfig

    s = make_splits(1000)
    assert (s.train, s.validation, s.test) == ((0, 700), (700, 850), (850, 1000))
    assert (DataConfig().train_frac, DataConfig().validation_frac) == (0.7, 0.15)


def _ranges(s: Splits) -> list[tuple[int, int]]:
    return [r for r in (s.train, s.validation, s.test) if r[1] > r[0]]


@pytest.mark.parametrize("num_bars", [100, 1001, 5031])
@pytest.mark.parametrize("embargo", [0, 1, 7])
def test_make_splits_embargo_is_exact_and_covers_timeline(num_bars: int, embargo: int) -> None:
    s = make_splits(num_bars, train_frac=0.6, validation_frac=0.2, embargo_bars=embargo)
    assert s.train[0] == 0 and s.test[1] == num_bars
    assert s.validation[0] - s.train[1] == embargo
    assert s.test[0] - s.validation[1] == embargo
    sizes = [b - a for a, b in _ranges(s)]
    assert sum(sizes) + 2 * embargo == num_bars
    # Fractions apply to the bars left after the embargo, rounded down (test takes the rest).
    usable = num_bars - 2 * embargo
    assert sizes[0] == int(usable * 0.6) and sizes[1] == int(usable * 0.2)
    arr = s.as_array()
    assert arr.shape == (3, 2) and arr.dtype == np.int32
    assert (arr[:, 1] >= arr[:, 0]).all() and (arr[1:, 0] >= arr[:-1, 1]).all()


def test_make_splits_without_validation_has_one_embargo() -> None:
    s = make_splits(200, train_frac=0.7, validation_frac=0.0, embargo_bars=5)
    assert s.validation[0] == s.validation[1] == s.train[1]
    assert s.test[0] - s.train[1] == 5 and s.test[1] == 200


def test_make_splits_rejects_impossible_requests() -> None:
    with pytest.raises(ConfigError):
        make_splits(10, embargo_bars=5)
    with pytest.raises(ConfigError):
        make_splits(100, train_frac=0.8, validation_frac=0.2)
    with pytest.raises(ConfigError):
        make_splits(100, train_frac=1.2)


@pytest.mark.parametrize("anchored", [False, True])
@pytest.mark.parametrize("validation_bars", [0, 20])
def test_walk_forward_folds(anchored: bool, validation_bars: int) -> None:
    num_bars, train_bars, test_bars, embargo = 1000, 300, 100, 5
    folds = walk_forward(
        num_bars, train_bars, test_bars, validation_bars, embargo, anchored=anchored
    )
    # Count the folds independently: fold k's test ends at first_end + k * test_bars.
    first_end = (
        train_bars + embargo + (validation_bars + embargo if validation_bars else 0) + test_bars
    )
    assert len(folds) == (num_bars - first_end) // test_bars + 1
    for k, f in enumerate(folds):
        assert f.train[0] == (0 if anchored else k * test_bars)
        assert f.train[1] == train_bars + k * test_bars
        assert f.test[1] - f.test[0] == test_bars and f.test[1] <= num_bars
        if validation_bars:
            assert f.validation[0] - f.train[1] == embargo
            assert f.test[0] - f.validation[1] == embargo
        else:
            assert f.test[0] - f.train[1] == embargo
        # Within a fold no range overlaps another.
        r = _ranges(f)
        assert all(r[i][1] <= r[i + 1][0] for i in range(len(r) - 1))
    tests = [f.test for f in folds]
    assert all(a[1] <= b[0] for a, b in zip(tests, tests[1:]))


def test_walk_forward_step_and_refusals() -> None:
    folds = walk_forward(500, 100, 50, step_bars=80)
    assert [f.test[0] for f in folds] == [100 + 80 * k for k in range(len(folds))]
    with pytest.raises(ConfigError, match="overlap"):
        walk_forward(500, 100, 50, step_bars=20)
    with pytest.raises(ConfigError, match="at least"):
        walk_forward(100, 90, 20)


@pytest.mark.parametrize("anchored", [False, True])
@pytest.mark.parametrize(("num_bars", "folds", "validation_frac", "embargo"),
                         [(1200, 2, 0.15, 5), (5031, 4, 0.15, 0), (997, 3, 0.0, 3)])
def test_walk_forward_folds_by_count_tile_the_last_bars(
        anchored: bool, num_bars: int, folds: int, validation_frac: float, embargo: int) -> None:
    """`jaxtrade walkforward`'s layout: K folds cut in a run's proportions, test windows
    contiguous up to the last bar, the embargo exact, nothing before bar 0."""
    from jaxtrade.data.splits import walk_forward_folds

    cut = walk_forward_folds(num_bars, folds, 0.7, validation_frac, embargo, anchored)
    assert len(cut) == folds
    assert cut[-1].test[1] == num_bars
    test_bars = cut[0].test[1] - cut[0].test[0]
    for a, b in zip(cut, cut[1:]):
        assert a.test[1] == b.test[0]  # tiled: no gap, no overlap
        assert b.test[1] - b.test[0] == test_bars
    for f in cut:
        assert f.train[0] >= 0
        assert f.train[0] == 0 if anchored else f.train[1] - f.train[0] == (
            cut[0].train[1] - cut[0].train[0])
        if validation_frac:
            assert f.validation[0] - f.train[1] == embargo
            assert f.test[0] - f.validation[1] == embargo
        else:
            assert f.validation[0] == f.validation[1] == f.train[1]
            assert f.test[0] - f.train[1] == embargo
    # Fold 0 in a single run's proportions (rounded down).
    first = cut[0]
    train_bars = first.train[1] - first.train[0]
    if not anchored:
        assert train_bars == int(np.floor(test_bars * 0.7 / (0.3 - validation_frac)))
    with pytest.raises(ConfigError, match="too few"):
        walk_forward_folds(20, folds + 20, 0.7, validation_frac, embargo, anchored)
