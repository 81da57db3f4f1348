"""The agent protocol (agents/common/types.py) for every registered agent.

`update` is the unit `run_chunk` scans; `policy` is the one batched call every consumer acts
through and `act` its one-observation form; `env_params` is a required argument everywhere;
metrics are named `<family>/<name>`. Each agent runs a few updates of a tiny configuration on
a gymnax env (CartPole for discrete actions, Pendulum for continuous ones), and once on
jaxtrade's trading env, where the policy's target weights are the env's. MCTS plans on the
trading env's accounting only, so its cases run there.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import agents
import envs
from agents.common.types import REQUIRED_METRICS, PolicyOutput, metric_name
from jaxtrade.market import from_arrays
from jaxtrade.xla import compile_options, jit_light

UPDATES = 4
NET = {"hidden_sizes": [8, 8]}
OFF_POLICY = {
    "num_envs": 2,
    "rollout_len": 2,
    "total_steps": 2 * 2 * UPDATES * 2,
    "updates_per_chunk": UPDATES,
    "learning_starts": 8,
    "batch_size": 4,
    "buffer_size": 64,
    "network": NET,
}
ON_POLICY = {
    "num_envs": 2,
    "rollout_len": 8,
    "total_steps": 2 * 8 * UPDATES * 2,
    "updates_per_chunk": UPDATES,
    "num_minibatches": 2,
    "update_epochs": 1,
    "network": NET,
}
# Two members, one discrete (PPO) and one continuous (SAC), on the trading env.
ENSEMBLE = {
    "members": ["ppo", "sac"],
    "num_envs": 2,
    "total_steps": 2 * 8 * UPDATES * 2,
    "updates_per_chunk": UPDATES,
    "ppo": {k: v for k, v in ON_POLICY.items() if k not in ("num_envs", "total_steps",
                                                               "updates_per_chunk")},
    "sac": {k: v for k, v in OFF_POLICY.items() if k not in ("num_envs", "total_steps",
                                                                "updates_per_chunk")},
}
# name -> (config overrides, family, discrete actions, beliefs it reports)
CASES = {
    "ppo": (ON_POLICY, "ppo", True, {"logits", "value"}),
    "cvar_ppo": (ON_POLICY, "ppo", True, {"logits", "value"}),
    "dqn": (OFF_POLICY, "dqn", True, {"q_values"}),
    "qrdqn": ({**OFF_POLICY, "num_quantiles": 5}, "dqn", True, {"q_values", "quantiles"}),
    "sac": (OFF_POLICY, "sac", False, set()),
    "sac_discrete": (OFF_POLICY, "sac", True, {"logits"}),
    "td3": (OFF_POLICY, "td3", False, set()),
    "ddpg": (OFF_POLICY, "td3", False, set()),
    "mcts": ({**OFF_POLICY, "num_simulations": 4}, "mcts", True, {"logits", "value"}),
    "ensemble": (ENSEMBLE, "ensemble", False, set()),
}
# Agents that need jaxtrade's trading env (they plan on its accounting or combine target
# weights).
TRADING_ONLY = {"mcts", "ensemble"}
BELIEFS = ("logits", "value", "q_values", "quantiles")


def test_every_registered_agent_is_covered() -> None:
    assert set(CASES) == set(agents.AGENTS)


def _agent(name: str, env, env_params):
    overrides, *_ = CASES[name]
    return agents.make_agent(agents.config_from_dict({"name": name, **overrides}), env, env_params)


def _small_trading_market():
    rng = np.random.default_rng(0)
    log_returns = 0.01 * rng.standard_normal((200, 1))
    close = 100.0 * np.exp(np.cumsum(log_returns, axis=0))
    splits = np.array([[0, 120], [120, 160], [160, 200]])
    return from_arrays(close, features=log_returns[:, :, None], splits=splits)


def _gymnax(name: str):
    """The env an agent's protocol cases run on: gymnax's, or the trading env for agents that
    plan on its accounting (mcts, discrete) or combine target weights (ensemble)."""
    if name == "ensemble":
        return envs.make("trading", _market(), window_bars=4, action_mode="continuous")
    if name in TRADING_ONLY:
        return envs.make("trading", _small_trading_market(), window_bars=4)
    return gymnax.make("CartPole-v1" if CASES[name][2] else "Pendulum-v1")


@functools.cache
def _market():
    rng = np.random.default_rng(0)
    log_returns = 0.01 * rng.standard_normal((200, 2))
    close = 100.0 * np.exp(np.cumsum(log_returns, axis=0))
    splits = np.array([[0, 120], [120, 160], [160, 200]])
    return from_arrays(close, features=log_returns[:, :, None], splits=splits)


class Trained(NamedTuple):
    name: str
    env: Any
    env_params: Any
    agent: Any
    init: Callable[..., Any]  # jit_light(agent.init), compiled for (key, None, env_params)
    state: Any  # the initial state
    after: Any  # the state after one chunk
    metrics: dict[str, np.ndarray]  # the chunk's metrics


def _strongly_typed(tree: Any) -> Any:
    """`tree` with its weakly typed leaves made strong (the same dtype and values). gymnax's
    Pendulum reset leaves `last_u` a weak float that the first step makes strong: `update`
    called on the initial state and then on its own output would compile twice."""
    return jax.tree.map(
        lambda x: jnp.asarray(x, dtype=x.dtype) if jax.typeof(x).weak_type else x, tree
    )


@pytest.fixture(scope="module", params=sorted(CASES))
def trained(request) -> Trained:
    """One agent of each registered kind, its initial state and one chunk of updates: every
    test of that agent reads these (compiling an agent's programs is most of this file's
    time)."""
    name = request.param
    env, env_params = _gymnax(name)
    agent = _agent(name, env, env_params)
    init = jit_light(agent.init)
    state = _strongly_typed(init(jax.random.key(0), None, env_params))
    # A chunk of a few updates: compiled the way a short run's is (train.fast_compile=true)
    after, metrics = jax.jit(agent.run_chunk, compiler_options=compile_options())(state,
                                                                                env_params)
    return Trained(name, env, env_params, agent, init, state, after, jax.device_get(metrics))


def test_updates_one_by_one_equal_run_chunk(trained) -> None:
    name, env_params, agent = trained.name, trained.env_params, trained.agent
    state, after, chunk_metrics = trained.state, trained.after, trained.metrics
    update = jax.jit(agent.update, compiler_options=compile_options())
    steps = []
    for _ in range(agent.updates_per_chunk):
        state, metrics = update(state, env_params)
        steps.append(jax.device_get(metrics))
    assert set(steps[0]) == set(chunk_metrics)
    for key, values in chunk_metrics.items():
        np.testing.assert_allclose(
            [m[key] for m in steps], values, rtol=1e-5, atol=1e-6, err_msg=f"{name}: {key}"
        )
    for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(after)):
        if jax.dtypes.issubdtype(got.dtype, jax.dtypes.prng_key):
            got, want = jax.random.key_data(got), jax.random.key_data(want)
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)
    assert int(agent.env_steps(state)) == agent.updates_per_chunk * agent.steps_per_update


def test_metrics_are_named_under_the_agents_family(trained) -> None:
    name, agent, metrics = trained.name, trained.agent, trained.metrics
    family = CASES[name][1]
    assert agent.family == family
    assert all(key.startswith(f"{family}/") for key in metrics), sorted(metrics)
    assert set(REQUIRED_METRICS) <= {metric_name(key) for key in metrics}
    assert all(
        np.asarray(v).dtype == np.float32 and np.shape(v) == (UPDATES,) for v in metrics.values()
    )
    np.testing.assert_array_equal(
        metrics[f"{family}/env_steps"], agent.steps_per_update * np.arange(1, UPDATES + 1)
    )


def _batch(env, env_params, size: int):
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(
        jax.random.split(jax.random.key(5), size), env_params
    )
    return obs, env_state


def _policy_calls(agent) -> Callable[..., Any]:
    """Every policy call of the test below as one compiled program: the greedy policy on a
    batch, and per `deterministic` flag the policy on a batch of one observation and `act` on
    that observation, with the same key. One compile instead of five: XLA computes what the
    calls share (the network, MCTS's search) once."""

    def calls(params, env_params, batch, one, row):
        obs, env_state, carry = batch
        out = agent.policy(params, obs, env_state, env_params, jax.random.key(1), carry, True)
        key = jax.random.key(2)
        singles = {
            deterministic: (
                agent.policy(params, *one[:2], env_params, key, one[2], deterministic),
                agent.act(params, *row[:2], env_params, key, row[2], deterministic),
            )
            for deterministic in (True, False)
        }
        return out, singles

    return jax.jit(calls)


def test_policy_output_per_agent_and_act_is_its_one_observation_form(trained) -> None:
    name, env, env_params, agent = trained.name, trained.env, trained.env_params, trained.agent
    _, _, discrete, beliefs = CASES[name]
    params = agent.policy_params(trained.after)
    batch = 3
    obs, env_state = _batch(env, env_params, batch)
    carry = jax.tree.map(lambda c: jnp.stack([c] * batch), agent.init_carry())
    calls = _policy_calls(agent)

    def call(i: int):
        """(the batch's greedy output, {deterministic: (policy on observation i as a batch of
        one, act on observation i)})."""
        one = (obs[i : i + 1], jax.tree.map(lambda x: x[i : i + 1], env_state),
               jax.tree.map(lambda c: c[i : i + 1], carry))
        row = (obs[i], jax.tree.map(lambda x: x[i], env_state), agent.init_carry())
        return calls(params, env_params, (obs, env_state, carry), one, row)

    out, _ = call(0)
    assert isinstance(out, PolicyOutput)
    action_space = env.action_space(env_params)
    if discrete:
        assert out.action.shape == (batch,)
        assert np.all((np.asarray(out.action) >= 0) & (np.asarray(out.action) < action_space.n))
    else:
        assert out.action.shape == (batch, *action_space.shape)
        assert np.all(np.abs(np.asarray(out.action)) <= 2.0 + 1e-6)  # Pendulum's torque box
    if name in TRADING_ONLY:
        assert out.target_weights.shape == (batch, env.num_assets)
        if name == "ensemble":
            assert out.ensemble.weights.shape == (batch, len(CASES[name][0]["members"]))
        else:
            want = jax.vmap(env.action_to_weights, in_axes=(0, None))(out.action, env_params)
            np.testing.assert_array_equal(out.target_weights, want)
    else:
        assert out.target_weights is None  # gymnax envs have no portfolio
    for field in BELIEFS:
        assert (getattr(out, field) is not None) == (field in beliefs), (name, field)
    num_actions = getattr(action_space, "n", 0)
    if "logits" in beliefs:
        assert out.logits.shape == (batch, num_actions)
    if "value" in beliefs:
        assert out.value.shape == (batch,)
    if "q_values" in beliefs:
        assert out.q_values.shape == (batch, num_actions)
        np.testing.assert_array_equal(out.action, np.argmax(out.q_values, axis=-1))
    if "quantiles" in beliefs:
        assert out.quantiles.shape == (batch, num_actions, 5)
    if "logits" in beliefs and name == "sac_discrete":
        np.testing.assert_array_equal(out.action, np.argmax(out.logits, axis=-1))

    # `act` is the policy for one observation: the same action, for a greedy and a sampled call.
    for i in range(batch):
        _, singles = call(i)
        for deterministic, (single, (action, new_carry)) in singles.items():
            assert single.action.shape[0] == 1, deterministic
            np.testing.assert_array_equal(action, single.action[0])
            assert jax.tree.structure(new_carry) == jax.tree.structure(agent.init_carry())


def test_env_params_is_a_required_argument(trained) -> None:
    env, env_params, agent = trained.env, trained.env_params, trained.agent
    key = jax.random.key(0)
    with pytest.raises(TypeError):
        agent.init(key)
    with pytest.raises(TypeError):
        agent.init(key, None)
    state = trained.init(key, None, env_params)  # the fixture's compiled init: no recompile
    for step in (agent.update, agent.run_chunk):
        with pytest.raises(TypeError):
            step(state)
    obs, env_state = _batch(env, env_params, 1)
    params = agent.policy_params(state)
    with pytest.raises(TypeError):
        agent.policy(params, obs, env_state, key, (), True)
    with pytest.raises(TypeError):
        agent.act(params, obs[0], jax.tree.map(lambda x: x[0], env_state), key, (), True)


@pytest.fixture(scope="module")
def trading_market():
    rng = np.random.default_rng(0)
    log_returns = 0.01 * rng.standard_normal((200, 2))
    close = 100.0 * np.exp(np.cumsum(log_returns, axis=0))
    splits = np.array([[0, 120], [120, 160], [160, 200]])
    return from_arrays(close, features=log_returns[:, :, None], splits=splits)


@pytest.mark.parametrize("name", ["ppo", "dqn", "sac", "td3"])
def test_policy_target_weights_are_the_envs_on_the_trading_env(trading_market, name) -> None:
    mode = "discrete" if CASES[name][2] else "continuous"
    env, env_params = envs.make("trading", trading_market, window_bars=4, action_mode=mode)
    agent = _agent(name, env, env_params)
    state = jit_light(agent.init)(jax.random.key(0), None, env_params)
    obs, env_state = _batch(env, env_params, 4)
    carry = jax.tree.map(lambda c: jnp.stack([c] * 4), agent.init_carry())
    out = agent.policy(
        agent.policy_params(state), obs, env_state, env_params, jax.random.key(1), carry, False
    )
    want = jax.vmap(env.action_to_weights, in_axes=(0, None))(out.action, env_params)
    assert out.target_weights.shape == (4, env.num_assets)
    np.testing.assert_array_equal(out.target_weights, want)
