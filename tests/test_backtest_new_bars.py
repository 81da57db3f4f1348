"""`jaxtrade backtest run_dir=R data.path=NEW [out=DIR]`: a trained policy on other bars.

Through the CLI: the run's own bars reproduce its report exactly (features as at training,
the training fit applied, splits by the run's fractions) without touching R/report, and the
end-to-end leak test: replacing every bar after a time t inside the test split by another
random walk leaves every position at or before t unchanged. In process: the normalization and
regimes applied to other bars are the ones fitted at training, never a refit, and a run whose
training bars changed since training is refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from live_helpers import report_positions, tiny_frame, tiny_run

from jaxtrade.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pl.DataFrame, Path]:
    """(run_dir, its bars, the CSV it trained on): live_helpers' tiny run, trained once per
    session (tests/shared_runs.py). Read only: the backtests on other bars write under
    run_dir/backtests/<bars' name>, a name of this module's own."""
    return tiny_run(tmp_path_factory)


def _backtest(*args: str) -> int:
    with contextlib.redirect_stdout(io.StringIO()):
        return main(["backtest", *args])


def _random_walk_after(frame: pl.DataFrame, t: int, seed: int, vol: float = 0.03
                       ) -> pl.DataFrame:
    """`frame` with every bar after index t replaced by another random walk from close[t]."""
    rng = np.random.default_rng(seed)
    n = frame.height - t - 1
    close = float(frame["close"][t]) * np.exp(np.cumsum(rng.normal(0.0, vol, n)))
    open_ = np.concatenate([[float(frame["close"][t])], close[:-1]])
    wick = np.abs(rng.normal(0.0, vol / 2, (2, n)))
    later = pl.DataFrame({
        "timestamp": frame["timestamp"][t + 1:],
        "open": open_, "high": np.maximum(open_, close) * (1 + wick[0]),
        "low": np.minimum(open_, close) * (1 - wick[1]),
        "close": close, "volume": rng.uniform(1e5, 1e6, n),
    })
    return pl.concat([frame.head(t + 1), later])


def test_a_decision_at_t_does_not_change_when_every_later_bar_changes(trained, tmp_path):
    run_dir, frame, _ = trained
    own_report = {p.name: p.read_bytes() for p in (run_dir / "report").iterdir()}
    test = report_positions(run_dir / "report", "test")
    t_stamp = test["timestamp"][10]
    stamps = frame["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.%6f%z").to_list()
    t = stamps.index(t_stamp)
    same, changed = tmp_path / "new_bars_same.csv", tmp_path / "changed.csv"
    frame.write_csv(same)
    _random_walk_after(frame, t, seed=7).write_csv(changed)

    assert _backtest(f"run_dir={run_dir}", f"data.path={same}") == 0  # default out
    assert _backtest(f"run_dir={run_dir}", f"data.path={changed}", f"out={tmp_path / 'b'}") == 0
    before = report_positions(run_dir / "backtests" / "new_bars_same" / "report")
    after = report_positions(tmp_path / "b" / "report")

    # The run's own bars through data.path= reproduce its report, which stays untouched.
    assert before.equals(report_positions(run_dir / "report"))
    assert {p.name: p.read_bytes() for p in (run_dir / "report").iterdir()} == own_report
    # Splits by the run's fractions: the same bars in the same splits.
    assert before.select("timestamp", "split").equals(after.select("timestamp", "split"))
    # One fixed-width UTC format, so text order is time order.
    up_to_t = pl.col("timestamp") <= t_stamp
    assert before.filter(up_to_t).height > 0
    assert before.filter(up_to_t).equals(after.filter(up_to_t))
    # The later bars did reach the policy: its positions after t differ.
    later = before.filter(~up_to_t)["target_position"] != after.filter(~up_to_t)[
        "target_position"]
    assert later.any()
    bars = json.loads((tmp_path / "b" / "report" / "metrics.json").read_text())["bars"]
    assert bars["path"] == str(changed.resolve()) and bars["num_bars"] == frame.height
    assert bars["fitted_on"]["run_dir"] == str(run_dir.resolve())


def test_other_bars_get_the_training_normalization_and_regimes_never_a_refit(trained,
                                                                            tmp_path):
    from experiments import backtest
    from experiments.common import feature_spec, make_data_splits
    from experiments.train import restore_run
    from jaxtrade import features as features_lib
    from jaxtrade import market as market_lib
    from jaxtrade.features import Normalizer
    from jaxtrade.features.regimes import REGIME_COLUMNS, RegimeModel

    run_dir, frame, _ = trained
    prep, restored, _ = restore_run(run_dir, "best")
    # The same run as if trained with regimes: its training market fits the HMM once.
    cfg = dict(prep.cfg, data=dict(prep.cfg["data"], regimes=True))
    splits = make_data_splits(cfg, frame.height)
    with_regimes = market_lib.build(prep.frame, feature_spec(cfg), splits, regimes=True)
    prep = dataclasses.replace(prep, cfg=cfg, market=with_regimes)

    # Another market on the same dates, far more volatile than the training bars.
    other = _random_walk_after(tiny_frame(frame.height, seed=11), 0, seed=11, vol=0.06)
    path = tmp_path / "other.csv"
    other.write_csv(path)
    fresh = backtest.on_other_bars(prep, restored.meta, path, tmp_path / "out")

    spec = feature_spec(cfg)
    raw = features_lib.compute(other, spec).drop("timestamp").to_numpy()
    trained_stats = Normalizer.from_dict(with_regimes.meta.extra["normalizer"])
    expected = np.nan_to_num(trained_stats.transform(raw)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(fresh.market.features)[:, 0, :], expected)
    start, end = fresh.market.split_bounds("train")
    refit = Normalizer.fit(raw, (start, end)).transform(raw).astype(np.float32)
    assert np.abs(np.asarray(fresh.market.features)[:, 0, :] - refit).max() > 0.1

    model = RegimeModel.from_dict(with_regimes.meta.extra["regime_model"])
    probs = model.transform(other).select(REGIME_COLUMNS).to_numpy()
    np.testing.assert_allclose(np.asarray(fresh.market.regime),
                               np.where(np.isfinite(probs), probs, 1 / 3), atol=1e-6)
    assert fresh.market.meta.extra["regime_model"] == with_regimes.meta.extra["regime_model"]
    assert fresh.market.meta.bars_per_year == with_regimes.meta.bars_per_year


def test_changed_training_bars_and_an_out_over_the_run_report_are_refused(trained, tmp_path,
                                                                          capsys):
    run_dir, frame, csv = trained
    capsys.readouterr()
    for out in (run_dir, run_dir / "report"):
        assert _backtest(f"run_dir={run_dir}", f"data.path={csv}", f"out={out}") == 2
        assert "report" in capsys.readouterr().err
    assert _backtest(f"run_dir={run_dir}", f"data.path={tmp_path / 'absent.csv'}") == 2
    assert "no such file" in capsys.readouterr().err

    # A copy of the run whose training file was edited since: the fit cannot be rebuilt.
    copy = tmp_path / "run"
    copy.mkdir()
    shutil.copytree(run_dir / "checkpoints", copy / "checkpoints")
    edited = tmp_path / "edited.csv"
    frame.with_columns(pl.col("volume") * 2).write_csv(edited)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    cfg["data"]["path"], cfg["run_dir"] = str(edited), str(copy)
    (copy / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert _backtest(f"run_dir={copy}", f"data.path={csv}") == 2
    assert "changed since training" in capsys.readouterr().err
    assert not (copy / "backtests").exists()
    # The run's own backtest and its export rebuild the fit from those bars too: refused with
    # one line naming the file and both fingerprints (export used to refit on the new file).
    saved = json.loads(next((run_dir / "checkpoints").glob("*/metadata/metadata")).read_text())
    for command in (["backtest", f"run_dir={copy}"],
                    ["export", f"run_dir={copy}", f"out={tmp_path / 'bundle'}"]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "DataError" in err and str(edited) in err
        assert "changed since training" in err
        assert saved["run_info"]["data_fingerprint"] in err
    assert not (copy / "report").exists() and not (tmp_path / "bundle").exists()


def test_backtest_help_names_the_other_bars_form(capsys):
    assert main(["backtest", "--help"]) == 0
    text = capsys.readouterr().out
    assert "data.path=NEW.csv" in text and "out=DIR" in text and "never refitted" in text
