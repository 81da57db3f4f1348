"""The ensemble on a planted two-regime market, through `jaxtrade train agent=ensemble`.

The market (tests/planted_regimes.py, PLANTED_MARKET): calm stretches (0.7 % vol) where the
last bar's return continues (momentum 0.4) and volatile ones (1.4 % vol) where it reverts
(0.4), ~100 bars each, 4000 daily bars, default costs. Members (ENSEMBLE_RUN): PPO and
CVaR-PPO with linear policies over two features (the 20-bar z-score of the one-bar log return,
20-bar realized volatility), actions short / flat / long, no portfolio state in the
observation, 262,144 env steps each. Such a policy cannot hold momentum in one regime and
reversion in the other (its long and short regions are convex): at best it takes one regime
in full and one side of the other. The router (fitted on training + validation regime
probabilities) and the vote can take both.

What is asserted here, for training seeds 0 and 1, is only what held on every seed measured:
the Bayesian vote beats winner-takes-all by test-split Sharpe after costs (8 of 8 seeds). The
issue's stronger claim (router and vote beat winner-takes-all and every single member) is
printed, not asserted, because it is not robust. Measured with this exact run (BENCHMARKS.md,
"Ensemble on a planted two-regime market"; test Sharpe, router / vote / winner-takes-all / ppo
/ cvar_ppo):
  seed 0   2.76 / 2.20 / 1.94 / 1.53 / 1.94      seed 4   1.43 / 2.33 / 1.73 / 1.73 / 1.66
  seed 1   3.24 / 2.60 / 2.06 / 2.06 / 2.07      seed 5   3.37 / 3.46 / 3.19 / 3.19 / 1.98
  seed 2   3.28 / 2.81 / 1.77 / 2.32 / 1.77      seed 6   3.30 / 3.23 / 3.13 / 3.13 / 1.80
  seed 3   3.51 / 3.25 / 1.85 / 3.31 / 1.85      seed 7   3.40 / 3.41 / 1.86 / 3.48 / 1.86
Both rules beat winner-takes-all and both members in the three seeds the settings were
chosen on (0-2), but not on every seed after that: over seeds 3-7 the router did in 3 of 5,
the vote in 3 of 5, both together in 2 of 5 (5, 6). Which member takes which regime still
varies with the seed (per-regime paper returns of each member, BENCHMARKS.md): where PPO takes
the volatile regime in full (seeds 3, 6, 7) the ensemble adds only CVaR-PPO's half of the calm
regime, a thin edge (lost by both rules in seed 7, by the vote in seed 3), and where both
members take part of the volatile regime (seed 4) the router's per-regime choice loses to
them. Over all eight seeds: the vote beat winner-takes-all in 8, the router in 7 (not seed 4);
each beat every member in 6 of 8. Asserting the stronger claim on seeds 0 and 1 would rest on
the seeds the settings were chosen on.

The trade probability is calibrated on the test split: expected calibration error <= 0.05
(0.014 and 0.020 for seeds 0 and 1, at most 0.042 over seeds 0-7), and the report's
reliability table shows it.
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
from planted_regimes import ENSEMBLE_RUN, PLANTED_MARKET, planted_frame  # noqa: E402

SEEDS = (0, 1)  # training seeds asserted here; BENCHMARKS.md has 0-7


@pytest.fixture(scope="module", params=SEEDS, ids=lambda seed: f"seed{seed}")
def run_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp(f"planted{request.param}")
    frame, _ = planted_frame(**PLANTED_MARKET)
    csv = folder / "bars.csv"
    frame.write_csv(csv)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main([*ENSEMBLE_RUN, f"seed={request.param}", f"data.path={csv}",
                     f"run_dir={folder / 'run'}"]) == 0
    return folder / "run"


@pytest.fixture(scope="module")
def section(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "report" / "metrics.json").read_text())["ensemble"]


def _test_sharpe(by_split: dict[str, Any]) -> float:
    value = by_split["test"]["sharpe"]
    return -np.inf if value is None else float(value)


def test_vote_beats_winner_takes_all_on_test_after_costs(section) -> None:
    winner = _test_sharpe(section["rules"]["winner"])
    members = {name: _test_sharpe(m) for name, m in section["members"].items()}
    assert set(members) == {"ppo", "cvar_ppo"}
    rules = {rule: _test_sharpe(section["rules"][rule]) for rule in ("router", "vote")}
    # The stronger claim, shown (with -s) and not asserted (module docstring).
    print("test Sharpe", rules, "winner", winner, "members", members)
    assert rules["vote"] > winner, (rules, winner, section["rules"])
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
