"""`network.observe`: a network sees only the features it names, in training, the numpy runner
and the ONNX graph alike, and the names resolve against the market (or fail, listing them).

Layouts: a flat observation W*F + S (the window row-major, then S portfolio entries) and a
[W, F + S] window (the portfolio repeated on every row). The selection keeps column 1 of
F = 3 features on every bar; the portfolio entries always stay.
"""

from __future__ import annotations

import contextlib
import io
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import agents
from agents.common.distributions import ActionSpec
from agents.common.networks import (
    Actor,
    ActorCritic,
    CriticEnsemble,
    NetworkConfig,
    make_q_network,
    network_carry,
)
from experiments.common import observe_columns
from jaxtrade.errors import ConfigError
from jaxtrade.export import flatten_actor_params, flatten_q_critics
from jaxtrade.live.errors import BundleError
from jaxtrade.live.network import ActorNetwork
from jaxtrade.xla import jit_light

WINDOW, FEATS, STATE = 4, 3, 2
OBSERVED = 1  # the one feature column the networks keep


def _layout(obs_ndim: int, **overrides) -> tuple[NetworkConfig, tuple[int, ...]]:
    """A config observing feature OBSERVED, and its observation shape."""
    settings = {"hidden_sizes": (16,), "recurrent_size": 8, "cnn_channels": (4,), **overrides}
    if obs_ndim == 1:
        cfg = NetworkConfig(window_shape=(WINDOW, FEATS), num_state_features=STATE,
                            observe=("b",), observe_columns=(OBSERVED,), **settings)
        return cfg, (WINDOW * FEATS + STATE,)
    # Window layout: the portfolio columns (F..F+S) are among the kept ones.
    columns = (OBSERVED, *range(FEATS, FEATS + STATE))
    cfg = NetworkConfig(observe=("b",), observe_columns=columns, **settings)
    return cfg, (WINDOW, FEATS + STATE)


def _changed(obs: np.ndarray, obs_ndim: int, what: str | int) -> np.ndarray:
    """`obs` [N, *obs_shape] with feature column `what` (on every bar) or the portfolio
    ("state") replaced by other random values."""
    out = obs.copy()
    noise = np.random.default_rng(9).standard_normal(obs.shape).astype(np.float32) * 2.0
    if obs_ndim == 2:
        cols = slice(FEATS, FEATS + STATE) if what == "state" else slice(what, what + 1)
        out[..., cols] = noise[..., cols]
        return out
    if what == "state":
        out[:, WINDOW * FEATS:] = noise[:, WINDOW * FEATS:]
        return out
    window = out[:, : WINDOW * FEATS].reshape(len(out), WINDOW, FEATS)
    window[..., what] = noise[:, : WINDOW * FEATS].reshape(len(out), WINDOW, FEATS)[..., what]
    out[:, : WINDOW * FEATS] = window.reshape(len(out), -1)
    return out


def _apply_fn(kind: str, cfg: NetworkConfig, obs_ndim: int, obs_shape: tuple[int, ...]):
    """(params, jitted obs [N, *obs_shape] -> outputs) of one network kind."""
    key = jax.random.key(1)
    zeros = jnp.zeros((1,) + obs_shape)
    if kind == "actor_critic":
        net = ActorCritic(cfg, ActionSpec("discrete", num_actions=3), obs_ndim)
        carry = network_carry(cfg, (1,))
        params = jit_light(net.init)(key, carry, zeros[None], jnp.zeros((1, 1), bool))

        def apply(p, obs):  # every row its own one-step episode: the value and logits
            steps = obs.shape[0]
            _, dist, value = net.apply(p, network_carry(cfg, (steps,)), obs[None],
                                       jnp.ones((1, steps), bool))
            return jnp.concatenate([dist.logits[0], value[0][:, None]], axis=-1)
    elif kind == "q":
        net = make_q_network(cfg, 3, obs_ndim, "dueling", 4)
        params = jit_light(net.init)(key, zeros)
        apply = net.apply
    elif kind == "actor":
        net = Actor(cfg, 1, obs_ndim, log_std=True)
        params = jit_light(net.init)(key, zeros)
        apply = lambda p, obs: jnp.concatenate(net.apply(p, obs), axis=-1)  # noqa: E731
    else:  # twin Q critics that take the action (the mlp one joins it to the observation)
        net = CriticEnsemble(cfg, obs_ndim)
        params = jit_light(net.init)(key, zeros, jnp.zeros((1, 1)))
        apply = lambda p, obs: net.apply(p, obs, jnp.full((obs.shape[0], 1), 0.3))  # noqa: E731
    # Heads well away from their small init, so a dropped input would show.
    params = jax.tree.map(lambda x: x * 5.0 if x.ndim >= 2 else x, params)
    return params, jax.jit(apply)


