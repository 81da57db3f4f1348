"""MCTS through `jaxtrade train` on the planted AR(1) market: the issue's three proofs on one
trained run (its report's mcts section, jaxtrade/evaluate/mcts.py).

The market: `write_ar1_bars` of tests/test_offpolicy_trading.py (momentum r_t = 0.3 r_{t-1}
+ noise plus a small drift, read back through `data=csv`; the feature is the last log
return), 22,010 bars instead of 3,000 (the first 3,000 are that market's), split 45 / 5 / 50:
train 9,900, validation 1,100, test 11,000 bars. The test split is long enough for the
calibration table to be read at 0.05 (MIN_CALIBRATION_BARS: >= 1,000 bars a decile, sampling
error <= 0.016; at 45 bars a decile, the 3,000-bar market's test, the error alone was
~0.075). The train split is long because the model learns its base rate there: with the
3,000-bar market's 2,093 training bars, their up frequency is 0.489 against 0.515 on a
10,459-bar test, a shift the model inherits; on these 9,900 it is 0.507 against 0.507.

The run is trained with `agent.adversarial=true` and `env.trading.max_leverage=0.5` (gross
exposure at most half the equity: the env's leverage cap, which the planner's exact
accounting applies too). At the default 1.0 the drawdown over a 10,459-bar test is set by the
position size, not by the noise: the adversarially trained agent's noisy-test drawdown was
22.1% at leverage 1.0 (13,010 bars) and its clean one 19.8% (BENCHMARKS.md, MCTS section).

Seed 0 of this setting. How robust each assertion is, over seeds 0-3 of this setting with the
averaged evaluation params (`agent.hparams.param_average_decay=0.99`, BENCHMARKS.md, MCTS
section; 2026-12-03 and, for the calibration map, 2026-12-04 on the 2-core VM):

  1. test Sharpe after the env's default costs > 2 and > buy-and-hold + 1: searched 3.60-3.75
     against buy-and-hold 1.15 on all four. The searched policy beats its own policy head
     acting alone on the same checkpoint and bars by SEARCH_MARGIN = 0.5: by 1.0 (seed 0:
     3.66 vs 2.65) to 3.75 (seed 3: the head never trades, no Sharpe, counted 0).
  2. the next-bar model's up-probability per decile is within 0.05 of the realized frequency,
     through the Platt map fitted on the 1,099 validation decisions only (slope and intercept
     on the log-odds; jaxtrade/evaluate/mcts.py says why): seeds 0-3 0.029, 0.034, 0.037,
     0.032 (the raw model: 0.042, 0.035, 0.055, 0.030). Seed 0's margin is 0.021 (the raw
     model's was 0.008); the worst seed's 0.013. The raw table is asserted to be reported
     beside it, not to be within 0.05.
  3. seed 002's bar: with 20% noise injection, test Sharpe > 1 and max drawdown < 20%: Sharpe
     3.55-3.70, drawdown 7.9-10.6% on all four.

16 envs x 8 simulations per decision, 8,000 env steps; the report backtests the 22,010 bars
with search plus the test split twice more (policy head, noise): 38-41 s of user CPU time,
83-144 s wall for the file on the 2-core VM while other jobs loaded it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from shared_runs import shared_run
from test_offpolicy_trading import write_ar1_bars

MARKET_BARS = 22_010
# usable = 22,010 - 2 x 5 embargo bars = 22,000: 9,900 train, 1,100 validation, 11,000 test
SPLIT = ["data.train_frac=0.45", "data.validation_frac=0.05"]
# the search's test Sharpe above its own policy head's (4 seeds: margins 1.0 to 3.75)
SEARCH_MARGIN = 0.5


RUN = ["train", "agent=mcts", "data=csv", *SPLIT,
       "features.features=[{name: log_returns, lags: [1]}]", "env.window_bars=4",
       "env.num_envs=16", "train.total_steps=8000", "agent.num_simulations=8",
       "agent.learning_starts=1000", "agent.hparams.gamma=0.5", "env.reward.scale=100",
       "agent.adversarial=true", "env.trading.max_leverage=0.5", "seed=0", "logger=none"]


def write_bars(folder: Path) -> list[str]:
    return [f"data.path={write_ar1_bars(folder / 'ar1.csv', num_bars=MARKET_BARS)}"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """The run and its report's metrics, trained through tests/shared_runs.py like the
    suite's other CLI runs (once per session, read-only for its three proofs)."""
    run_dir, _ = shared_run(tmp_path_factory, "mcts-ar1", RUN, write_bars)
    metrics = json.loads((run_dir / "report" / "metrics.json").read_text())
    return metrics, run_dir


