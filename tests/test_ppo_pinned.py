"""A fixed-seed PPO / CVaR-PPO run gives the metrics it gave before the shared agent core.

`tests/data/ppo_pinned_metrics.json` was written by the PPO of the commit before PPO moved
onto `agents/common` (its own rollout, GAE and loss); the move must not change one number
beyond float noise. Regenerate it only for an intended change of PPO's math.
"""

from __future__ import annotations

import json
from pathlib import Path

import gymnax
import jax
import numpy as np
import pytest

import agents
from agents import CVaRPPOConfig, PPOConfig

PINNED = json.loads((Path(__file__).parent / "data" / "ppo_pinned_metrics.json").read_text())
SIZES = dict(num_envs=4, rollout_len=32, total_steps=4 * 32 * 6, updates_per_chunk=3)


@pytest.mark.parametrize("name,env_name,config", [
    ("ppo", "CartPole-v1", PPOConfig(**SIZES)),
    ("ppo_pendulum", "Pendulum-v1", PPOConfig(**SIZES)),
    ("cvar_ppo", "CartPole-v1", CVaRPPOConfig(**SIZES)),
])
def test_fixed_seed_metrics_unchanged(name, env_name, config):
    env, env_params = gymnax.make(env_name)
    metrics = agents.make_train(config, env, env_params)(jax.random.key(3)).metrics
    # The pinned file names the metrics as they were before they gained the "ppo/" prefix.
    expected = {f"ppo/{key}": values for key, values in PINNED[name].items()}
    assert set(metrics) == set(expected)
    for key, values in expected.items():
        np.testing.assert_allclose(np.asarray(metrics[key]), np.asarray(values), rtol=2e-5,
                                   atol=1e-6, err_msg=f"{name}: {key}")