NETWORKS = [
    ("actor_critic", "mlp", 1),
    ("actor_critic", "cnn", 1),
    ("actor_critic", "gru", 2),
    ("actor_critic", "attention", 2),
    ("q", "mlp", 2),
    ("q", "attention", 1),
    ("actor", "mlp", 1),
    ("critic", "mlp", 1),
    ("critic", "cnn", 2),
]


@pytest.mark.parametrize("kind, torso, obs_ndim", NETWORKS)
def test_unobserved_features_leave_every_network_unchanged(kind, torso, obs_ndim):
    cfg, obs_shape = _layout(obs_ndim, torso=torso)
    params, apply = _apply_fn(kind, cfg, obs_ndim, obs_shape)
    obs = np.random.default_rng(0).standard_normal((16,) + obs_shape).astype(np.float32)
    base = np.asarray(apply(params, obs))
    for hidden in sorted({0, 1, 2} - {OBSERVED}):
        np.testing.assert_array_equal(np.asarray(apply(params, _changed(obs, obs_ndim, hidden))),
                                      base)
    # The observed feature and the portfolio entries do reach the output.
    for seen in (OBSERVED, "state"):
        moved = np.abs(np.asarray(apply(params, _changed(obs, obs_ndim, seen))) - base)
        assert moved.max() > 1e-3, (seen, moved.max())


def test_the_same_network_without_a_selection_sees_every_feature():
    # The control of the test above: the parameters of a 1-of-3 selection have a narrower
    # input layer, so compare against an unselected network of the same kind.
    cfg = NetworkConfig(window_shape=(WINDOW, FEATS), num_state_features=STATE,
                        hidden_sizes=(16,))
    params, apply = _apply_fn("actor", cfg, 1, (WINDOW * FEATS + STATE,))
    obs = np.random.default_rng(0).standard_normal((16, WINDOW * FEATS + STATE)).astype(
        np.float32)
    base = np.asarray(apply(params, obs))
    assert np.abs(np.asarray(apply(params, _changed(obs, 1, 0))) - base).max() > 1e-3
    kernel = params["params"]["actor_torso"]["MLP_0"]["Dense_0"]["kernel"]
    assert kernel.shape[0] == WINDOW * FEATS + STATE
    selected, _ = _layout(1)
    narrow, _ = _apply_fn("actor", selected, 1, (WINDOW * FEATS + STATE,))
    assert narrow["params"]["actor_torso"]["MLP_0"]["Dense_0"]["kernel"].shape[0] == (
        WINDOW + STATE)


# --- the numpy runner and the ONNX graph -----------------------------------------------------

# The linear policy (no hidden layer: flax stores no torso parameters) is the planted
# ensemble's members' network.
PARITY = [("mlp", 1, (16,)), ("mlp", 2, ()), ("cnn", 1, (16,)), ("attention", 2, (16,)),
          ("lstm", 1, (16,))]


@pytest.mark.parametrize("torso, obs_ndim, hidden", PARITY)
def test_runner_and_onnx_forward_equal_the_jax_network_with_a_selection(torso, obs_ndim, hidden):
    cfg, obs_shape = _layout(obs_ndim, torso=torso, attention_layers=1, hidden_sizes=hidden)
    levels = [-1.0, 0.0, 1.0]
    net = ActorCritic(cfg, ActionSpec("discrete", num_actions=len(levels)), obs_ndim)
    params = jit_light(net.init)(jax.random.key(4), network_carry(cfg, (1,)),
                               jnp.zeros((1, 1) + obs_shape), jnp.zeros((1, 1), bool))
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: x * 30.0 if "policy_head" in jax.tree_util.keystr(path) else x, params)
    bars = 24
    obs = np.random.default_rng(2).standard_normal((bars,) + obs_shape).astype(np.float32)
    resets = jnp.zeros((bars, 1), bool).at[0, 0].set(True)
    _, dist, values = jax.jit(net.apply)(params, network_carry(cfg, (1,)),
                                         jnp.asarray(obs)[:, None], resets)
    expected, values = np.asarray(dist.logits)[:, 0], np.asarray(values)[:, 0]
    description = {"config": dict(cfg.__dict__), "obs_shape": list(obs_shape),
                   "family": "actor_critic"}
    weights = flatten_actor_params(params, keep_value_head=True)
    reference = ActorNetwork(description, weights)
    carry, heads = reference.initial_carry(), []
    for t in range(bars):
        head, value, carry = reference.forward_with_value(obs[t], carry)
        log_probs = head - np.log(np.exp(head - head.max()).sum()) - head.max()
        np.testing.assert_allclose(log_probs, expected[t], rtol=2e-4, atol=2e-5)
        assert value == pytest.approx(float(values[t]), rel=1e-4, abs=1e-4)
        heads.append(head)
    assert len({int(np.argmax(h)) for h in heads}) >= 2  # decisions that vary

    ort = pytest.importorskip("onnxruntime", reason="the [onnx] extra is not installed")
    pytest.importorskip("onnx", reason="the [onnx] extra is not installed")
    from jaxtrade.export_onnx import build_policy_model

    model, section = build_policy_model(description, {"mode": "discrete",
                                                      "discrete_levels": levels},
                                        {"max_leverage": 1.0}, weights)
    assert any(node.op_type == "Gather" and "observe_columns" in node.input[1]
               for node in model.graph.node)
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    state = {name: np.zeros((1, 8), np.float32) for name in section["state"]}
    for t in range(bars):
        out = dict(zip(names, session.run(None, {"observation": obs[t][None], **state})))
        state = {name: out[next_name] for name, next_name in section["state"].items()}
        np.testing.assert_allclose(out["logits"][0], heads[t], rtol=1e-5, atol=1e-5)


