"""`jaxtrade train agent=ensemble` end to end: one small run shared by the tests below.

The report holds the per-bar combination (positions.csv: the rule, trade probability, each
member's weight and target position) and metrics.json's "ensemble" section: every rule and
every member per split, the fitted router and winner, the trade probability's reliability.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from jaxtrade.cli import main

RUN = ["train", "agent=ensemble", "experiment=smoke", "data.options.num_bars=400",
       "env.num_envs=4", "env.window_bars=16", "env.episode_bars=64",
       "train.total_steps=1024", "agent.updates_per_chunk=2",
       "train.checkpoint_every_updates=2", "agent.members=[ppo,sac]",
       "agent.ppo.rollout_len=32", "agent.ppo.network.hidden_sizes=[16,16]",
       "agent.sac.network.hidden_sizes=[16,16]", "agent.sac.learning_starts=256"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ensemble") / "run"
    assert main([*RUN, f"run_dir={folder}"]) == 0
    return folder


def test_positions_csv_carries_the_combination_per_bar(run_dir: Path) -> None:
    frame = pl.read_csv(run_dir / "report" / "positions.csv")
    for column in ("timestamp", "symbol", "split", "target_position", "rule",
                   "trade_probability", "weight_ppo", "weight_sac", "position_ppo",
                   "position_sac"):
        assert column in frame.columns, frame.columns
    assert set(frame["rule"]) == {"vote"}
    assert set(frame["split"]) == {"train", "validation", "test"}
    weights = frame["weight_ppo"].to_numpy() + frame["weight_sac"].to_numpy()
    np.testing.assert_allclose(weights, 1.0, atol=1e-5)
    p = frame["trade_probability"].to_numpy()
    assert np.all((p >= 0) & (p <= 1))
    assert set(np.round(frame["position_ppo"].to_numpy(), 6)) <= {-1.0, 0.0, 1.0}
    # The target is the weighted sum of the members' targets (no gate: threshold 0).
    combined = (frame["weight_ppo"] * frame["position_ppo"]
                + frame["weight_sac"] * frame["position_sac"]).to_numpy()
    last = frame.group_by("split").agg(pl.col("timestamp").max())
    final_rows = frame.join(last, on=["split", "timestamp"], how="semi")
    not_final = ~frame.select(pl.struct("split", "timestamp").is_in(
        final_rows.select(pl.struct("split", "timestamp")).to_series())).to_series().to_numpy()
    np.testing.assert_allclose(frame["target_position"].to_numpy()[not_final],
                               combined[not_final], atol=1e-5)


def test_report_compares_rules_members_and_shows_reliability(run_dir: Path) -> None:
    metrics = json.loads((run_dir / "report" / "metrics.json").read_text())
    section = metrics["ensemble"]
    assert set(section["rules"]) == {"equal", "vote", "router", "winner"}
    assert set(section["members"]) == {"ppo", "sac"}
    for by_split in [*section["rules"].values(), *section["members"].values()]:
        assert set(by_split) == {"train", "validation", "test"}
    assert section["winner"] in ("ppo", "sac")
    table = np.asarray(section["router_table"])
    assert table.shape == (3, 2) and np.allclose(table.sum(axis=1), 1.0)
    assert section["best_rule_on_test"] in section["rules"]
    rows = section["reliability_test"]
    assert sum(r["bars"] for r in rows) > 0
    assert all(0 <= r["predicted"] <= 1 and 0 <= r["realized"] <= 1 for r in rows)
    assert 0 <= section["ece_test"] <= 1
    gate = section["min_trade_probability_test"]
    assert set(gate) == {"0", "0.5", "0.55", "0.6"}
    assert gate["0"]["sharpe"] == pytest.approx(section["rules"]["vote"]["test"]["sharpe"])
    # A higher threshold only keeps the book flat on more bars.
    assert gate["0.6"]["bars_in_market"] <= gate["0"]["bars_in_market"]
    # The policy's own figures are the configured rule's (vote).
    assert metrics["test"]["sharpe"] == pytest.approx(section["rules"]["vote"]["test"]["sharpe"])
    assert "Ensemble" in (run_dir / "report" / "report.html").read_text()
