"""The ensemble on a planted two-regime market, through `jaxtrade train agent=ensemble`.

The market (tests/planted_regimes.py, PLANTED_MARKET): calm stretches (0.7 % vol) where the
last bar's return continues (momentum 0.6) and volatile ones (1.4 % vol) where the return
follows the last bar's volume surprise (correlation 0.3), ~100 bars each, 4000 daily bars,
default costs. Members (ENSEMBLE_RUN): PPO observes only the 20-bar z-score of the log return
(`agent.ppo.network.observe=[zscore_log_return_20]`), CVaR-PPO only the 20-bar z-score of log
volume; linear policies, actions short / flat / long, no portfolio state, 131,072 env steps
each. So PPO can take the calm regime and trades noise in the volatile one, CVaR-PPO the
other way round, by construction; the router (fitted on training + validation regime
probabilities) and the vote (recent paper returns) can take both.

Measured with this exact run (BENCHMARKS.md, "Ensemble on a planted two-regime market"; test
Sharpe after costs, router / vote / winner-takes-all / ppo / cvar_ppo):
  seed 0   5.29 / 4.75 / 1.62 / 1.62 / 3.51      seed 4   4.14 / 3.49 / 1.43 / 1.43 / 1.50
  seed 1   4.37 / 3.63 / 1.20 / 1.20 / 2.77      seed 5   5.28 / 4.50 / 1.17 / 1.17 / 3.34
  seed 2   3.85 / 3.05 / 1.24 / 1.24 / 1.76      seed 6   4.28 / 3.66 / 1.41 / 1.41 / 1.93
  seed 3   4.08 / 3.37 / 1.24 / 1.24 / 1.87      seed 7   5.07 / 4.32 / 1.31 / 1.31 / 3.03
The settings (the market's 0.6 / 0.3 and the halved step budget) were chosen on seeds 0 and 1;
seeds 2-7 were run once after that, and SEEDS below are the first two of them. The full
claim held on all 8 of 8 seeds (router and vote ahead of winner-takes-all and of both members),
so it is asserted here; it also held on training seeds 8-15 and on three other draws of the
market (BENCHMARKS.md). Winner-takes-all picked PPO on every seed (the better validation
Sharpe), the weaker member on test; ECE 0.013-0.040 over seeds 0-7.

The trade probability is calibrated on the test split: expected calibration error <= 0.05
(ECE), and the report's reliability table shows it. The bundle that `jaxtrade export` writes
for the run carries each member's selection, and its runner trades the test split as the
backtest did.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jaxtrade.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from planted_regimes import ENSEMBLE_RUN, PLANTED_MARKET, planted_frame  # noqa: E402

SEEDS = (2, 3)  # training seeds asserted here, not the ones tuned on; BENCHMARKS.md has 0-7


_RUNS: dict[int, Path] = {}


def _trained(seed: int, factory: pytest.TempPathFactory) -> Path:
    """The run of training seed `seed`, trained once per test process."""
    if seed not in _RUNS:
        folder = factory.mktemp(f"planted{seed}")
        frame, _ = planted_frame(**PLANTED_MARKET)
        csv = folder / "bars.csv"
        frame.write_csv(csv)
        with contextlib.redirect_stdout(io.StringIO()):
            assert main([*ENSEMBLE_RUN, f"seed={seed}", f"data.path={csv}",
                         f"run_dir={folder / 'run'}"]) == 0
        _RUNS[seed] = folder / "run"
    return _RUNS[seed]


@pytest.fixture(scope="module", params=SEEDS, ids=lambda seed: f"seed{seed}")
def run_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _trained(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def section(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "report" / "metrics.json").read_text())["ensemble"]


def _test_sharpe(by_split: dict[str, Any]) -> float:
    value = by_split["test"]["sharpe"]
    return -np.inf if value is None else float(value)


def test_router_and_vote_beat_winner_takes_all_and_every_member_on_test(section) -> None:
    winner = _test_sharpe(section["rules"]["winner"])
    members = {name: _test_sharpe(m) for name, m in section["members"].items()}
    assert set(members) == {"ppo", "cvar_ppo"}
    rules = {rule: _test_sharpe(section["rules"][rule]) for rule in ("router", "vote")}
    for rule, sharpe in rules.items():
        assert sharpe > winner, (rule, rules, winner)
        assert sharpe > max(members.values()), (rule, rules, members)
    # Winner-takes-all is one member's policy: the member with the best validation Sharpe.
    picked = section["members"][section["winner"]]
    assert _test_sharpe(picked) == pytest.approx(winner, abs=1e-6)


def test_router_gives_each_member_one_regime(section) -> None:
    # The router table [HMM state, member] (one-hot rows, fitted on training + validation):
    # each member takes some of the HMM's states, as each observes one regime's signal only.
    table = np.asarray(section["router_table"])
    assert table.shape[1] == 2 and set(table.argmax(axis=1).tolist()) == {0, 1}, table


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


def test_the_bundle_keeps_each_members_selection_and_trades_like_the_backtest(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """`jaxtrade export` of the run: each member's manifest entry carries its observed
    columns (the run's feature order: zscore_log_return_20, zscore_log_volume_20), and the
    bundle's numpy runner gives the report's member and ensemble positions on the test
    split."""
    run_dir = _trained(SEEDS[0], tmp_path_factory)  # one seed's bundle is enough
    bundle = tmp_path / "bundle"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["export", f"run_dir={run_dir}", f"out={bundle}"]) == 0
    members = json.loads((bundle / "manifest.json").read_text())["network"]["members"]
    observed = {m["name"]: (m["config"]["observe"], m["config"]["observe_columns"])
                for m in members}
    assert observed == {"ppo": (["zscore_log_return_20"], [0]),
                        "cvar_ppo": (["zscore_log_volume_20"], [1])}
    with open(run_dir / "report" / "positions.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test"]
    proc = subprocess.run([sys.executable, str(bundle / "runner.py"), "--bars",
                           str(run_dir.parent / "bars.csv"), "--start", rows[0]["timestamp"],
                           "--no-monitor"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    decisions = [json.loads(line) for line in proc.stdout.splitlines()
                 if "target_position" in line]
    assert len(decisions) == len(rows)
    for name in ("ppo", "cvar_ppo"):
        printed = np.array([d["member_targets"][name] for d in decisions])
        np.testing.assert_allclose(printed, [float(r[f"position_{name}"]) for r in rows],
                                   atol=2e-5)
        assert len(set(printed.tolist())) >= 2  # the member changes its position
    # The last row's target is the policy's before the risk manager (no bar to fill on).
    np.testing.assert_allclose([d["target_position"] for d in decisions][:-1],
                               [float(r["target_position"]) for r in rows][:-1], atol=2e-5)