def test_runner_replay_critic_and_q_network_apply_the_selection():
    """The replay actor-critic's critics (the mlp one joins the action to the selected
    observation) and a Q network: the runner equals flax, and ignores unobserved features."""
    cfg, obs_shape = _layout(1, continuous_squash="tanh")
    actor, critic = Actor(cfg, 1, 1, log_std=True), CriticEnsemble(cfg, 1)
    zeros = jnp.zeros((1,) + obs_shape)
    actor_params = jit_light(actor.init)(jax.random.key(2), zeros)
    critic_params = jit_light(critic.init)(jax.random.key(3), zeros, jnp.zeros((1, 1)))
    q_weights, count = flatten_q_critics(critic_params)
    description = {"config": dict(cfg.__dict__), "obs_shape": list(obs_shape),
                   "family": "actor_critic",
                   "q_critic": {"num_critics": count, "reduce": "min", "takes_action": True}}
    reference = ActorNetwork(description, {**flatten_actor_params(actor_params), **q_weights})
    obs = np.random.default_rng(4).standard_normal((8,) + obs_shape).astype(np.float32)
    mean = np.asarray(actor.apply(actor_params, jnp.asarray(obs))[0])
    flax_q = np.asarray(critic.apply(critic_params, jnp.asarray(obs), jnp.tanh(mean))
                        .min(axis=0)[:, 0])
    numpy_q = [reference.forward_with_value(o)[1] for o in obs]
    np.testing.assert_allclose(numpy_q, flax_q, rtol=1e-5, atol=1e-5)
    hidden = _changed(obs, 1, 0)
    assert [reference.forward_with_value(o)[1] for o in hidden] == numpy_q

    net = make_q_network(cfg, 3, 1, "q", 0)
    q_params = jit_light(net.init)(jax.random.key(5), zeros)
    q_runner = ActorNetwork({"config": dict(cfg.__dict__), "obs_shape": list(obs_shape),
                             "family": "q", "head": "q"}, flatten_actor_params(q_params))
    np.testing.assert_allclose(np.stack([q_runner.forward(o)[0] for o in obs]),
                               np.asarray(net.apply(q_params, jnp.asarray(obs))), atol=1e-5)


def test_runner_refuses_columns_outside_the_window():
    cfg, obs_shape = _layout(1)
    description = {"config": {**cfg.__dict__, "observe_columns": [FEATS]},
                   "obs_shape": list(obs_shape)}
    with pytest.raises(BundleError, match="observe_columns"):
        ActorNetwork(description, {})


# --- resolution: names -> columns, and the errors ---------------------------------------------


def _env(layout: str, num_assets: int = 1):
    names = ("zscore_log_return_20", "zscore_log_volume_20", "rvol_20")
    portfolio = 3 * num_assets + 2
    row = num_assets * len(names)
    shape = (WINDOW * row + portfolio,) if layout == "flat" else (WINDOW, row + portfolio)
    env = types.SimpleNamespace(num_assets=num_assets, num_features=len(names),
                                obs_layout=layout, window_bars=WINDOW, observation_shape=shape)
    params = types.SimpleNamespace(market=types.SimpleNamespace(
        meta=types.SimpleNamespace(feature_names=names)))
    return env, params


