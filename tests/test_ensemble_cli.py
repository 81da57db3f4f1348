"""`jaxtrade train agent=ensemble` end to end: one small run shared by the tests below.

The report holds the per-bar combination (positions.csv: the rule, trade probability, each
member's weight and target position) and metrics.json's "ensemble" section: every rule and
every member per split, the fitted router and winner, the trade probability's reliability.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

import jax
import numpy as np
import polars as pl
import pytest

from jaxtrade.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from live_helpers import tiny_frame, write_tiny_bars  # noqa: E402
from shared_runs import shared_run  # noqa: E402
from test_backtest_new_bars import _random_walk_after  # noqa: E402

RUN = ["train", "agent=ensemble", "data=csv", "data.regimes=true", "logger=none",
       "train.fast_compile=true",
       "env.num_envs=4", "env.window_bars=16", "env.episode_bars=64",
       "train.total_steps=1024", "agent.updates_per_chunk=2",
       "train.checkpoint_every_updates=2", "agent.members=[ppo,sac]",
       "agent.ppo.rollout_len=32", "agent.ppo.network.hidden_sizes=[16,16]",
       "agent.sac.network.hidden_sizes=[16,16]", "agent.sac.learning_starts=256"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pl.DataFrame]:
    """The small ensemble run, trained once per session (tests/shared_runs.py): this module
    and tests/test_export_ensemble.py read the same run."""
    run_dir, _ = shared_run(tmp_path_factory, "ensemble", RUN, write_tiny_bars)
    return run_dir, tiny_frame()


@pytest.fixture(scope="module")
def run_dir(trained: tuple[Path, pl.DataFrame]) -> Path:
    return trained[0]


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


def test_changing_every_bar_after_t_changes_nothing_at_or_before_t(trained, tmp_path) -> None:
    """Through `jaxtrade backtest data.path=`: weights, trade probabilities, member and
    ensemble positions at or before t are the same when every later bar is replaced."""
    run_dir, frame = trained
    positions = pl.read_csv(run_dir / "report" / "positions.csv")
    test = positions.filter(pl.col("split") == "test")
    t_stamp = test["timestamp"][10]
    stamps = frame["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.%6f%z").to_list()
    t = stamps.index(t_stamp)
    same, changed = tmp_path / "same.csv", tmp_path / "changed.csv"
    frame.write_csv(same)
    _random_walk_after(frame, t, seed=7).write_csv(changed)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["backtest", f"run_dir={run_dir}", f"data.path={same}",
                     f"out={tmp_path / 'a'}"]) == 0
        assert main(["backtest", f"run_dir={run_dir}", f"data.path={changed}",
                     f"out={tmp_path / 'b'}"]) == 0
    before = pl.read_csv(tmp_path / "a" / "report" / "positions.csv")
    after = pl.read_csv(tmp_path / "b" / "report" / "positions.csv")
    assert before.equals(positions)  # the run's own bars reproduce its report
    up_to_t = pl.col("timestamp") <= t_stamp
    assert before.filter(up_to_t).height > 0
    assert before.filter(up_to_t).equals(after.filter(up_to_t))
    assert not before.filter(~up_to_t)["trade_probability"].equals(
        after.filter(~up_to_t)["trade_probability"])


def test_an_interrupted_ensemble_run_resumes_exactly(tmp_path: Path) -> None:
    """Stopped after 2 of 4 ensemble updates and resumed, the run ends with the same members
    (parameters, optimizer and replay states, RNG) and the same logged metrics as a run that
    was never interrupted (replay members included: SAC's buffer is part of the state)."""
    from test_cli_resume import final_state

    from experiments import common
    from experiments.train import train
    from jaxtrade.logging import read_metrics

    run = ["agent=ensemble", "experiment=smoke", "data.options.num_bars=300",
           "train.report=false", "env.num_envs=2", "env.window_bars=8", "env.episode_bars=32",
           "train.total_steps=256", "agent.updates_per_chunk=1",
           "train.checkpoint_every_updates=1", "train.eval_every_updates=2",
           "agent.members=[ppo,sac]", "agent.ppo.rollout_len=16",
           "agent.ppo.network.hidden_sizes=[8]", "agent.sac.network.hidden_sizes=[8]",
           "agent.sac.learning_starts=32", "agent.sac.batch_size=8"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    quiet = {"print_fn": lambda _: None}
    done = train(common.compose([*run, f"run_dir={straight}"]), **quiet)
    assert done.loop.updates_done == 8 and done.loop.finished
    first = train(common.compose([*run, f"run_dir={split}", "train.stop_after_updates=4"]),
                  **quiet)
    assert first.loop.updates_done == 4 and not first.loop.finished
    second = train(common.compose([f"run_dir={split}", "resume=true"]), **quiet)
    assert second.loop.updates_done == 8 and second.loop.finished
    a, meta_a = final_state(straight)
    b, meta_b = final_state(split)
    assert meta_a["update"] == meta_b["update"] == 8
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b) > 0
    for x, y in zip(leaves_a, leaves_b, strict=True):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)
    rows_a, rows_b = read_metrics(straight), read_metrics(split)
    assert [r["update"] for r in rows_a] == [r["update"] for r in rows_b]
    for row_a, row_b in zip(rows_a, rows_b, strict=True):
        for key, value in row_a.items():
            if key.startswith("ensemble/") and isinstance(value, float):
                np.testing.assert_allclose(row_b[key], value, rtol=1e-5, atol=1e-7,
                                           err_msg=key)
