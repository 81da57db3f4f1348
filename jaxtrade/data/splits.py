"""Train / validation / test bar ranges, single split or walk-forward folds.

Every range is `[start, end)` in bar indices of the frame's timeline. Between two
consecutive ranges `embargo_bars` bars are dropped: features computed on a rolling window
that straddles a boundary, or a position opened at the last train bar and filled at the next
bar, would otherwise leak information from one split into the next.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jaxtrade.defaults import TRAIN_FRAC, VALIDATION_FRAC
from jaxtrade.errors import ConfigError

SPLIT_NAMES = ("train", "validation", "test")
# The default chronological split, for `make_splits`, `jaxtrade.market.build` and the CLI
# (`data.train_frac`, `data.validation_frac`): 70 / 15 / 15 (jaxtrade/defaults.py).


@dataclass(frozen=True)
class Splits:
    """`[start, end)` bar indices of the three splits; an empty validation has start == end."""

    train: tuple[int, int]
    validation: tuple[int, int]
    test: tuple[int, int]

    def as_array(self) -> np.ndarray:
        """int32 array [3, 2] in the order train, validation, test (MarketData.splits)."""
        return np.asarray([self.train, self.validation, self.test], dtype=np.int32)

    def bounds(self, name: str) -> tuple[int, int]:
        return {"train": self.train, "validation": self.validation, "test": self.test}[name]


def _check_count(name: str, value: int, minimum: int) -> int:
    if int(value) != value or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _place(
    train: tuple[int, int], validation_bars: int, test_bars: int, embargo_bars: int
) -> Splits:
    """Lay validation then test after `train`, each preceded by the embargo."""
    train_end = train[1]
    if validation_bars > 0:
        val_start = train_end + embargo_bars
        validation = (val_start, val_start + validation_bars)
        test_start = validation[1] + embargo_bars
    else:
        # No validation split: an empty range at the train boundary, one embargo before test.
        validation = (train_end, train_end)
        test_start = train_end + embargo_bars
    return Splits(train=train, validation=validation, test=(test_start, test_start + test_bars))


def make_splits(
    num_bars: int,
    train_frac: float = TRAIN_FRAC,
    validation_frac: float = VALIDATION_FRAC,
    embargo_bars: int = 0,
) -> Splits:
    """Chronological train / validation / test split of `num_bars` bars.

    The embargo bars are removed first; the remaining bars are shared out by the fractions
    (train and validation rounded down, test takes the rest), so the last split always ends
    at `num_bars`. `validation_frac=0` gives an empty validation range.
    """
    num_bars = _check_count("num_bars", num_bars, 1)
    embargo_bars = _check_count("embargo_bars", embargo_bars, 0)
    if not (0.0 < train_frac < 1.0) or not (0.0 <= validation_frac < 1.0):
        raise ConfigError(
            f"train_frac must be in (0, 1) and validation_frac in [0, 1), "
            f"got {train_frac} and {validation_frac}"
        )
    if train_frac + validation_frac >= 1.0:
        raise ConfigError(
            "train_frac + validation_frac must leave bars for test, "
            f"got {train_frac + validation_frac}"
        )
    num_embargoes = 2 if validation_frac > 0 else 1
    usable = num_bars - num_embargoes * embargo_bars
    train_bars = int(np.floor(usable * train_frac))
    validation_bars = int(np.floor(usable * validation_frac))
    test_bars = usable - train_bars - validation_bars
    if train_bars < 1 or test_bars < 1 or (validation_frac > 0 and validation_bars < 1):
        raise ConfigError(
            f"{num_bars} bars are too few for train_frac={train_frac}, "
            f"validation_frac={validation_frac} and embargo_bars={embargo_bars}"
        )
    return _place((0, train_bars), validation_bars, test_bars, embargo_bars)


def walk_forward(
    num_bars: int,
    train_bars: int,
    test_bars: int,
    validation_bars: int = 0,
    embargo_bars: int = 0,
    step_bars: int | None = None,
    anchored: bool = False,
) -> list[Splits]:
    """Walk-forward folds, oldest first.

    Fold k's test window starts `k * step_bars` bars after fold 0's (`step_bars` defaults to
    `test_bars`, so test windows tile the timeline without overlapping; a smaller step is
    refused because overlapping test windows would count the same bars twice out of sample).
    Rolling (`anchored=False`): the train window has a fixed length `train_bars` and slides
    with the test window. Anchored: train always starts at bar 0 and grows. Only folds whose
    test window fits completely inside `num_bars` are returned.
    """
    num_bars = _check_count("num_bars", num_bars, 1)
    train_bars = _check_count("train_bars", train_bars, 1)
    test_bars = _check_count("test_bars", test_bars, 1)
    validation_bars = _check_count("validation_bars", validation_bars, 0)
    embargo_bars = _check_count("embargo_bars", embargo_bars, 0)
    step = test_bars if step_bars is None else _check_count("step_bars", step_bars, 1)
    if step < test_bars:
        raise ConfigError(
            f"step_bars ({step}) must be >= test_bars ({test_bars}) so test windows never overlap"
        )
    folds: list[Splits] = []
    k = 0
    while True:
        offset = k * step
        train = (0 if anchored else offset, offset + train_bars)
        fold = _place(train, validation_bars, test_bars, embargo_bars)
        if fold.test[1] > num_bars:
            break
        folds.append(fold)
        k += 1
    if not folds:
        needed = _place((0, train_bars), validation_bars, test_bars, embargo_bars).test[1]
        raise ConfigError(f"walk-forward needs at least {needed} bars for one fold, got {num_bars}")
    return folds


def walk_forward_folds(
    num_bars: int,
    num_folds: int,
    train_frac: float = TRAIN_FRAC,
    validation_frac: float = VALIDATION_FRAC,
    embargo_bars: int = 0,
    anchored: bool = False,
) -> list[Splits]:
    """`num_folds` walk-forward folds whose test windows tile the last bars, oldest first.

    Each fold is cut like a single run's split (`make_splits`): train, validation and test in
    the proportions `train_frac` : `validation_frac` : the rest, with `embargo_bars` between
    them; each later fold moves on by one test window (rolling) or keeps train starting at
    bar 0 and grows it (anchored). The test windows are as long as the bars allow, and the
    bars left over by rounding go to the oldest end: dropped (rolling) or added to every
    training window (anchored), so the last test window ends at the last bar.
    """
    num_bars = _check_count("num_bars", num_bars, 1)
    num_folds = _check_count("num_folds", num_folds, 1)
    embargo_bars = _check_count("embargo_bars", embargo_bars, 0)
    test_frac = 1.0 - train_frac - validation_frac
    if not (0.0 < train_frac < 1.0) or not (0.0 <= validation_frac < 1.0) or test_frac <= 0:
        raise ConfigError(
            f"train_frac must be in (0, 1), validation_frac in [0, 1) and their sum < 1, "
            f"got {train_frac} and {validation_frac}"
        )
    embargoes = (2 if validation_frac > 0 else 1) * embargo_bars
    # Fold 0 spans train + validation + test (+ embargoes); every later fold adds one test.
    # Rounded down; the 1e-9 keeps e.g. 186 x 0.7 / (1 - 0.7 - 0) = 433.99999... at 434.
    test_bars = int(np.floor((num_bars - embargoes) / (num_folds - 1 + 1.0 / test_frac) + 1e-9))
    train_bars = int(np.floor(test_bars * train_frac / test_frac + 1e-9))
    validation_bars = int(np.floor(test_bars * validation_frac / test_frac + 1e-9))
    if test_bars < 1 or train_bars < 1 or (validation_frac > 0 and validation_bars < 1):
        raise ConfigError(f"{num_bars} bars are too few for {num_folds} walk-forward folds")
    used = train_bars + validation_bars + embargoes + num_folds * test_bars
    folds = walk_forward(used, train_bars, test_bars, validation_bars, embargo_bars,
                         anchored=anchored)[:num_folds]
    spare = num_bars - used

    def shift(bounds: tuple[int, int], start_at_zero: bool = False) -> tuple[int, int]:
        return (0 if start_at_zero else bounds[0] + spare, bounds[1] + spare)

    return [Splits(train=shift(f.train, anchored), validation=shift(f.validation),
                   test=shift(f.test)) for f in folds]
