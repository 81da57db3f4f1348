"""Several seeds are several results: IQM and its bootstrap interval against references,
and a `train.num_seeds=3` run whose console, report.html, metrics.json and W&B show every
seed beside the aggregate."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from test_cli import TINY
from test_logging import read_wandb_records, wandb_runs

from jaxtrade.cli import main
from jaxtrade.evaluate import seeds

NUM_SEEDS = 3


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


def test_seed_tables_of_a_sweep_group_points_and_show_the_interval_from_4_seeds() -> None:
    # Two learning rates x 5 seeds (points hyperparameter-major, as jaxtrade.runs lists them).
    points = [
        {"seed": s, "agent.hparams.learning_rate": lr} for lr in (1e-4, 3e-4) for s in range(5)
    ]
    per_point = [
        {
            split: {"sharpe": 0.1 * i, "total_return": 0.01 * i, "max_drawdown": -0.05}
            for split in ("validation", "test")
        }
        for i in range(10)
    ]
    summary = seeds.seed_summary(per_point, points, reported_point=7, update=12)
    assert summary["aggregated_points"] == [5, 6, 7, 8, 9] and summary["ci_note"] is None
    agg = summary["aggregate"]["test"]["sharpe"]
    assert agg["iqm"] == pytest.approx(0.7)  # 0.6, 0.7, 0.8 of 0.5 ... 0.9
    assert agg["iqm_ci"][0] <= 0.7 <= agg["iqm_ci"][1]
    lines = seeds.seed_tables(summary)
    assert max(len(line) for line in lines) <= 100
    assert lines.index("learning_rate=0.0001:") < lines.index("learning_rate=0.0003:")
    assert "over 5 seeds (learning_rate=0.0003: points 5, 6, 7, 8, 9):" in lines
    test_sharpe = next(line for line in lines if line.startswith("test Sharpe"))
    low, high = (seeds.number(v, "sharpe") for v in agg["iqm_ci"])
    assert test_sharpe.split() == ["test", "Sharpe", "0.70", "0.16", "0.70", f"[{low},", f"{high}]"]
    assert not any(line.startswith("note:") for line in lines)
    flat = seeds.group_summary(summary)
    assert flat["test/sharpe/iqm_ci_low"] == agg["iqm_ci"][0] and "note" not in flat


# ------------------------------------------------------------- a train.num_seeds=3 run


@pytest.fixture(scope="module")
def three_seeds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A smoke run of 3 seeds (W&B offline), its console output and report."""
    run_dir = tmp_path_factory.mktemp("seeds") / "run"
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(
            [
                "train",
                *TINY,
                f"train.num_seeds={NUM_SEEDS}",
                "logger=wandb",
                "logger.log_artifacts=false",
                f"run_dir={run_dir}",
                "seed=5",
            ]
        )
    assert code == 0
    return run_dir, buffer.getvalue()


def test_metrics_json_has_every_seed_and_the_aggregate(three_seeds: tuple[Path, str]) -> None:
    run_dir, _ = three_seeds
    metrics = json.loads((run_dir / "report" / "metrics.json").read_text())
    record = metrics["seeds"]
    reported = metrics["checkpoint"]["point"]
    assert record["reported_point"] == reported
    assert record["update"] == metrics["checkpoint"]["update"]
    assert record["num_seeds"] == NUM_SEEDS and record["aggregated_points"] == [0, 1, 2]
    assert [(r["point"], r["seed"]) for r in record["points"]] == [(0, 5), (1, 6), (2, 7)]
    assert metrics["agent"] == "ppo"
    for split in ("validation", "test"):
        # The reported point's row is the report's own backtest.
        row = record["points"][reported][split]
        for metric in seeds.SEED_METRICS:
            assert row[metric] == pytest.approx(metrics[split][metric], abs=1e-12)
        for metric in seeds.SEED_METRICS:
            values = [r[split][metric] for r in record["points"]]
            agg = record["aggregate"][split][metric]
            assert agg["n"] == NUM_SEEDS
            assert agg["mean"] == pytest.approx(np.mean(values))
            assert agg["std"] == pytest.approx(np.std(values, ddof=1))
            assert agg["iqm"] == pytest.approx(stats.trim_mean(values, 0.25))
            assert agg["iqm_ci"] is None  # 3 seeds: no interval, and a note says why
    assert "3 seeds" in record["ci_note"]
    # The seeds differ: three policies, not one copied three times.
    assert len({r["test"]["sharpe"] for r in record["points"]}) > 1