def test_names_resolve_to_the_columns_of_every_asset_and_keep_the_portfolio():
    env, params = _env("flat")
    assert observe_columns(["rvol_20", "zscore_log_return_20"], env, params, "network") == [0, 2]
    env, params = _env("flat", num_assets=2)  # rows are asset-major: asset a's f is a F + f
    assert observe_columns(["zscore_log_volume_20"], env, params, "network") == [1, 4]
    env, params = _env("window", num_assets=2)  # the 3 A + 2 = 8 portfolio columns stay
    assert observe_columns(["zscore_log_volume_20"], env, params, "network") == [
        1, 4, *range(6, 14)]


def test_an_unknown_name_lists_the_markets_features():
    env, params = _env("flat")
    with pytest.raises(ConfigError, match="agent.ppo.network.observe names unknown feature") as err:
        observe_columns(["zscore_volume_20"], env, params, "agent.ppo.network")
    assert "zscore_log_return_20, zscore_log_volume_20, rvol_20" in str(err.value)
    with pytest.raises(ConfigError, match="only the trading env"):
        observe_columns(["x"], types.SimpleNamespace(), types.SimpleNamespace(), "network")


def test_settings_that_cannot_hold_a_selection_are_refused():
    with pytest.raises(ConfigError, match="names a feature twice"):
        NetworkConfig(observe=("a", "a"))
    with pytest.raises(ConfigError, match="not allowed for mcts"):
        # (checked when the agent is made, before anything compiles)
        agents.config_from_dict({"name": "mcts", "network": {"observe": ["rvol_20"]}}).check()
    # Names that never met a market are not silently ignored by the network.
    cfg = NetworkConfig(observe=("rvol_20",))
    net = ActorCritic(cfg, ActionSpec("discrete", num_actions=3), 1)
    with pytest.raises(ConfigError, match="was not resolved"):
        net.init(jax.random.key(0), (), jnp.zeros((1, 1, 4)), jnp.zeros((1, 1), bool))


def test_the_cli_refuses_an_unknown_feature_name_in_one_line(tmp_path, capsys):
    from live_helpers import real_frame

    from jaxtrade.cli import main

    csv = tmp_path / "bars.csv"
    real_frame(bars=300).write_csv(csv)
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["train", "agent=ensemble", "agent.members=[ppo,cvar_ppo]", "data=csv",
                     f"data.path={csv}", "logger=none", "train.total_steps=1024",
                     "features.features=[{name:zscore,column:log_return,windows:[20]}]",
                     "agent.cvar_ppo.network.observe=[zscore_log_return_5]",
                     f"run_dir={tmp_path / 'run'}"])
    assert code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "agent.cvar_ppo.network.observe" in err[0], err
    assert "zscore_log_return_20" in err[0] and "Traceback" not in err[0]


@pytest.mark.parametrize("layout", ["flat", "window"])
def test_a_runs_config_resolves_single_agent_and_member_selections(tmp_path, layout):
    """experiments.common.agent_config (what train, backtest, export and resume build the
    agent from) turns the names of a composed run config into columns, for a single agent's
    `network.observe` and an ensemble member's `agent.<member>.network.observe`."""
    from live_helpers import real_frame

    from experiments.common import agent_config, build_env, build_market
    from jaxtrade.config import compose_run

    csv = tmp_path / "bars.csv"
    real_frame(bars=300).write_csv(csv)
    spec = ("features.features=[{name:zscore,column:log_return,windows:[20]},"
            "{name:zscore,column:log_volume,windows:[20]},{name:rsi}]")
    common = ["data=csv", f"data.path={csv}", spec, f"env.obs_layout={layout}",
              "env.window_bars=4"]
    cfg = compose_run([*common, "agent=ppo", "network.observe=[rsi_14,zscore_log_return_20]"])
    market = build_market(cfg, real_frame(bars=300))
    assert market.meta.feature_names == ("zscore_log_return_20", "zscore_log_volume_20",
                                         "rsi_14")
    env, env_params = build_env(cfg, market)
    network = agent_config(cfg, env, env_params, 8).network
    portfolio = [] if layout == "flat" else list(range(3, env.observation_shape[-1]))
    assert list(network.observe_columns) == [0, 2, *portfolio]
    if layout == "flat":  # the flat window's layout, for the selection to read it
        assert network.window_shape == (4, 3)
        assert network.num_state_features == env.observation_shape[0] - 12
    assert cfg["network"]["observe"] == ["rsi_14", "zscore_log_return_20"]  # config.yaml: names

    cfg = compose_run([*common, "agent=ensemble", "agent.members=[ppo,cvar_ppo]",
                       "agent.cvar_ppo.network.observe=[zscore_log_volume_20]"])
    config = agent_config(cfg, env, env_params, 8)
    assert list(config.cvar_ppo.network.observe_columns) == [1, *portfolio]
    assert config.ppo.network.observe_columns == ()  # the other member sees everything
