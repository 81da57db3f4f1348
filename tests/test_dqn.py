"""DQN and QR-DQN: sweeps equal single runs, resume through the CLI is exact (replay buffer
included), config mistakes are one line and exit 2, QR-DQN's quantiles are logged."""

from __future__ import annotations

import json
from pathlib import Path

import gymnax
import jax
import numpy as np
import pytest
from test_cli import run_cli

import agents
from experiments import common
from experiments.train import restore_run, train
from jaxtrade.checkpoint import CheckpointManager

SMALL = {"num_envs": 4, "rollout_len": 2, "total_steps": 4 * 2 * 96, "learning_starts": 64,
         "buffer_size": 512, "batch_size": 32, "updates_per_chunk": 32, "target_update_every": 8,
         "network": {"hidden_sizes": [32, 32]}}


@pytest.mark.parametrize("name,extra", [
    ("dqn", {"prioritized": True, "n_step": 3, "head": "dueling"}),
    ("qrdqn", {"num_quantiles": 8, "act_on": "cvar", "double": False}),
])
def test_vmapped_hyperparameter_points_equal_single_runs(name, extra) -> None:
    env, env_params = gymnax.make("CartPole-v1")
    config = agents.config_from_dict({"name": name, **SMALL, **extra})
    train_fn = agents.make_train(config, env, env_params)
    runs = [(3e-4, 0), (3e-3, 0), (3e-3, 1)]
    hparams = agents.stack_hparams([config.hparams.replace(learning_rate=lr, gamma=0.95)
                                    for lr, _ in runs])
    keys = jax.numpy.stack([jax.random.key(seed) for _, seed in runs])
    batched = jax.jit(jax.vmap(train_fn))(keys, hparams)
    for i, (lr, seed) in enumerate(runs[1:], start=1):
        single = train_fn(jax.random.key(seed), config.hparams.replace(learning_rate=lr,
                                                                       gamma=0.95))
        for metric in ("loss", "q_mean", "episode_return", "epsilon"):
            np.testing.assert_allclose(batched.metrics[f"dqn/{metric}"][i],
                                       single.metrics[f"dqn/{metric}"],
                                       rtol=2e-4, atol=1e-5, err_msg=metric)
    loss = np.asarray(batched.metrics["dqn/loss"])
    assert np.all(loss[:, : 64 // 8 - 1] == 0.0)  # nothing learned before learning_starts
    assert np.all(loss[:, -10:] > 0.0)
    assert not np.allclose(loss[0], loss[1])  # the learning rates really differ
    if name == "qrdqn":
        q = {k: np.asarray(batched.metrics[f"dqn/{k}"])[:, -1] for k in
             ("quantile_05", "quantile_50", "quantile_95", "quantile_spread")}
        assert np.all(q["quantile_05"] <= q["quantile_50"])
        assert np.all(q["quantile_50"] <= q["quantile_95"])
        np.testing.assert_allclose(q["quantile_spread"], q["quantile_95"] - q["quantile_05"],
                                   rtol=1e-5)


TINY_DQN = ["experiment=smoke", "agent=dqn", "data.options.num_bars=400", "env.num_envs=4",
            "env.window_bars=8", "env.episode_bars=64", "agent.rollout_len=2",
            "agent.updates_per_chunk=16", "agent.learning_starts=64", "agent.buffer_size=1024",
            "agent.batch_size=32", "train.total_steps=768", "train.checkpoint_every_updates=16",
            "train.eval_every_updates=16", "network.hidden_sizes=[16,16]", "logger=none",
            "train.report=false"]


def _final_state(run_dir: Path):
    """(the latest checkpoint's whole state, its metadata), as `jaxtrade backtest`
    restores it (shapes from jax.eval_shape: agent.init is not compiled)."""
    _, restored, _ = restore_run(run_dir, "latest")
    return restored.state, restored.meta


def test_resume_with_replay_buffer_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    # QR-DQN with prioritized n-step replay: the sum tree and sequences must resume too.
    run = [*TINY_DQN, "agent=qrdqn", "agent.prioritized=true", "agent.n_step=2",
           "agent.num_quantiles=4", "agent.head=dueling"]
    straight = tmp_path / "straight"
    train(common.compose([*run, f"run_dir={straight}"]), print_fn=lambda _: None)
    split = tmp_path / "split"
    first = train(common.compose([*run, f"run_dir={split}", "train.stop_after_updates=48"]),
                  print_fn=lambda _: None)
    assert first.loop.updates_done == 48 and not first.loop.finished
    second = train(common.compose([*run, f"run_dir={split}", "resume=true"]),
                   print_fn=lambda _: None)
    assert second.loop.finished
    a, meta_a = _final_state(straight)
    b, meta_b = _final_state(split)
    assert meta_a["update"] == meta_b["update"] == 96
    # Everything: online and target networks, Adam state, the replay buffer (items, write
    # index, sum tree), env states and RNG keys.
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    rows = [json.loads(line) for line in (split / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["env_steps"] == 768 and "dqn/epsilon" in rows[-1]


def test_checkpoint_and_eval_intervals_in_env_steps(tmp_path: Path) -> None:
    """train.*_every_steps replace the update-based intervals: 256 env steps = 32 updates of
    8 env steps = 2 chunks, where TINY_DQN alone would evaluate and save every chunk."""
    run_dir = tmp_path / "steps"
    out = train(common.compose([*TINY_DQN, f"run_dir={run_dir}",
                                "train.checkpoint_every_steps=256",
                                "train.eval_every_steps=256"]), print_fn=lambda _: None)
    assert out.loop.finished
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["env_steps"] for r in rows] == [128, 256, 384, 512, 640, 768]
    assert [r["env_steps"] for r in rows if "validation_sharpe" in r] == [256, 512, 768]
    with CheckpointManager(run_dir / "checkpoints", read_only=True) as manager:
        assert manager.latest_step() == 96


@pytest.mark.parametrize("override,message", [
    ("agent.buffer_size=16", "agent.buffer_size=16 is not allowed: smaller than agent.batch_size"),
    ("agent.learning_starts=100000", "agent.learning_starts=100000 is not allowed: the run ends"),
    ("agent.n_step=100", "agent.n_step=100 is not allowed: longer than an episode (64 steps)"),
])
def test_config_mistakes_are_one_line_and_exit_2(tmp_path: Path, capsys, override,
                                                  message) -> None:
    code, _, err = run_cli(["train", *TINY_DQN, override, f"run_dir={tmp_path / 'r'}"], capsys)
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1, err
