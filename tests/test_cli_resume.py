"""Real PPO through `jaxtrade train`: N updates, stop, resume=true, N more == 2N straight."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
import pytest
from test_cli import TINY

from experiments import common
from experiments.train import restore_run, train
from jaxtrade.cli import main
from jaxtrade.errors import CheckpointError, ConfigError
from jaxtrade.logging import read_metrics

RUN = [*TINY, "logger=none", "train.report=false", "train.total_steps=1024"]


def final_state(run_dir: Path) -> tuple[object, dict]:
    """(the latest checkpoint's whole state, its metadata), as `jaxtrade backtest`
    restores it (shapes from jax.eval_shape: agent.init is not compiled)."""
    _, restored, _ = restore_run(run_dir, "latest")
    return restored.state, restored.meta


class Straight(NamedTuple):
    """RUN trained straight through its 8 updates, and its final checkpoint's state."""

    run_dir: Path
    state: Any
    meta: dict


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Straight:
    """Read only: the run the resumed and forked runs must equal."""
    run_dir = tmp_path_factory.mktemp("resume") / "straight"
    train(common.compose([*RUN, f"run_dir={run_dir}"]), print_fn=lambda _: None)
    return Straight(run_dir, *final_state(run_dir))


@pytest.fixture(scope="module")
def halfway(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(run_dir, what train returned): RUN stopped after 4 of its 8 updates. Read only: a test
    that continues it continues a copy."""
    run_dir = tmp_path_factory.mktemp("resume") / "halfway"
    first = train(common.compose([*RUN, f"run_dir={run_dir}", "train.stop_after_updates=4"]),
                  print_fn=lambda _: None)
    return run_dir, first


def test_resume_continues_exactly(straight: Straight, halfway: tuple[Path, Any], tmp_path: Path,
                                  capsys: pytest.CaptureFixture) -> None:
    split = tmp_path / "split"
    shutil.copytree(halfway[0], split)
    first = halfway[1]
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
    a, meta_a = straight.state, straight.meta
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
        halfway: tuple[Path, Any], tmp_path: Path) -> None:
    """What a SIGKILL during the first save leaves (orbax 0.12): config.yaml, metrics rows and
    checkpoints/<step>.orbax-checkpoint-tmp/ with no complete step. A fresh start takes the
    folder (nothing complete to protect) and so does resume=true (from update 0)."""
    # The run as the kill at its first save (update 2) left it: a copy of RUN stopped after 4
    # updates with the rows past update 2 and every complete checkpoint taken away.
    killed = tmp_path / "killed"
    shutil.copytree(halfway[0], killed)
    metrics = killed / "metrics.jsonl"
    rows = metrics.read_text().splitlines(keepends=True)
    metrics.write_text("".join(row for row in rows if json.loads(row)["update"] <= 2))
    assert [row["update"] for row in read_metrics(killed)] == [2]
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


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_fork_starts_a_new_run_from_another_runs_checkpoint(
        straight: Straight, halfway: tuple[Path, Any], tmp_path: Path,
        capsys: pytest.CaptureFixture) -> None:
    """`resume=fork from_run=R run_dir=NEW`: NEW continues R's latest checkpoint (the same
    numbers as R continued, when nothing changes), records where it came from and what it
    changed in NEW/config.yaml, holds every update in metrics.jsonl once, and R is only
    read. A changed hyperparameter is the one the fork trains with."""
    import yaml

    source = halfway[0]
    before = _tree_bytes(source)

    fork = tmp_path / "fork"
    lines: list[str] = []
    done = train(common.compose(["resume=fork", f"from_run={source}", f"run_dir={fork}"]),
                 print_fn=lines.append)
    assert done.loop.finished and done.loop.updates_done == 8
    assert any(f"forking {source} at update 4" in x for x in lines), lines
    record = yaml.safe_load((fork / "config.yaml").read_text())
    assert record["forked_from"] == {"run_dir": str(source), "update": 4, "changes": [],
                                     "data_fingerprint": record["data"]["fingerprint"]}
    assert record["resume"] is False and record["run_dir"] == str(fork)
    assert [row["update"] for row in read_metrics(fork)] == list(range(2, 9, 2))
    a = straight.state
    b, meta = final_state(fork)
    assert meta["update"] == 8
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert _tree_bytes(source) == before  # the original is untouched
    # The fork is a run of its own: resume=true continues it, backtest reads its config.
    again = train(common.compose([f"run_dir={fork}", "resume=true"]), print_fn=lambda _: None)
    assert again.loop.updates_done == 8 and again.loop.finished

    # Changes that make it another run are what a fork is for; they are recorded.
    longer = tmp_path / "longer"
    done = train(common.compose(["resume=fork", f"from_run={source}", f"run_dir={longer}",
                                 "train.total_steps=2048", "agent.hparams.learning_rate=0.012"]),
                 print_fn=lambda _: None)
    assert done.loop.finished and done.loop.updates_done == 16
    changes = yaml.safe_load((longer / "config.yaml").read_text())["forked_from"]["changes"]
    assert sorted(changes) == ["agent.hparams.learning_rate: 0.00025 -> 0.012",
                               "train.total_steps: 1024 -> 2048"]
    state, _ = final_state(longer)
    np.testing.assert_allclose(np.asarray(state.hparams.learning_rate), [0.012], rtol=1e-6)
    assert [row["update"] for row in read_metrics(longer)] == list(range(2, 17, 2))
    assert _tree_bytes(source) == before

    # Refused in one line (exit 2), with nothing written.
    for args, message in [
        (["resume=fork", f"run_dir={tmp_path / 'x'}"], "needs from_run=R"),
        (["resume=fork", f"from_run={source}", f"run_dir={source}"], "another directory"),
        (["resume=fork", f"from_run={source}", f"run_dir={fork}"], "already holds a run"),
        (["resume=fork", f"from_run={source}", f"run_dir={tmp_path / 'x'}", "seed=3"],
         "cannot change seed: 0 -> 3"),
        (["resume=fork", f"from_run={tmp_path / 'none'}", f"run_dir={tmp_path / 'x'}"],
         "holds no run to fork"),
        (["resume=fork", f"from_run={source}", f"run_dir={tmp_path / 'x'}", "env.num_envs=8"],
         "does not match this run's state"),
        ([f"from_run={source}", f"run_dir={tmp_path / 'x'}"], "goes with resume=fork"),
    ]:
        code = main(["train", *args])
        err = capsys.readouterr().err.strip()
        assert code == 2 and "\n" not in err and message in err, (args, err)
    assert not (tmp_path / "x").exists()
    assert _tree_bytes(source) == before
