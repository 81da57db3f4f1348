"""DQN and QR-DQN solve gymnax CartPole-v1 with their defaults, 3 seeds in one program.

Nothing is set but `total_steps` (and `prioritized` for the prioritized-replay variants): the
defaults must work out of the box. The return is read from the training metrics
(`out.metrics["dqn/episode_return"]`, episodes run with the final exploration rate), averaged
over the last 2% of updates of each seed, then over the 3 seeds.
"""

from __future__ import annotations

import gymnax
import jax
import numpy as np
import pytest

import agents
from agents.common.evaluate import make_train_and_evaluate


@pytest.mark.slow
# Each run is its own xdist group (tests/conftest.py): long runs sharing nothing.
@pytest.mark.parametrize("name,prioritized", [
    pytest.param(name, prioritized, marks=pytest.mark.xdist_group(f"{name}-{prioritized}"))
    for name, prioritized in (("dqn", True), ("qrdqn", False), ("qrdqn", True))])
def test_defaults_solve_cartpole_three_seeds(name: str, prioritized: bool) -> None:
    env, env_params = gymnax.make("CartPole-v1")
    data = {"name": name, "total_steps": 500_000}
    if prioritized:
        data["prioritized"] = True
    config = agents.config_from_dict(data)
    train = agents.make_train(config, env, env_params)
    keys = jax.numpy.stack([jax.random.key(seed) for seed in range(3)])
    out = jax.jit(jax.vmap(train))(keys)
    returns = np.asarray(out.metrics["dqn/episode_return"])  # [3 seeds, num_updates]
    steps = np.asarray(out.metrics["dqn/env_steps"])
    assert steps[0, -1] <= 500_000 and returns.shape[0] == 3
    tail = max(1, returns.shape[1] // 50)
    final = returns[:, -tail:].mean(axis=1)
    assert final.mean() >= 475.0, final
    assert final.min() >= 300.0, final  # every seed learned, none is carried by the others


@pytest.mark.slow
@pytest.mark.xdist_group("dqn-False")
def test_dqn_defaults_greedy_policy_solves_cartpole() -> None:
    """DQN's greedy policy after 500,000 env steps, 10 fresh episodes per seed: median >= 475
    and every seed >= 400 (the reliability goal itself).

    Why passing does not rest on lucky keys: the keys are split(key(20261203), 5), fixed before
    any run with them and never used to choose a setting; the defaults (n_step=3,
    hparams.adam_eps=1e-2) were chosen on split(key(0), 20) and split(key(2000), 50) with
    scripts/bench_learning.py, where 70 of 70 seeds held 494-500 (BENCHMARKS.md)."""
    env, env_params = gymnax.make("CartPole-v1")
    config = agents.config_from_dict({"name": "dqn", "total_steps": 500_000})
    program = make_train_and_evaluate(config, env, env_params, 10)
    keys = jax.random.split(jax.random.key(20_261_203), 5)
    metrics, greedy = jax.jit(jax.vmap(program))(keys)
    assert np.asarray(metrics["dqn/env_steps"])[0, -1] <= 500_000
    final = np.asarray(greedy).mean(axis=1)
    print("dqn greedy", final)
    assert np.median(final) >= 475.0, final
    assert final.min() >= 400.0, final  # every seed learned, none is carried by the others
