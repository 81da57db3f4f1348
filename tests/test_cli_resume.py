"""Real PPO through `jaxtrade train`: N updates, stop, resume=true, N more == 2N straight."""

from __future__ import annotations

import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from test_cli import TINY

from experiments import common
from experiments.loop import init_points
from experiments.train import prepare, train
from jaxtrade.checkpoint import CheckpointManager
from jaxtrade.cli import main
from jaxtrade.errors import CheckpointError, ConfigError
from jaxtrade.logging import read_metrics

RUN = [*TINY, "logger=none", "train.report=false", "train.total_steps=1024"]


def final_state(run_dir: Path) -> tuple[object, dict]:
    cfg = common.compose_run_from_saved(common.read_run_config(run_dir))
    prep = prepare(cfg)
    like = init_points(prep.agent, jax.numpy.stack([jax.random.key(cfg["seed"])]), None,
                       prep.env_params)
    with CheckpointManager(run_dir / "checkpoints", read_only=True) as manager:
        return manager.restore(like)


def test_resume_continues_exactly(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    straight = tmp_path / "straight"
    train(common.compose([*RUN, f"run_dir={straight}"]), print_fn=lambda _: None)
    split = tmp_path / "split"
    first = train(common.compose([*RUN, f"run_dir={split}", "train.stop_after_updates=4"]),
                  print_fn=lambda _: None)
    assert first.loop.updates_done == 4 and not first.loop.finished
    with pytest.raises(ConfigError, match="already holds a run"):
        train(common.compose([*RUN, f"run_dir={split}"]), print_fn=lambda _: None)
    record = (split / "config.yaml").read_bytes()
    # Settings that make it another run are refused in one line listing them (a value equal
    # to the default counts), and nothing of the run is touched.
    code = main(["train", f"run_dir={split}", "resume=true", "seed=5", "data.options.seed=7",
                 "agent.hparams.learning_rate=0.012", "env.num_envs=auto", "logger=console"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "ConfigError" in err
    for change in ("seed: 0 -> 5", "data.options.seed: 0 -> 7", "env.num_envs: 4 -> 'auto'",
                   "agent.hparams.learning_rate: 0.00025 -> 0.012"):
        assert change in err
    assert "logger" not in err.split("another run:")[1]  # logging may change
    assert (split / "config.yaml").read_bytes() == record
    # The README's form: the run's own config (not the defaults), continued exactly.
    second = train(common.compose([f"run_dir={split}", "resume=true"]), print_fn=lambda _: None)
    assert (split / "config.yaml").read_bytes() == record
    assert second.loop.updates_done == 8 and second.loop.finished
    a, meta_a = final_state(straight)
    b, meta_b = final_state(split)
    assert meta_a["update"] == meta_b["update"] == 8
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    for x, y in zip(jax.tree.leaves(a.opt_state), jax.tree.leaves(b.opt_state)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    np.testing.assert_array_equal(jax.random.key_data(a.rng), jax.random.key_data(b.rng))
    with pytest.raises(CheckpointError, match="no checkpoints"):
        train(common.compose([*RUN, f"run_dir={tmp_path / 'fresh'}", "resume=true"]))


def test_choose_point_ranks_missing_and_nan_scores_last() -> None:
    """The default point of a checkpoint is its best finite validation Sharpe (np.argmax would
    pick the NaN point); an explicit point is range-checked."""
    from jaxtrade.runs import choose_point

    meta = {"validation": {"validation_sharpe": [float("nan"), 0.5, None, 1.5, 1.5]}}
    assert choose_point(meta, 5) == 3
    assert choose_point({"validation": {"validation_sharpe": [float("nan"), -2.0]}}, 2) == 1
    assert choose_point({}, 3) == 0  # no validation split: the first point
    assert choose_point(meta, 5, point=2) == 2
    with pytest.raises(ConfigError, match=r"point=5 is not allowed: the run has points 0\.\.4"):
        choose_point(meta, 5, point=5)


def test_a_kill_during_the_first_checkpoint_leaves_a_run_dir_both_ways_accept(
        tmp_path: Path) -> None:
    """What a SIGKILL during the first save leaves (orbax 0.12): config.yaml, metrics rows and
    checkpoints/<step>.orbax-checkpoint-tmp/ with no complete step. A fresh start takes the
    folder (nothing complete to protect) and so does resume=true (from update 0)."""
    killed = tmp_path / "killed"
    train(common.compose([*RUN, f"run_dir={killed}", "train.stop_after_updates=2"]),
          print_fn=lambda _: None)
    shutil.rmtree(killed / "checkpoints")
    partial = killed / "checkpoints" / "2.orbax-checkpoint-tmp"
    (partial / "state.orbax-checkpoint-tmp").mkdir(parents=True)
    (partial / "_CHECKPOINT_METADATA").write_text('{"init_timestamp_nsecs": 1')
    again = tmp_path / "again"
    shutil.copytree(killed, again)
    lines: list[str] = []
    resumed = train(common.compose([*RUN, f"run_dir={killed}", "resume=true"]),
                    print_fn=lines.append)
    assert resumed.loop.finished and any("starting it from update 0" in x for x in lines)
    fresh = train(common.compose([*RUN, f"run_dir={again}"]), print_fn=lambda _: None)
    assert fresh.loop.finished
    for run_dir in (killed, again):
        assert [row["update"] for row in read_metrics(run_dir)] == list(range(2, 9, 2))
