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


@pytest.mark.slow
# Each run is its own xdist group (tests/conftest.py): four long runs sharing nothing.
@pytest.mark.parametrize("name,prioritized", [
    pytest.param(name, prioritized, marks=pytest.mark.xdist_group(f"{name}-{prioritized}"))
    for name, prioritized in (("dqn", False), ("dqn", True), ("qrdqn", False), ("qrdqn", True))])
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
