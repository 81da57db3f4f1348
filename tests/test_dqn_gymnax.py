"""DQN and QR-DQN solve gymnax CartPole-v1 with their defaults, several seeds in one program.

Nothing is set but `total_steps` (and `prioritized` for the prioritized-replay variants): the
defaults must work out of the box. DQN, with uniform and with prioritized replay, is judged
by its greedy policy after training on 5 keys never used for tuning; QR-DQN still by its
training metrics (`out.metrics["dqn/episode_return"]`, episodes run with the final exploration
rate), averaged over the last 2% of updates of each seed, then over 3 seeds.
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
    for name, prioritized in (("qrdqn", False), ("qrdqn", True))])
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


# Where each variant's defaults were chosen (scripts/bench_learning.py, BENCHMARKS.md, issue 19).
TUNED_ON = {
    False: "n_step=3, hparams.adam_eps=1e-2; chosen on split(key(0), 20) and "
           "split(key(2000), 50), where 70 of 70 seeds held 494-500",
    True: "the same and priority_exponent=0.4; chosen on split(key(1000), 10) and "
          "split(key(2000), 20), where 30 of 30 seeds held the goal",
}


@pytest.mark.slow
@pytest.mark.parametrize("prioritized", [
    pytest.param(prioritized, marks=pytest.mark.xdist_group(f"dqn-{prioritized}"))
    for prioritized in (False, True)])
def test_dqn_defaults_greedy_policy_solves_cartpole(prioritized: bool) -> None:
    """DQN's greedy policy after 500,000 env steps, 10 fresh episodes per seed: median >= 475
    and every seed >= 400 (the reliability goal itself), with uniform and prioritized replay.

    Why passing does not rest on lucky keys: the keys are split(key(20261203), 5), fixed before
    any run with them and never used to choose a setting; the defaults (TUNED_ON) were chosen
    on other keys with scripts/bench_learning.py, where every seed held the goal
    (BENCHMARKS.md). A seed that fails here is one the tuning keys did not see, not one they
    were picked to avoid."""
    env, env_params = gymnax.make("CartPole-v1")
    data = {"name": "dqn", "total_steps": 500_000, "prioritized": prioritized}
    config = agents.config_from_dict(data)
    program = make_train_and_evaluate(config, env, env_params, 10)
    keys = jax.random.split(jax.random.key(20_261_203), 5)
    metrics, greedy = jax.jit(jax.vmap(program))(keys)
    assert np.asarray(metrics["dqn/env_steps"])[0, -1] <= 500_000
    final = np.asarray(greedy).mean(axis=1)
    print("dqn prioritized" if prioritized else "dqn", "greedy", final, TUNED_ON[prioritized])
    assert np.median(final) >= 475.0, final
    assert final.min() >= 400.0, final  # every seed learned, none is carried by the others
