"""`jaxtrade walkforward agent=ensemble` end to end on the embedded S&P 500 bars.

One small two-fold walk-forward of a two-member ensemble is shared by the tests below: the
folds' test windows tile the period without overlapping, the stitched curve compounds the
folds' returns, every rule, member and baseline has a row per fold, and fold 0 is causal
(bars after its training + validation window change neither its parameters, its fitted
combination nor its first test decision).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import sys
from pathlib import Path

import jax
import numpy as np
import polars as pl
import pytest

from jaxtrade.cli import main
from jaxtrade.data import load_ohlcv

sys.path.insert(0, str(Path(__file__).parent))
from test_backtest_new_bars import _random_walk_after  # noqa: E402

NUM_BARS = 1200  # the last bars of sp500_daily: two folds of 155 test bars
RUN = ["walkforward", "walkforward.folds=2", "agent=ensemble", "data=csv", "logger=none",
       "train.fast_compile=true",
       "env.num_envs=4", "env.window_bars=16", "env.episode_bars=64",
       "train.total_steps=1024", "agent.updates_per_chunk=2",
       "train.checkpoint_every_updates=2", "agent.members=[ppo,sac]",
       "agent.ppo.rollout_len=32", "agent.ppo.network.hidden_sizes=[16,16]",
       "agent.sac.network.hidden_sizes=[16,16]", "agent.sac.learning_starts=256"]
RULES = {"equal", "vote", "router", "winner"}


@pytest.fixture(scope="module")
def walked(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("walkforward")
    frame = load_ohlcv("sp500_daily").tail(NUM_BARS)
    csv = folder / "bars.csv"
    frame.write_csv(csv)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*RUN, f"data.path={csv}", f"run_dir={folder / 'wf'}"]) == 0
    report = folder / "wf" / "report"
    return {"folder": folder, "frame": frame, "csv": csv, "root": folder / "wf",
            "console": out.getvalue(),
            "metrics": json.loads((report / "metrics.json").read_text()),
            "folds": pl.read_csv(report / "folds.csv"),
            "positions": pl.read_csv(report / "positions.csv")}


def test_test_windows_tile_the_period_without_overlap(walked: dict) -> None:
    metrics, folds = walked["metrics"], walked["metrics"]["folds"]
    assert len(folds) == 2
    for fold in folds:
        train, validation, test = fold["train"], fold["validation"], fold["test"]
        # data.embargo_bars of the csv source (5) between the windows.
        assert train[0] < train[1] == validation[0] - 5 < validation[1] == test[0] - 5
        assert test[0] < test[1]
        assert test[1] - test[0] >= 30
    assert folds[0]["test"][1] == folds[1]["test"][0]  # tiled: no gap, no overlap
    assert folds[-1]["test"][1] == NUM_BARS  # up to the last bar
    stamps = walked["frame"]["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S").to_list()
    first, last = folds[0]["test"][0], folds[-1]["test"][1]
    assert metrics["period"]["start"].startswith(stamps[first])
    assert metrics["period"]["end"].startswith(stamps[last - 1])
    # positions.csv: one decision per test bar of the period, each in its own fold's window.
    positions = walked["positions"]
    decided = positions["timestamp"].str.slice(0, 19).to_list()
    assert decided == stamps[first:last]
    for k, fold in enumerate(folds):
        mine = positions.filter(pl.col("fold") == k)["timestamp"].str.slice(0, 19).to_list()
        assert mine == stamps[fold["test"][0]:fold["test"][1]]
    assert metrics["period"]["test_bars"] == last - first
    assert metrics["period"]["stitched_returns"] == last - first - len(folds)
    for k in range(2):
        assert f"fold {k + 1}/2" in walked["console"]


def test_stitched_equity_compounds_the_folds_returns(walked: dict) -> None:
    metrics, table = walked["metrics"], walked["folds"]
    assert set(metrics["stitched"]) == {f"{kind}/{name}" for kind, name in
                                        table.select("kind", "name").unique().iter_rows()}
    for book, stitched in metrics["stitched"].items():
        kind, name = book.split("/", 1)
        per_fold = table.filter((pl.col("kind") == kind) & (pl.col("name") == name))
        assert per_fold["fold"].to_list() == [0, 1]
        compounded = np.prod(1.0 + per_fold["total_return"].to_numpy()) - 1.0
        assert stitched["total_return"] == pytest.approx(compounded, rel=1e-4, abs=1e-6), book
    # Not a trivial identity: the traded book did trade and move in both folds.
    policy = metrics["policy"]
    assert policy == "rule/vote"
    assert all(abs(f["books"][policy]["total_return"]) > 1e-4 for f in metrics["folds"])


def test_every_rule_member_and_baseline_per_fold_and_the_verdict(walked: dict) -> None:
    table, section = walked["folds"], walked["metrics"]["ensemble"]
    for k in (0, 1):
        rows = table.filter(pl.col("fold") == k)
        by_kind = {kind: set(rows.filter(pl.col("kind") == kind)["name"])
                   for kind in ("rule", "member", "baseline")}
        assert by_kind["rule"] == RULES
        assert by_kind["member"] == {"ppo", "sac"}
        assert {"buy_and_hold", "ma_crossover", "logistic"} <= by_kind["baseline"]
    stitched = walked["metrics"]["stitched"]
    sharpe = {r: stitched[f"rule/{r}"]["sharpe"] for r in RULES}
    assert section["best_rule"] == max(sharpe, key=sharpe.get)
    for rule, margin in section["margins"].items():
        assert margin["sharpe"] == pytest.approx(sharpe[section["best_rule"]] - sharpe[rule])
    lost = {x["fold"] for x in section["folds_lost_to_best_member"]}
    for k in (0, 1):
        rows = table.filter(pl.col("fold") == k)
        vote = rows.filter((pl.col("kind") == "rule") & (pl.col("name") == "vote"))["sharpe"][0]
        best_member = rows.filter(pl.col("kind") == "member")["sharpe"].max()
        assert (best_member > vote) == (k in lost)
    assert "best rule over the stitched out-of-sample period" in walked["console"]
    assert (walked["root"] / "report" / "equity.png").stat().st_size > 0


def _params(run_dir: Path) -> tuple:
    from experiments.train import restore_run

    prep, restored, _ = restore_run(run_dir, "best", command="walkforward")
    return prep, restored


def test_fold_never_sees_bars_after_its_validation_window(walked: dict) -> None:
    """Every bar after fold 0's first test bar replaced: fold 0 retrained on those bars keeps
    its parameters, fitted router / winner and first test decision; its later test bars
    (and so its test return) change."""
    from experiments import common
    from experiments import walkforward as wf

    fold0 = walked["metrics"]["folds"][0]
    t = fold0["test"][0]
    altered_csv = walked["folder"] / "altered.csv"
    _random_walk_after(walked["frame"], t, seed=5).write_csv(altered_csv)
    cfg = common.compose([a for a in RUN[2:]] + [f"data.path={altered_csv}"])
    settings = dict(wf.SETTINGS, **{"walkforward.folds": 2})
    frame = common.load_frame(cfg["data"])
    cfg["data"]["fingerprint"] = common.data_fingerprint(frame)
    folds = wf.fold_layout(copy.deepcopy(cfg), settings, frame.height)
    assert [list(folds[0].bounds(s)) for s in ("train", "validation", "test")] == [
        fold0["train"], fold0["validation"], fold0["test"]]
    with contextlib.redirect_stdout(io.StringIO()):
        report, policy = wf.run_fold(cfg, folds[0], 0, walked["folder"] / "altered0",
                                     print_fn=lambda _: None)
    prep, mine = _params(walked["root"] / "folds" / "0")
    _, theirs = _params(walked["folder"] / "altered0")
    # The fold's run rebuilt from its config.yaml has the fold's ranges (data.splits).
    assert list(prep.market.split_bounds("test")) == fold0["test"]
    assert mine.step == theirs.step
    for a, b in zip(jax.tree.leaves(mine.params), jax.tree.leaves(theirs.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-7)
    assert report.notes["winner"] == fold0["winner"]
    np.testing.assert_allclose(report.notes["router_table"], fold0["router_table"])
    first = walked["positions"].filter(pl.col("fold") == 0)["target_position"][0]
    assert report.books[policy].target_positions[0, 0] == pytest.approx(first, abs=1e-6)
    # The replaced bars did reach the test window: the rest of it traded other prices.
    assert report.books[policy].metrics["total_return"] != pytest.approx(
        fold0["books"][policy]["total_return"], abs=1e-6)


def test_refuses_more_folds_than_the_bars_carry(tmp_path: Path, walked: dict,
                                                capsys: pytest.CaptureFixture) -> None:
    run_dir = tmp_path / "wf"
    code = main([*RUN, "walkforward.folds=40", f"data.path={walked['csv']}",
                 f"run_dir={run_dir}"])
    err = capsys.readouterr().err
    assert code == 2
    assert "walkforward.folds=40 is not allowed with 1200 bars" in err
    assert "at least 30 bars" in err and "at most" in err
    assert len(err.strip().splitlines()) == 1
    assert not run_dir.exists()
    # The largest count it names is accepted by the layout, one more is refused.
    most = int(err.split("at most ")[1].split(" ")[0])
    from experiments import common
    from experiments import walkforward as wf
    from jaxtrade.errors import ConfigError

    cfg = common.compose([*RUN[2:], f"data.path={walked['csv']}"])
    assert len(wf.fold_layout(cfg, dict(wf.SETTINGS, **{"walkforward.folds": most}),
                              NUM_BARS)) == most
    with pytest.raises(ConfigError, match="at least 30 bars"):
        wf.fold_layout(cfg, dict(wf.SETTINGS, **{"walkforward.folds": most + 1}), NUM_BARS)
    for bad, message in (("walkforward.folds=1", "at least 2 folds"),
                         ("walkforward.fold=3", "did you mean 'walkforward.folds'"),
                         ("resume=true", "resume is not allowed")):
        assert main([*RUN, bad, f"data.path={walked['csv']}"]) == 2
        assert message in capsys.readouterr().err


def test_data_splits_are_checked_like_every_setting() -> None:
    """A fold's config records its ranges as data.splits; bad ranges, or fractions that the
    ranges would silently replace, are refused in one line."""
    from experiments import common
    from jaxtrade.config import validate_run
    from jaxtrade.errors import ConfigError

    base = common.compose(["data=synthetic", "data.embargo_bars=0"])
    good = {"train": [0, 2000], "validation": [2005, 2400], "test": [2405, 3000]}
    assert validate_run(dict(base, data=dict(base["data"], splits=good)))["data"]["splits"] == good
    assert common.make_data_splits(dict(base, data=dict(base["data"], splits=good)),
                                   3000).test == (2405, 3000)
    for splits, extra, message in (
            (dict(good, validation=[1900, 2400]), {}, "without overlapping"),
            ({"train": [0, 2000], "test": [2400, 3000]}, {}, "give {train"),
            (dict(good, test=[2405, 2.5e3]), {}, "whole bars"),
            (good, {"train_frac": 0.6}, "data.train_frac=0.6 is not allowed with data.splits"),
            (good, {"embargo_bars": 5}, "set data.embargo_bars=0")):
        with pytest.raises(ConfigError, match=message.replace("{", r"\{")):
            validate_run(dict(base, data=dict(base["data"], splits=splits, **extra)))
    with pytest.raises(ConfigError, match="ends after the last"):
        common.make_data_splits(dict(base, data=dict(base["data"], splits=good)), 2500)
