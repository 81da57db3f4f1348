"""Several seeds are several results: every seed's figures and their aggregate.

A run with `train.num_seeds=N` trains N policies that differ only in their seed; the best of
them by validation Sharpe is one draw from a lucky tail, not the configuration's result.
Following Agarwal et al. (2021), "Deep RL at the edge of the statistical precipice" (the
rliable library), the aggregate over seeds is reported as the mean, the standard deviation
and the interquartile mean (IQM: the mean of the middle half of the seeds, robust to one
outlier seed and less noisy than the median) with a percentile bootstrap confidence
interval. With one market there is one task, and rliable's stratified bootstrap (runs
resampled within each task) is a plain bootstrap over seeds; `bootstrap_ci` takes a
[runs, tasks] matrix for the stratified case too.

Pure numpy, deterministic for a given `seed`. With fewer than MIN_SEEDS_FOR_CI seeds no
interval is given: the IQM of fewer than 4 values trims nothing (it is their mean), and a
bootstrap over 3 values has 10 distinct resamples, which makes an interval of little
meaning.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

SEED_SPLITS = ("validation", "test")
SEED_METRICS = ("sharpe", "total_return", "max_drawdown")
MIN_SEEDS_FOR_CI = 4
CONFIDENCE = 0.95
NUM_RESAMPLES = 10_000


def interquartile_mean(values: Any, axis: int | None = None) -> Any:
    """The 25% trimmed mean: scipy.stats.trim_mean(values, 0.25), rliable's IQM.

    int(0.25 * n) values are cut at each end (none for n < 4; for n = 6 one at each end).
    `axis=None` pools every entry (a [runs, tasks] matrix is one sample, as in rliable);
    an axis gives one IQM per slice along it.
    """
    x = np.asarray(values, np.float64)
    if axis is None:
        x, axis = x.ravel(), 0
    x = np.sort(np.moveaxis(x, axis, -1), axis=-1)
    n = x.shape[-1]
    if n == 0:
        raise ValueError("the interquartile mean of no values is undefined")
    cut = int(0.25 * n)
    middle = x[..., cut : n - cut].mean(axis=-1)
    return float(middle) if middle.ndim == 0 else middle


def bootstrap_ci(
    scores: Any,
    statistic: Callable[..., Any] = interquartile_mean,
    *,
    confidence: float = CONFIDENCE,
    num_resamples: int = NUM_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of `statistic(scores)`.

    `scores`: [runs] or [runs, tasks]; each resample draws runs with replacement within each
    task (rliable's stratified bootstrap), and `statistic(resamples, axis=1)` maps the
    [num_resamples, runs * tasks] resamples to one value each. The interval is the central
    `confidence` range of those values.
    """
    x = np.asarray(scores, np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"scores must be [runs] or [runs, tasks] with runs >= 1, got {x.shape}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    runs, tasks = x.shape
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, runs, size=(num_resamples, runs, tasks))
    resampled = x[rows, np.arange(tasks)].reshape(num_resamples, runs * tasks)
    values = np.asarray(statistic(resampled, axis=1), np.float64)
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def aggregate(
    values: Sequence[float | None],
    *,
    confidence: float = CONFIDENCE,
    num_resamples: int = NUM_RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """{"n", "mean", "std", "iqm", "iqm_ci", "confidence"} of one metric over seeds.

    Seeds without a finite value are left out (`n` counts the rest); `std` (ddof=1) is None
    for one value, `iqm_ci` ([low, high]) None for fewer than MIN_SEEDS_FOR_CI values, and
    everything None for none.
    """
    finite = np.asarray(
        [float(v) for v in values if v is not None and math.isfinite(v)], np.float64
    )
    n = int(finite.size)
    out: dict[str, Any] = {
        "n": n,
        "mean": None,
        "std": None,
        "iqm": None,
        "iqm_ci": None,
        "confidence": confidence,
    }
    if n == 0:
        return out
    out["mean"] = float(finite.mean())
    out["std"] = float(finite.std(ddof=1)) if n > 1 else None
    out["iqm"] = interquartile_mean(finite)
    if n >= MIN_SEEDS_FOR_CI:
        out["iqm_ci"] = list(
            bootstrap_ci(finite, confidence=confidence, num_resamples=num_resamples, seed=seed)
        )
    return out


def ci_note(num_seeds: int) -> str | None:
    """Why the IQM has no confidence interval with `num_seeds` seeds (None when it has)."""
    if num_seeds >= MIN_SEEDS_FOR_CI:
        return None
    return (
        f"no IQM confidence interval from {num_seeds} seed{'s' * (num_seeds != 1)}: "
        f"the IQM of fewer than {MIN_SEEDS_FOR_CI} trims nothing (it is the mean) and a "
        f"bootstrap over so few seeds is not a meaningful interval; train.num_seeds>="
        f"{MIN_SEEDS_FOR_CI} gives one (10 or more for a tight one)"
    )


def seed_summary(
    per_point: Sequence[Mapping[str, Mapping[str, float | None]]],
    points: Sequence[Mapping[str, Any]],
    reported_point: int,
    update: int,
) -> dict[str, Any]:
    """metrics.json's "seeds": every point's figures and the aggregate over the seeds of the
    reported point's configuration.

    `per_point[i][split][metric]`: point i's backtest at the checkpoint of `update`.
    `points[i]`: its seed and sweep hyperparameters (jaxtrade.runs.point_list); the
    aggregate pools the points whose hyperparameters are those of `reported_point`, which
    in a plain `train.num_seeds=N` run is every point.
    """

    def configuration(point: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in point.items() if k != "seed"}

    chosen = configuration(points[reported_point])
    pooled = [i for i, p in enumerate(points) if configuration(p) == chosen]
    rows = [
        {
            "point": i,
            **dict(points[i]),
            **{
                split: {m: _finite(by_split.get(split, {}).get(m)) for m in SEED_METRICS}
                for split in SEED_SPLITS
                if split in by_split
            },
        }
        for i, by_split in enumerate(per_point)
    ]
    splits = [s for s in SEED_SPLITS if all(s in per_point[i] for i in pooled)]
    return {
        "update": int(update),
        "reported_point": int(reported_point),
        "num_seeds": len(pooled),
        "aggregated_points": pooled,
        "points": rows,
        "aggregate": {
            split: {m: aggregate([rows[i][split][m] for i in pooled]) for m in SEED_METRICS}
            for split in splits
        },
        "ci_note": ci_note(len(pooled)),
    }


def point_summary(row: Mapping[str, Any]) -> dict[str, float | None]:
    """One point's figures as flat W&B summary keys: {"test/sharpe": ..., ...}."""
    return {
        f"{split}/{metric}": row[split][metric]
        for split in SEED_SPLITS
        if split in row
        for metric in SEED_METRICS
    }


def group_summary(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The aggregate as flat W&B summary keys: {"test/sharpe/iqm": ..., "num_seeds": 3, ...};
    the interval as .../iqm_ci_low and .../iqm_ci_high (absent below MIN_SEEDS_FOR_CI)."""
    out: dict[str, Any] = {
        "num_seeds": summary["num_seeds"],
        "update": summary["update"],
        "reported_point": summary["reported_point"],
    }
    for split, by_metric in summary["aggregate"].items():
        for metric, agg in by_metric.items():
            key = f"{split}/{metric}"
            out.update({f"{key}/{stat}": agg[stat] for stat in ("mean", "std", "iqm")})
            if agg["iqm_ci"]:
                out[f"{key}/iqm_ci_low"], out[f"{key}/iqm_ci_high"] = agg["iqm_ci"]
    if summary.get("ci_note"):
        out["note"] = summary["ci_note"]
    return out


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


# ------------------------------------------------------------------------------ text

LABELS = {"sharpe": "Sharpe", "total_return": "return", "max_drawdown": "max DD"}
SHORT_SPLITS = {"validation": "val", "test": "test"}
PERCENT = {"total_return", "max_drawdown", "annual_return"}


def number(value: Any, metric: str) -> str:
    """A metric for reading: returns and drawdowns in percent, '-' when absent."""
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "-"
    return f"{100 * value:.1f}%" if metric in PERCENT else f"{value:.2f}"


def interval(ci: Sequence[float] | None, metric: str) -> str:
    return "-" if not ci else f"[{number(ci[0], metric)}, {number(ci[1], metric)}]"


def configuration_label(row: Mapping[str, Any]) -> str:
    """A point's sweep hyperparameters, e.g. `learning_rate=0.0001, ent_coef=0.01`."""
    skip = {"point", "seed", *SEED_SPLITS}
    return ", ".join(
        f"{k.rsplit('.', 1)[-1]}={v:g}" if isinstance(v, float) else f"{k.rsplit('.', 1)[-1]}={v}"
        for k, v in row.items()
        if k not in skip
    )


def seed_tables(summary: Mapping[str, Any], max_rows: int = 20) -> list[str]:
    """Console lines (under 100 columns): one row per point, then the aggregate."""
    rows = summary["points"]
    splits = list(summary["aggregate"])
    columns = [(s, m) for s in splits for m in SEED_METRICS]
    heads = [f"{SHORT_SPLITS[s]} {LABELS[m]}" for s, m in columns]
    widths = [max(len(h), 8) for h in heads]
    reported = summary["reported_point"]
    lines = [
        f"every point at checkpoint {summary['update']} (* = the one reported above):",
        f"{'point':>6} {'seed':>6}  " + " ".join(h.rjust(w) for h, w in zip(heads, widths)),
    ]
    shown_configuration = ""
    for row in rows[:max_rows]:
        # A sweep's points: each run of seeds under the hyperparameters they share.
        if (label := configuration_label(row)) and label != shown_configuration:
            lines.append(textwrap.shorten(f"  {label}:", 99, placeholder=" ..."))
            shown_configuration = label
        mark = "*" if row["point"] == reported else " "
        cells = " ".join(
            number((row.get(s) or {}).get(m), m).rjust(w) for (s, m), w in zip(columns, widths)
        )
        lines.append(f"{row['point']:>5}{mark} {row.get('seed', '-'):>6}  {cells}")
    if len(rows) > max_rows:
        lines.append(f"... {len(rows) - max_rows} more points in report/metrics.json")
    n = summary["num_seeds"]
    pooled = summary["aggregated_points"]
    which = (
        "every point"
        if len(pooled) == len(rows)
        else f"{configuration_label(rows[reported])}: points {', '.join(map(str, pooled))}"
    )
    lines.append(f"over {n} seed{'s' * (n != 1)} ({which}):")
    lines.append(f"{'':20}{'mean':>10}{'std':>10}{'IQM':>10}  IQM {100 * CONFIDENCE:g}% CI")
    for split in splits:
        for metric in SEED_METRICS:
            agg = summary["aggregate"][split][metric]
            lines.append(
                f"{split + ' ' + LABELS[metric]:20}{number(agg['mean'], metric):>10}"
                f"{number(agg['std'], metric):>10}{number(agg['iqm'], metric):>10}  "
                f"{interval(agg['iqm_ci'], metric):<22}".rstrip()
            )
    if summary.get("ci_note"):
        lines += textwrap.wrap(f"note: {summary['ci_note']}", 99, subsequent_indent="  ")
    return lines
