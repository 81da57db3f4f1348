"""DQN and QR-DQN solve gymnax CartPole-v1 with their defaults, several seeds in one program.

Nothing is set but `total_steps` (and `prioritized` for the prioritized-replay variants): the
defaults must work out of the box. DQN and QR-DQN, each with uniform and with prioritized
replay, are judged by the greedy policy on 5 keys never used for tuning (one vmapped program
per variant): the network a user deploys (the best of the run's checkpoints by validation,
as `jaxtrade export` takes) must hold the goal on every key, and the final network must
learn with margin too. DQN's runs are here, QR-DQN's in tests/test_qrdqn_gymnax.py
(the same proof): `make test` gives each module to one worker, and these are the suite's
longest runs, so the two modules run side by side.
"""

from __future__ import annotations

import gymnax
import jax
import numpy as np
import pytest

import agents
from agents.common.evaluate import make_train_select_and_evaluate

# Where each variant's defaults were chosen (scripts/bench_learning.py, BENCHMARKS.md, issue 19).
TUNED_ON = {
    ("dqn", False): "n_step=3, hparams.adam_eps=1e-2; chosen on split(key(0), 20) and "
                    "split(key(2000), 50), where 70 of 70 seeds held 494-500",
    ("dqn", True): "the same and priority_exponent=0.4; chosen on split(key(1000), 10) and "
                   "split(key(2000), 20), where 30 of 30 seeds held the goal",
    ("qrdqn", False): "n_step=3, hparams.huber_delta=100, hparams.adam_eps=1e-3; chosen on "
                      "split(key(1000), 10), split(key(2000), 20), split(key(3000), 30) "
                      "and split(key(4000), 30), where 29 of the last 30 held >= 476 "
                      "and one 393",
    ("qrdqn", True): "the same and priority_exponent=0.2; measured on split(key(1000), "
                     "10), where 10 of 10 held the goal (443-500)",
}
# Which network must hold >= 400 on every key. Not the final one: now and then a seed's final
# network lands in a late dip (BENCHMARKS.md, issue 19). DQN's held >= 400 on 100 of 100 seeds
# with XLA:CPU's YNNPACK reduce fusions on; with them off (the flag `import jaxtrade` sets: the
# same algorithm, other roundings, as on another machine) on 59 of 60 fresh seeds and on 4 of
# these 5 keys (one 335.1); QR-DQN's on 58 of 60, prioritized DQN's and QR-DQN's on 19 of 20 fresh
# seeds each. At a few percent per seed, "every final network of 5" (even "4 of 5") fails some CI
# runs by chance. A user deploys the best checkpoint by validation (`jaxtrade export` takes
# "best"): that network held >= 400 on 100 of 100 fresh seeds, so it must on every key here.
# The final network must still reach the median goal: 3 of 5 keys >= 475.
# A checkpoint every 5 chunks of 1,000 updates (50,000 env steps), scored on 5 validation
# episodes; the test episodes are other ones.
SELECT_EVERY = 5


def greedy_policy_solves_cartpole(name: str, prioritized: bool) -> None:
    """After 500,000 env steps, 10 fresh test episodes per seed: the best checkpoint by
    validation holds the goal of issue 19 (median >= 475, every seed >= 400) and the final
    network the median goal (the comment above says why not every seed), with uniform and
    prioritized replay.

    Why passing does not rest on lucky keys: the keys are split(key(20261203), 5), fixed before
    any run with them and never used to choose a setting; the defaults (TUNED_ON) were chosen
    on other keys with scripts/bench_learning.py, where every seed held the goal
    (BENCHMARKS.md). A seed that fails here is one the tuning keys did not see, not one they
    were picked to avoid."""
    env, env_params = gymnax.make("CartPole-v1")
    data = {"name": name, "total_steps": 500_000, "prioritized": prioritized}
    config = agents.config_from_dict(data)
    program = make_train_select_and_evaluate(config, env, env_params, 10, SELECT_EVERY)
    keys = jax.random.split(jax.random.key(20_261_203), 5)
    out = jax.jit(jax.vmap(program))(keys)
    assert np.asarray(out.metrics["dqn/env_steps"])[0, -1] <= 500_000
    final, selected = np.asarray(out.final).mean(axis=1), np.asarray(out.selected).mean(axis=1)
    print(name, "prioritized" if prioritized else "", "final", final, "selected", selected,
          "after chunk", np.asarray(out.selected_chunk), TUNED_ON[name, prioritized])
    assert np.median(selected) >= 475.0, selected
    assert selected.min() >= 400.0, selected
    assert np.median(final) >= 475.0, final  # the last network learned too, with margin


@pytest.mark.slow
@pytest.mark.parametrize("prioritized", [False, True])
def test_defaults_greedy_policy_solves_cartpole(prioritized: bool) -> None:
    """DQN: greedy_policy_solves_cartpole."""
    greedy_policy_solves_cartpole("dqn", prioritized)
