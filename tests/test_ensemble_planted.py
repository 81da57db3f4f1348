"""The ensemble on a planted two-regime market, through `jaxtrade train agent=ensemble`.

The market (tests/planted_regimes.py): calm stretches (0.5 % vol) where the last bar's return
continues (momentum 0.4) and volatile ones (2 % vol) where it reverts (0.4), ~100 bars each,
4000 daily bars, default costs. Members: PPO and CVaR-PPO with linear policies over two
features (the 20-bar z-score of the one-bar log return, 20-bar realized volatility), no
portfolio state in the observation: such a policy cannot hold momentum in one regime and
reversion in the other (its long region would not be convex), so each member can at best
take one regime; the router (fitted on training + validation regime probabilities) and the
vote can take both.

What holds, measured over training seeds 0, 1, 2 with this exact run (BENCHMARKS.md, ensemble
section; test-split Sharpe after costs, router / vote / winner-takes-all / ppo / cvar_ppo):
  seed 0   -1.18 / -1.30 / -1.81 / -1.81 / flat (CVaR-PPO learned to stay out)
  seed 1    3.06 /  2.72 /  1.20 /  1.20 / 3.11
  seed 2    3.27 /  2.70 /  2.46 /  2.46 / 1.31
so the router and the vote beat winner-takes-all in 3 of 3 seeds, but beat every single
member in 1 of 3 only (seed 1: CVaR-PPO alone took both regimes' edge about as well as the
router; seed 0: neither member learned the planted edge at this budget). The issue's stronger
claim (beat every member, robustly) is therefore NOT asserted here: which member takes which
regime varies with the seed at this training budget.

The trade probability is calibrated on the test split: expected calibration error <= 0.05
(0.039, 0.013, 0.025 for seeds 0, 1, 2; 0.045-0.11 before the fix of 2026-12-03, see
agents/common/combine.py), and the report's reliability table shows it.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jaxtrade.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from planted_regimes import planted_frame  # noqa: E402

SEED = 0
RUN = ["train", "agent=ensemble", "data=csv", "data.regimes=true", "logger=none",
       f"seed={SEED}", "env.num_envs=16", "train.total_steps=32768", "env.window_bars=1",
       "env.episode_bars=128", "env.include_portfolio=false", "agent.updates_per_chunk=4",
       "features.features=[{name:zscore,column:log_return,windows:[20]},"
       "{name:realized_vol,windows:[20]}]",
       "agent.members=[ppo,cvar_ppo]",
       "agent.ppo.network.hidden_sizes=[]", "agent.cvar_ppo.network.hidden_sizes=[]",
       "agent.ppo.rollout_len=32", "agent.cvar_ppo.rollout_len=32",
       "agent.ppo.hparams.learning_rate=0.01", "agent.cvar_ppo.hparams.learning_rate=0.01",
       "agent.ppo.hparams.gamma=0.5", "agent.cvar_ppo.hparams.gamma=0.5",
       "agent.cvar_ppo.hparams.lambda_init=0.5", "agent.cvar_ppo.hparams.cvar_threshold=0.02",
       "agent.cvar_ppo.hparams.lambda_lr=10"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("planted")
    frame, _ = planted_frame(seed=0, num_bars=4000, stay=0.99, momentum=0.4, reversion=0.4)
    csv = folder / "bars.csv"
    frame.write_csv(csv)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main([*RUN, f"data.path={csv}", f"run_dir={folder / 'run'}"]) == 0
    return folder / "run"


@pytest.fixture(scope="module")
def section(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "report" / "metrics.json").read_text())["ensemble"]


def _test_sharpe(by_split: dict[str, Any]) -> float:
    value = by_split["test"]["sharpe"]
    return -np.inf if value is None else float(value)


def test_router_and_vote_beat_winner_takes_all_on_test_after_costs(section) -> None:
    winner = _test_sharpe(section["rules"]["winner"])
    for rule in ("router", "vote"):
        assert _test_sharpe(section["rules"][rule]) > winner, (rule, section["rules"])
    # Winner-takes-all is one member's policy: the member with the best validation Sharpe.
    picked = section["members"][section["winner"]]
    assert _test_sharpe(picked) == pytest.approx(winner, abs=1e-6)


def test_trade_probability_is_calibrated_on_test(section, run_dir: Path) -> None:
    rows = section["reliability_test"]
    bars = sum(r["bars"] for r in rows)
    assert bars >= 200  # enough bars in the market for deciles to mean something
    ece = sum(r["bars"] / bars * abs(r["predicted"] - r["realized"]) for r in rows)
    assert ece == pytest.approx(section["ece_test"], abs=1e-9)
    assert section["ece_test"] <= 0.05, rows
    # Its prior mean was fitted on validation bars, one per rule.
    assert set(section["trade_prior_mean"]) == {"equal", "vote", "router", "winner"}
    html = (run_dir / "report" / "report.html").read_text()
    assert f"ECE {section['ece_test']:.2f}" in html and "reliability" in html
