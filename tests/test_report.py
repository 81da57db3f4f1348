"""write_report: files exist, are non-empty, HTML references every plot, JSON/CSV shapes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import envs
from envs import baselines as env_baselines
from jaxtrade import market as market_lib
from jaxtrade.evaluate import report as report_lib
from jaxtrade.evaluate.pipeline import evaluate_policy

EMBEDDED = Path(__file__).resolve().parents[1] / "jaxtrade" / "data" / "embedded"


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    bars = pl.read_parquet(EMBEDDED / "sp500_daily.parquet").tail(900)
    close = bars["close"].to_numpy()
    log_ret = np.diff(np.log(close), prepend=np.log(close[0]))
    market = market_lib.from_arrays(
        close,
        open=bars["open"].to_numpy(),
        high=bars["high"].to_numpy(),
        low=bars["low"].to_numpy(),
        features=np.stack([log_ret / 0.01, np.sign(log_ret)], axis=-1),
        splits=np.array([[0, 500], [500, 700], [700, 900]]),
        timestamps=bars["timestamp"].dt.replace_time_zone(None).to_numpy(),
        symbols=("SPX",),
    )
    env, params = envs.make("trading", market, window_bars=8)
    policy = env_baselines.ma_crossover(env, fast_bars=10, slow_bars=40)
    run_dir = tmp_path_factory.mktemp("run")
    page = evaluate_policy(
        run_dir, env, params, policy, sweep_trials=12, sweep_sharpe_variance=0.002,
        num_paths=300, num_crashes=2,
        baseline_policies={"buy_and_hold": env_baselines.buy_and_hold(env)},
    )
    assert page == run_dir / "report" / "report.html"
    return run_dir / "report"


def test_report_files_exist_and_html_references_every_plot(report_dir: Path) -> None:
    html = (report_dir / "report.html").read_text()
    for name in report_lib.PLOTS:
        png = report_dir / name
        assert png.is_file() and png.stat().st_size > 5_000, name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"data-file='{name}'" in html and f"href='{name}'" in html
    # Self-contained: images are inline, nothing is fetched from the network.
    assert html.count("data:image/png;base64,") == len(report_lib.PLOTS)
    assert not re.search(r"(src|href)=['\"]https?:", html)
    assert "<th>train</th>" in html
    # 199-bar validation and test splits: under a year of daily bars, marked as such.
    for split in ("validation", "test"):
        assert f"<th>{split} <span class='warn'>(199 bars: short sample)</span></th>" in html
        assert f"PSR {split}: " in html and "(n=199 bars)" in html
    assert ("validation (199 bars, Sharpe standard error ~1.1), test (199 bars, Sharpe standard"
            " error ~1.1) rest on fewer than 252 bars") in html
    assert "Sweep trials</b> behind this configuration: 12" in html
    assert "commission 1 bps" in html


def test_metrics_json_shape(report_dir: Path) -> None:
    metrics = json.loads((report_dir / "metrics.json").read_text())
    for split in ("train", "validation", "test"):
        for key in ("sharpe", "sortino", "max_drawdown", "total_return", "psr"):
            assert key in metrics[split]
    assert set(metrics["baselines"]) == {"buy_and_hold", "logistic"}
    assert set(metrics["baselines"]["buy_and_hold"]) == {"train", "validation", "test"}
    assert metrics["sweep_trials"] == 12 and "commission" in metrics["costs"]
    assert metrics["min_reliable_bars"] == 252
    assert metrics["significance"]["psr_test_bars"] == metrics["splits"]["test"]["bars"] == 199
    assert 0.0 <= metrics["significance"]["dsr"] <= 1.0
    # More trials can only lower the deflated value below the undeflated PSR.
    assert metrics["significance"]["dsr_test"] <= metrics["significance"]["psr_test"]
    assert metrics["monte_carlo"]["num_paths"] == 300
    stress = metrics["monte_carlo"]["stress"]
    assert set(stress) == {"base", "costs_x2", "delayed_1_bar"}
    assert stress["base"]["sharpe"] == pytest.approx(metrics["test"]["sharpe"], rel=1e-6)
    assert stress["costs_x2"]["total_return"] < stress["base"]["total_return"]


def test_positions_csv_has_every_evaluated_bar(report_dir: Path) -> None:
    positions = pl.read_csv(report_dir / "positions.csv")
    assert positions.columns == ["timestamp", "symbol", "split", "target_position"]
    counts = dict(positions.group_by("split").len().iter_rows())
    # Eval mode walks each split from its first decidable bar to its last bar.
    assert counts == {"train": 500 - 7, "validation": 200, "test": 200}
    assert set(positions["target_position"].unique().to_list()) <= {-1.0, 0.0, 1.0}


def test_plots_read_for_thin_and_busy_policies() -> None:
    """Prices were labelled 2.5e+03; one +71% month set the colour scale of every other."""
    assert [report_lib.plain_number(v) for v in (2500.0, 104.0, 1.5, 0.8)] == [
        "2,500", "104", "1.5", "0.8"]
    grid = np.full((3, 12), 0.02)
    grid[0, 0] = 0.71
    assert report_lib.colour_limit(grid) < 0.1
    assert report_lib.exposure_window_bars(252, 2000) == 21
