"""The numpy actor equals the flax ActorCritic's policy head for every torso, bar for bar."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.common.distributions import ActionSpec
from agents.common.networks import ActorCritic, NetworkConfig, network_carry
from jaxtrade.live.errors import BundleError
from jaxtrade.live.network import ActorNetwork
from jaxtrade.xla import jit_light

WINDOW, FEATS, STATE = 8, 3, 5


def _flat_actor_params(params) -> dict[str, np.ndarray]:
    flat = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(params["params"]):
        name = "/".join(str(p.key) for p in path)
        if not name.startswith(("critic_torso", "value_head")):
            flat[name] = np.asarray(leaf)
    return flat


# Every torso once; window layout for cnn/attention; shared torsos on the cheap ones;
# LayerNorm in the MLP layers of an MLP and a CNN head.
CASES = [
    ("mlp", 1, True, False),
    ("mlp", 1, False, True),
    ("cnn", 2, False, True),
    ("attention", 1, False, False),
    ("gru", 1, True, False),
    ("lstm", 1, False, False),
]


@pytest.mark.parametrize("torso, obs_ndim, shared, layer_norm", CASES)
def test_numpy_actor_matches_flax(torso, obs_ndim, shared, layer_norm):
    cfg = NetworkConfig(
        layer_norm=layer_norm,
        torso=torso,
        activation="gelu" if torso == "cnn" else "tanh",
        shared_torso=shared,
        window_shape=(WINDOW, FEATS) if obs_ndim == 1 else None,
        num_state_features=STATE if obs_ndim == 1 else 0,
        attention_layers=2,
        recurrent_size=16,
        hidden_sizes=(32, 24),
    )
    obs_shape = (WINDOW * FEATS + STATE,) if obs_ndim == 1 else (WINDOW, FEATS + STATE)
    net = ActorCritic(cfg, ActionSpec("discrete", num_actions=3), obs_ndim)
    steps = 6
    key = jax.random.PRNGKey(3)
    obs = jax.random.normal(key, (steps, 1) + obs_shape)
    resets = jnp.zeros((steps, 1), bool).at[0, 0].set(True)
    # One compiled program each: eager flax would compile every primitive separately.
    params = jit_light(net.init)(key, network_carry(cfg, (1,)), obs[:1], resets[:1])
    # Non-trivial head weights (the 0.01 init would hide mistakes in the torso).
    params = jax.tree.map(lambda x: x * 3.0 if x.ndim == 2 and x.shape[-1] == 3 else x, params)
    logits_fn = jax.jit(lambda p, c, o, r: net.apply(p, c, o, r)[1].logits)
    expected = np.asarray(logits_fn(params, network_carry(cfg, (1,)), obs, resets))[:, 0]

    actor = ActorNetwork(
        {"config": {**cfg.__dict__, "window_shape": cfg.window_shape}, "obs_shape": obs_shape},
        _flat_actor_params(params),
    )
    carry = actor.initial_carry()
    for t in range(steps):  # the carry flows bar to bar like the scanned flax cell
        logits, carry = actor.forward(np.asarray(obs[t, 0]), carry)
        log_probs = logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
        np.testing.assert_allclose(log_probs, expected[t], rtol=2e-4, atol=2e-5)
        assert int(np.argmax(logits)) == int(np.argmax(expected[t]))


def test_unknown_torso_or_mismatched_weights_are_refused():
    with pytest.raises(BundleError, match="not supported"):
        ActorNetwork({"config": {"torso": "mamba"}, "obs_shape": [4]}, {})
    with pytest.raises(BundleError, match="lack"):
        ActorNetwork({"config": {"torso": "mlp"}, "obs_shape": [4]}, {"x": np.zeros(1)})
    bad = {
        "actor_torso/MLP_0/Dense_0/kernel": np.zeros((4, 8), np.float32),
        "actor_torso/MLP_0/Dense_0/bias": np.zeros(8, np.float32),
        "actor_torso/MLP_0/Dense_1/kernel": np.zeros((9, 8), np.float32),
        "actor_torso/MLP_0/Dense_1/bias": np.zeros(8, np.float32),
        "policy_head/kernel": np.zeros((8, 3), np.float32),
        "policy_head/bias": np.zeros(3, np.float32),
    }
    with pytest.raises(BundleError, match="do not fit"):
        ActorNetwork({"config": {"torso": "mlp", "hidden_sizes": [8, 8]}, "obs_shape": [4]}, bad)
