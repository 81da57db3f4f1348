"""A 1,000,000-transition DQN buffer on the default trading configuration fits in 100 MB.

The default observation is 1,989 floats (32 bars x 62 features + 5 portfolio values); stored
raw, a million transitions (obs and next_obs) would take ~16 GB. The buffer keeps the bar
index and the portfolio part instead (agents/common/replay.py). Bytes come from the shapes of
`agent.init`'s state under `jax.eval_shape`, so nothing is allocated.
"""

from __future__ import annotations

import jax
import numpy as np

import agents
from experiments import common

TRANSITIONS = 1_000_000
LIMIT_BYTES = 100 * 10**6


def test_million_transition_default_trading_buffer_is_at_most_100_mb() -> None:
    cfg = common.compose([])
    frame = common.load_frame(cfg["data"])
    env, env_params = common.build_env(cfg, common.build_market(cfg, frame))
    assert common.observation_size(env, env_params) == 1_989  # the default trading obs

    config = agents.config_from_dict({"name": "dqn", "buffer_size": TRANSITIONS})
    agent = agents.make_agent(config, env, env_params)
    state = jax.eval_shape(lambda key: agent.init(key, None, env_params), jax.random.key(0))
    leaves = jax.tree.leaves(state.buffer)
    stored = sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in leaves)

    # The buffer really holds a million transitions (num_envs rows of capacity each, rounded
    # down to whole rows) ...
    rows, capacity = state.buffer.experience["action"].shape
    assert rows == config.num_envs and rows * capacity > TRANSITIONS - rows
    # ... in at most 100 MB, where raw float32 observations would take ~16 GB.
    raw = TRANSITIONS * 2 * 1_989 * 4
    assert stored <= LIMIT_BYTES, f"{stored / 1e6:.1f} MB"
    assert raw / stored > 100