def test_console_shows_every_seed_and_the_aggregate(three_seeds: tuple[Path, str]) -> None:
    run_dir, stdout = three_seeds
    record = json.loads((run_dir / "report" / "metrics.json").read_text())["seeds"]
    assert re.search(
        rf"report of checkpoint \d+ \(best\), point {record['reported_point']} "
        rf"\(seed \d\), one of {NUM_SEEDS} points",
        stdout,
    )
    lines = stdout[stdout.index("every point at checkpoint") :].splitlines()
    rows = [line.split() for line in lines if re.match(r"^\s+\d\*?\s+\d+\s", line)]
    assert [row[1] for row in rows] == ["5", "6", "7"]
    assert sum(row[0].endswith("*") for row in rows) == 1
    shown = rows[record["reported_point"]]
    assert shown[2] == seeds.number(
        record["points"][record["reported_point"]]["validation"]["sharpe"], "sharpe"
    )
    assert f"over {NUM_SEEDS} seeds" in stdout
    for label in (
        "validation Sharpe",
        "validation return",
        "validation max DD",
        "test Sharpe",
        "test return",
        "test max DD",
    ):
        line = next(line for line in lines if line.startswith(label))
        assert len(line.split()) == len(label.split()) + 4  # mean, std, IQM, '-' for the CI
    assert "note: no IQM confidence interval from 3 seeds" in stdout
    assert (
        max(
            len(line)
            for line in lines[
                : lines.index(next(line for line in lines if line.startswith("report:")))
            ]
        )
        <= 100
    )


def test_report_html_shows_every_seed(three_seeds: tuple[Path, str]) -> None:
    run_dir, _ = three_seeds
    page = (run_dir / "report" / "report.html").read_text()
    assert f"aggregate over {NUM_SEEDS} seeds" in page
    assert page.count("(reported)</th>") == 1
    assert "IQM 95% CI" in page and "no IQM confidence interval from 3 seeds" in page
    assert "nan" not in re.sub(r"base64,[^']*'", "", page).lower()


def test_wandb_has_per_seed_summaries_and_one_group_summary_run(
    three_seeds: tuple[Path, str],
) -> None:
    run_dir, _ = three_seeds
    record = json.loads((run_dir / "report" / "metrics.json").read_text())["seeds"]
    runs = wandb_runs(run_dir)
    assert len(runs) == NUM_SEEDS + 1 and len({r["group"] for r in runs.values()}) == 1
    summaries = {}
    for path in run_dir.glob("wandb/*run-*/run-*.wandb"):
        summary: dict[str, object] = {}
        name = None
        for rec in read_wandb_records(path):
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                name = rec.run.display_name
            elif kind == "summary":
                for item in rec.summary.update:
                    summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        summaries[name] = summary
    group = next(iter(runs.values()))["group"]
    aggregate = summaries[f"{group}/summary"]
    assert aggregate["num_seeds"] == NUM_SEEDS
    assert aggregate["test/sharpe/iqm"] == pytest.approx(
        record["aggregate"]["test"]["sharpe"]["iqm"]
    )
    assert aggregate["validation/max_drawdown/std"] == pytest.approx(
        record["aggregate"]["validation"]["max_drawdown"]["std"]
    )
    assert "test/sharpe/iqm_ci_low" not in aggregate  # no interval from 3 seeds
    for row in record["points"]:
        own = next(s for n, s in summaries.items() if n.startswith(f"{group}/{row['point']} "))
        assert own["test/sharpe"] == pytest.approx(row["test"]["sharpe"])


def test_every_seed_is_what_backtest_gives_for_its_point(
    three_seeds: tuple[Path, str], capsys: pytest.CaptureFixture
) -> None:
    run_dir, _ = three_seeds
    metrics = json.loads((run_dir / "report" / "metrics.json").read_text())
    record = metrics["seeds"]
    other = next(r["point"] for r in record["points"] if r["point"] != record["reported_point"])
    assert (
        main(["backtest", f"run_dir={run_dir}", f"checkpoint={record['update']}", f"point={other}"])
        == 0
    )
    capsys.readouterr()
    again = json.loads((run_dir / "report" / "metrics.json").read_text())
    for split in ("validation", "test"):
        for metric in seeds.SEED_METRICS:
            assert again[split][metric] == pytest.approx(
                record["points"][other][split][metric], abs=1e-12
            )
    # The same seeds, the same aggregate, whichever point the report shows.
    assert again["seeds"]["aggregate"] == record["aggregate"]
    assert again["seeds"]["reported_point"] == other
