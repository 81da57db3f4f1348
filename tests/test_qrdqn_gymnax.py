"""QR-DQN solves gymnax CartPole-v1 with its defaults, uniform and prioritized replay: the
proof of tests/test_dqn_gymnax.py (its docstrings say how the keys were drawn, which network
must hold the goal on every key and why one final network of 5 may dip), in a module of its
own so that it runs beside DQN's."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_dqn_gymnax import greedy_policy_solves_cartpole  # noqa: E402


@pytest.mark.slow
@pytest.mark.parametrize("prioritized", [False, True])
def test_defaults_greedy_policy_solves_cartpole(prioritized: bool) -> None:
    """QR-DQN: greedy_policy_solves_cartpole."""
    greedy_policy_solves_cartpole("qrdqn", prioritized)
