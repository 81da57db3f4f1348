"""The Hydra multirun path of `jaxtrade sweep`: comma lists on shape-changing settings.

`jaxtrade sweep env.num_envs=4,8 agent.hparams.learning_rate=1e-4,3e-4` (the README's form)
trains one process per env.num_envs value, each a vmapped sweep over the learning rates, in
run_dir/job<i>/, and then ranks all trials in one summary with PSR / Deflated Sharpe.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_cli import TINY

from experiments.sweep import MULTIRUN_JOB_ENV
from jaxtrade.cli import main

# TINY without its env.num_envs (the axis swept here) and without the report (not under test).
SHARED = [o for o in TINY if not o.startswith("env.num_envs=")] + ["train.report=false"]
ROLLOUT_LEN = 32  # agent.rollout_len in TINY
LEARNING_RATES = (1e-4, 3e-4)


def _per_bar_sharpe(returns: np.ndarray) -> np.ndarray:
    return returns.mean(axis=1) / returns.std(axis=1, ddof=1)


def _jobs(run_dir: Path) -> list[Path]:
    return sorted(p for p in run_dir.iterdir() if p.is_dir())


@pytest.mark.slow
def test_shape_axis_runs_one_process_per_value_and_one_ranked_summary(
        tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    run_dir = tmp_path / "multirun"
    code = main(["sweep", *SHARED, "env.num_envs=4,8",
                 f"agent.hparams.learning_rate={','.join(map(str, LEARNING_RATES))}",
                 f"run_dir={run_dir}"])
    out = capfd.readouterr().out
    assert code == 0

    jobs = _jobs(run_dir)
    assert [j.name for j in jobs] == ["job0", "job1"]
    job_trials = {}
    for job, num_envs in zip(jobs, (4, 8), strict=True):
        cfg = yaml.safe_load((job / "config.yaml").read_text())
        assert cfg["env"]["num_envs"] == num_envs
        assert sorted(p["agent.hparams.learning_rate"] for p in cfg["sweep"]["points"]) \
            == list(LEARNING_RATES)
        # The override reached the compiled program: each update took num_envs * rollout steps,
        # for both vmapped points.
        rows = [json.loads(line) for line in (job / "metrics.jsonl").read_text().splitlines()]
        assert {r["point"] for r in rows} == {0, 1}
        assert all(r["env_steps"] == r["update"] * num_envs * ROLLOUT_LEN for r in rows)
        summary = json.loads((job / "sweep_summary.json").read_text())
        assert summary["num_trials"] == 2
        for t in summary["trials"]:
            job_trials[(f"env.num_envs={num_envs}", t["agent.hparams.learning_rate"])] = t

    summary = json.loads((run_dir / "sweep_summary.json").read_text())
    assert summary["num_trials"] == 4
    trials = summary["trials"]
    assert {(t["job"], t["agent.hparams.learning_rate"]) for t in trials} == set(job_trials)
    sharpes = [t["validation_sharpe"] for t in trials]
    assert sharpes == sorted(sharpes, reverse=True)
    for t in trials:  # the combined table carries each job's own numbers
        assert t["validation_sharpe"] == job_trials[(t["job"],
                                                     t["agent.hparams.learning_rate"])][
            "validation_sharpe"]

    # Significance of the best trial over all 4, from the jobs' saved validation returns.
    returns = np.concatenate([np.load(j / "sweep_validation_returns.npy") for j in jobs])
    np.testing.assert_array_equal(np.load(run_dir / "sweep_validation_returns.npy"), returns)
    sig = summary["significance"]
    assert sig["num_trials"] == 4
    assert sig["sharpe_per_bar"] == pytest.approx(_per_bar_sharpe(returns).max(), rel=1e-9)
    assert 0.0 <= sig["dsr"] <= sig["psr"] <= 1.0  # deflating for 4 trials cannot help
    assert "sweep: 4 trials (ranked by validation Sharpe)" in out
    assert "env.num_envs=8" in out and "Deflated Sharpe" in out


def test_shape_only_multirun_job_trains_the_base_hyperparameters(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    # With no agent.hparams axis (`jaxtrade sweep network.hidden_sizes=[8],[16,16]`) each job
    # has no vmapped points; it used to stop with "sweep has no points". One such job, run
    # in this process as run_multirun starts it, trains the config as given.
    run_dir = tmp_path / "job0"
    job = ["sweep", *SHARED, "env.num_envs=4", "network.hidden_sizes=[8]", f"run_dir={run_dir}"]
    assert main(job) == 2  # a plain `jaxtrade sweep` without points is still a user error
    assert "sweep has no points" in capsys.readouterr().err
    monkeypatch.setenv(MULTIRUN_JOB_ENV, "1")
    assert main(job) == 0
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["network"]["hidden_sizes"] \
        == [8]
    assert (run_dir / "metrics.jsonl").read_text().strip()
    summary = json.loads((run_dir / "sweep_summary.json").read_text())
    assert summary["num_trials"] == 1 and summary["trials"][0]["seed"] == 0
    assert np.load(run_dir / "sweep_validation_returns.npy").shape[0] == 1


def test_bad_value_late_in_a_list_stops_before_any_job(tmp_path: Path,
                                                       capfd: pytest.CaptureFixture) -> None:
    run_dir = tmp_path / "bad"
    code = main(["sweep", *SHARED, "env.num_envs=4,many",
                 "agent.hparams.learning_rate=1e-4,3e-4", f"run_dir={run_dir}"])
    err = capfd.readouterr().err
    assert code == 2
    assert "env.num_envs" in err and len(err.strip().splitlines()) == 1
    assert not run_dir.exists()  # nothing trained


def test_train_points_comma_lists_and_dash_m_to_sweep(capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "-m", "experiment=smoke", "env.num_envs=4,8"]) == 2
    assert "jaxtrade sweep" in capsys.readouterr().err
    assert main(["train", "experiment=smoke", "agent.hparams.learning_rate=1e-4,3e-4"]) == 2
    err = capsys.readouterr().err
    assert "jaxtrade sweep agent.hparams.learning_rate=1e-4,3e-4" in err
    assert len(err.strip().splitlines()) == 1