@pytest.mark.slow
def test_mcts_harvests_planted_momentum_out_of_sample_and_beats_its_policy_head(
        trained: tuple[dict[str, Any], Path]) -> None:
    metrics, _ = trained
    searched = metrics["test"]["sharpe"]
    buy_hold = metrics["baselines"]["buy_and_hold"]["test"]["sharpe"]
    mcts = metrics["mcts"]
    head = mcts["policy_head"]["sharpe"]
    assert mcts["searched"]["sharpe"] == pytest.approx(searched)  # the report's own backtest
    assert metrics["test"]["num_trades"] >= 10
    assert searched > 2.0, (searched, head, buy_hold)
    assert searched > buy_hold + 1.0, (searched, buy_hold)
    # A head that never trades has no Sharpe (None in metrics.json): zero return, counted 0.
    head_sharpe = 0.0 if head is None else head
    if head is None:
        assert mcts["policy_head"]["num_trades"] == 0 and mcts["policy_head"]["total_return"] == 0
    assert searched > head_sharpe + SEARCH_MARGIN, (searched, head)


@pytest.mark.slow
def test_next_bar_model_is_calibrated_on_the_test_split(
        trained: tuple[dict[str, Any], Path]) -> None:
    metrics, run_dir = trained
    calibration = metrics["mcts"]["calibration"]
    rows = calibration["rows"]
    assert len(rows) == 10 and calibration["bars"] >= 10_000
    # every decile is long enough to be judged, so the maximum is over all ten
    assert min(row["bars"] for row in rows) >= calibration["min_bars"] == 1000
    deviations = [abs(row["predicted"] - row["realized"]) for row in rows]
    assert calibration["max_deviation"] == pytest.approx(max(deviations))
    # the Platt map is fitted on the 1,100-bar validation split only, then applied to test
    fitted = calibration["map"]
    assert fitted["kind"] == "platt" and fitted["split"] == "validation"
    assert 1000 <= fitted["bars"] <= 1100
    assert max(deviations) <= 0.05, rows
    # the raw model's table stays in the report, over the same ten deciles
    raw = calibration["raw"]
    assert [row["bars"] for row in raw["rows"]] == [row["bars"] for row in rows]
    assert raw["max_deviation"] == pytest.approx(
        max(abs(row["predicted"] - row["realized"]) for row in raw["rows"]))
    # the model ranks: predictions spread, and the realized frequency follows them
    assert rows[-1]["predicted"] - rows[0]["predicted"] > 0.2, rows
    assert rows[-1]["realized"] - rows[0]["realized"] > 0.2, rows
    page = (run_dir / "report" / "report.html").read_text(encoding="utf-8")
    assert "Next-bar model calibration" in page and "noise injection" in page


@pytest.mark.slow
def test_adversarially_trained_agent_meets_seed_002_robustness_bar(
        trained: tuple[dict[str, Any], Path]) -> None:
    mcts = trained[0]["mcts"]
    assert mcts["adversarial_training"] is True
    assert mcts["noise"]["prob"] == 0.2
    noisy = mcts["noise"]["searched"]
    assert noisy["sharpe"] > 1.0, mcts
    assert noisy["max_drawdown"] > -0.20, mcts
