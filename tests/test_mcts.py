"""The MCTS agent never reads a bar after t (DESIGN.md rule 1; issue 24).

From env states at bar t with different portfolios, the batched search (both mctx policies,
self-play and evaluation settings) gives the same action, visit distribution / improved
policy and root value when every MarketData row after t is replaced by other bars; and the
derivative of the root value along any tested direction of MarketData rows after t is
exactly zero (forward mode; rows <= t do move it). The agent refuses envs other than the
trading env in one line.
"""

from __future__ import annotations

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import agents
import envs
from jaxtrade.errors import ConfigError
from jaxtrade.market import from_arrays
from jaxtrade.xla import jit_light

WINDOW = 4
STEPS = 5  # steps taken before the decision bar, so the portfolios differ
FLOAT_FIELDS = ("features", "open", "high", "low", "close", "atr", "volatility", "regime")


def _market(seed: int = 0):
    rng = np.random.default_rng(seed)
    log_returns = 0.01 * rng.standard_normal((120, 1))
    close = 100.0 * np.exp(np.cumsum(log_returns, axis=0))
    splits = np.array([[0, 80], [80, 100], [100, 120]])
    return from_arrays(close, features=log_returns[:, :, None], splits=splits)


def _future_replaced(market, t: int, seed: int = 1):
    """`market` with every row after t replaced by other (valid) bars."""
    rng = np.random.default_rng(seed)
    other = {}
    for name in FLOAT_FIELDS:
        x = np.asarray(getattr(market, name)).copy()
        noise = rng.uniform(0.5, 2.0, size=x[t + 1:].shape).astype(x.dtype)
        x[t + 1:] = x[t + 1:] * noise if name != "features" else noise - 1.0
        other[name] = jnp.asarray(x)
    return market.replace(**other)


@pytest.fixture(scope="module", params=["gumbel", "stochastic"])
def setup(request):
    market = _market()
    env, env_params = envs.make("trading", market, window_bars=WINDOW)
    config = agents.config_from_dict({
        "name": "mcts", "search": request.param, "num_simulations": 12, "num_envs": 2,
        "network": {"hidden_sizes": [16, 16]}})
    agent = agents.make_agent(config, env, env_params)
    state = jit_light(agent.init)(jax.random.key(0), None, env_params)
    # Give the untrained network non-trivial weights: one noisy copy per leaf.
    params = agent.policy_params(state)
    leaves, tree = jax.tree.flatten(params.network)
    keys = jax.random.split(jax.random.key(3), len(leaves))
    network = jax.tree.unflatten(tree, [x + 0.3 * jax.random.normal(k, x.shape)
                                        for x, k in zip(leaves, keys)])
    params = params.replace(network=network)
    # Four envs from the train split's first bar, each trading its own action sequence.
    eval_params = env_params.replace(eval_mode=jnp.asarray(True))
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(
        jax.random.split(jax.random.key(1), 4), eval_params)
    actions = jnp.asarray([[2, 2, 2, 2, 2], [0, 0, 1, 0, 0], [1, 1, 1, 1, 1], [2, 0, 2, 0, 2]])
    step = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))
    for i in range(STEPS):
        obs, env_state, *_ = step(jax.random.split(jax.random.key(2), 4), env_state,
                                  actions[:, i], eval_params)
    t = int(env_state.t[0])
    assert np.all(np.asarray(env_state.t) == t)
    assert len(np.unique(np.asarray(env_state.units))) > 1  # the portfolios differ
    # One compiled search per mctx policy for both settings: `deterministic` is traced (the
    # agent selects with jnp.where), so the two parametrizations below share the program.
    policy = jax.jit(agent.policy)
    return env, env_params, agent, params, obs, env_state, t, policy


@pytest.mark.parametrize("deterministic", [True, False])
def test_search_at_t_ignores_every_bar_after_t(setup, deterministic) -> None:
    env, env_params, agent, params, obs, env_state, t, policy = setup
    key = jax.random.key(7)
    out = policy(params, obs, env_state, env_params, key, (), deterministic)
    for seed in (1, 2):
        other = env_params.replace(market=_future_replaced(env_params.market, t, seed))
        # The observation is rebuilt from the changed market: it is the same array.
        np.testing.assert_array_equal(jax.vmap(env.get_obs, in_axes=(0, None))(
            env_state, other), obs)
        changed = policy(params, obs, env_state, other, key, (), deterministic)
        np.testing.assert_array_equal(changed.action, out.action)
        np.testing.assert_array_equal(changed.logits, out.logits)  # the search's policy
        np.testing.assert_array_equal(changed.value, out.value)  # the root value
    assert out.value.shape == (4,) and out.logits.shape == (4, env.num_actions)


def test_root_value_gradient_is_zero_on_every_row_after_t(setup) -> None:
    """Forward mode: mctx walks the tree in a `lax.while_loop`, which reverse mode cannot
    differentiate. The derivative of the root values along a direction is gradient . direction;
    along random directions with every entry nonzero on the rows after t (all float fields of
    MarketData at once) it is exactly 0, which a nonzero gradient there would not give (but
    with probability 0); along the same kind of direction on rows <= t it is not 0."""
    _, env_params, agent, params, obs, env_state, t, _ = setup

    def root_values(market):
        out = agent.policy(params, obs, env_state, env_params.replace(market=market),
                           jax.random.key(7), (), True)
        return out.value

    def direction(seed: int, future: bool):
        rng = np.random.default_rng(seed)
        rows = slice(t + 1, None) if future else slice(None, t + 1)
        tangent = jax.tree.map(lambda x: np.zeros(x.shape, jax.dtypes.float0)
                               if not jnp.issubdtype(x.dtype, jnp.floating)
                               else np.zeros(x.shape, x.dtype), env_params.market)
        fields = {}
        for name in FLOAT_FIELDS:
            x = np.zeros(getattr(env_params.market, name).shape, np.float32)
            x[rows] = rng.uniform(0.5, 1.5, size=x[rows].shape)
            fields[name] = jnp.asarray(x)
        return tangent.replace(**fields)

    jvp = jax.jit(lambda tangent: jax.jvp(root_values, (env_params.market,), (tangent,)))
    for seed in (0, 1):
        value, derivative = jvp(direction(seed, future=True))
        np.testing.assert_array_equal(np.asarray(derivative), 0.0)
    _, derivative = jvp(direction(0, future=False))
    assert np.all(np.abs(np.asarray(derivative)) > 0.0)


def test_mcts_refuses_other_envs_in_one_line() -> None:
    env, env_params = gymnax.make("CartPole-v1")
    with pytest.raises(ConfigError, match="trading env only") as info:
        agents.make_agent(agents.config_from_dict({"name": "mcts"}), env, env_params)
    assert "\n" not in str(info.value)


def test_bucket_centers_are_the_normal_conditional_means() -> None:
    from agents.mcts import bucket_centers

    centers = bucket_centers((-0.5, 0.5))
    assert centers[1] == 0.0 and centers[0] == -centers[2]
    z = np.random.default_rng(0).standard_normal(2_000_000)
    np.testing.assert_allclose(centers[2], z[z > 0.5].mean(), atol=2e-3)


def test_platt_map_undoes_a_known_distortion_and_keeps_the_identity_without_evidence() -> None:
    """The report's calibration map (jaxtrade/evaluate/mcts.py): fitted on outcomes drawn from
    p, it maps predictions q = sigmoid(0.5 logit(p) - 0.2) back to p (slope 2, intercept 0.4);
    on three bars it stays near the identity (its one pseudo-observation prior) and finite."""
    from jaxtrade.evaluate.mcts import apply_platt, fit_platt

    rng = np.random.default_rng(0)
    p = rng.uniform(0.15, 0.85, 40_000)
    realized = (rng.uniform(size=p.shape) < p).astype(float)
    q = 1.0 / (1.0 + np.exp(-(0.5 * np.log(p / (1.0 - p)) - 0.2)))
    slope, intercept = fit_platt(q, realized)
    assert slope == pytest.approx(2.0, abs=0.1) and intercept == pytest.approx(0.4, abs=0.05)
    assert np.max(np.abs(apply_platt(q, slope, intercept) - p)) < 0.03
    slope, intercept = fit_platt(np.array([0.6, 0.7, 0.9]), np.ones(3))
    # (unpenalized, three up closes push the intercept to infinity)
    assert abs(slope - 1.0) < 0.5 and abs(intercept) < 0.75


def test_resume_continues_exactly(tmp_path, tmp_path_factory) -> None:
    """`jaxtrade train agent=mcts`: 16 updates, stop, resume=true, 16 more == 32 straight (the
    replay buffer, optimizer and keys are checkpointed with the network). The straight run is
    tests/test_export_mcts.py's gumbel run, trained once per session (tests/shared_runs.py)."""
    from test_export_mcts import MCTS_RUN, mcts_run, search_args

    from experiments import common
    from experiments.train import restore_run, train

    straight, bars = mcts_run(tmp_path_factory, "gumbel")
    run = [*MCTS_RUN, *search_args("gumbel"), f"data.path={bars}"]

    def final_state(run_dir):
        """(the latest checkpoint's whole state, its metadata), as `jaxtrade backtest`
        restores it (shapes from jax.eval_shape: agent.init is not compiled)."""
        _, restored, _ = restore_run(run_dir, "latest")
        return restored.state, restored.meta

    quiet = lambda _: None
    split = tmp_path / "split"
    first = train(common.compose([*run, f"run_dir={split}", "train.stop_after_updates=16"]),
                  print_fn=quiet)
    assert first.loop.updates_done == 16 and not first.loop.finished
    second = train(common.compose([f"run_dir={split}", "resume=true", "train.report=false"]),
                   print_fn=quiet)
    assert second.loop.updates_done == 32 and second.loop.finished
    (a, meta_a), (b, meta_b) = final_state(straight), final_state(split)
    assert meta_a["update"] == meta_b["update"] == 32
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


CHUNK = {"name": "mcts", "num_envs": 2, "num_simulations": 2, "total_steps": 16,
         "updates_per_chunk": 8, "learning_starts": 4, "batch_size": 4, "buffer_size": 64,
         "n_step": 2, "network": {"hidden_sizes": [8]}}


@pytest.fixture(scope="module")
def chunk():
    """One `run_chunk` (8 updates) of the plain self-play agent at `param_average_decay` 0,
    compiled once: (env, env_params, agent, compiled run_chunk, initial state, state after,
    metrics). The run_chunk reads the decay from `state.hparams` (an array), so an agent
    configured with another decay runs its own state through the same compiled program."""
    env, env_params = envs.make("trading", _market(), window_bars=WINDOW,
                                final_observation=True)
    agent = agents.make_agent(agents.config_from_dict(
        {**CHUNK, "hparams": {"param_average_decay": 0.0}}), env, env_params)
    run_chunk = jax.jit(agent.run_chunk)
    state = agent.init(jax.random.key(0), None, env_params)
    after, metrics = run_chunk(state, env_params)
    return env, env_params, agent, run_chunk, state, after, metrics


def test_adversarial_self_play_steps_the_wrapper(chunk) -> None:
    env, env_params, _, _, _, _, plain_metrics = chunk
    config = agents.config_from_dict({**CHUNK, "adversarial": True,
                                      "hparams": {"param_average_decay": 0.0}})
    agent = agents.make_agent(config, env, env_params)
    state = agent.init(jax.random.key(0), None, env_params)
    _, metrics = jax.jit(agent.run_chunk)(state, env_params)
    out = {False: np.asarray(plain_metrics["mcts/loss"]), True: np.asarray(metrics["mcts/loss"])}
    for adversarial in (False, True):
        assert np.all(np.isfinite(out[adversarial]))
    assert not np.array_equal(out[False], out[True])  # shocks and noise changed the run


def test_evaluation_params_are_the_moving_average_and_leave_training_alone(chunk) -> None:
    """`hparams.param_average_decay`: the policy call reads the bias-corrected moving average
    of the learner's params (the latest params before the first gradient step, and with decay
    0); self-play acts on the latest params, so the decay does not change the training."""
    env, env_params, plain_agent, run_chunk, plain_init, plain_after, _ = chunk
    states = {}
    for decay in (0.0, 0.9):
        agent = plain_agent if decay == 0.0 else agents.make_agent(agents.config_from_dict(
            {**CHUNK, "hparams": {"param_average_decay": decay}}), env, env_params)
        state = plain_init if decay == 0.0 else agent.init(jax.random.key(0), None, env_params)
        assert float(state.hparams.param_average_decay) == pytest.approx(decay)
        for x, y in zip(jax.tree.leaves(agent.policy_params(state).network),
                        jax.tree.leaves(state.params)):
            np.testing.assert_array_equal(x, y)
        # the same compiled run_chunk: the decay is the state's, not the program's
        state = plain_after if decay == 0.0 else run_chunk(state, env_params)[0]
        states[decay] = (agent.policy_params(state).network, state)
    latest, plain = states[0.0]
    for x, y in zip(jax.tree.leaves(latest), jax.tree.leaves(plain.params)):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    averaged, state = states[0.9]
    steps = round(float(np.log1p(-state.average_weight) / np.log(0.9)))
    assert steps >= 2  # several gradient steps were averaged
    for x, y in zip(jax.tree.leaves(state.params), jax.tree.leaves(plain.params)):
        np.testing.assert_array_equal(x, y)  # same training
    moved = [float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(jax.tree.leaves(averaged), jax.tree.leaves(state.params))]
    assert max(moved) > 0  # the average lags the latest params
    for x, y in zip(jax.tree.leaves(averaged), jax.tree.leaves(state.average)):
        np.testing.assert_allclose(x, np.asarray(y) / float(state.average_weight), rtol=1e-5)


def test_ensemble_trains_with_an_mcts_member(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """`jaxtrade train agent=ensemble agent.members=[ppo,mcts]` (the session's shared run of
    tests/test_export_mcts_refusals.py): the mcts member trains inside the ensemble's program
    on its discrete view of the env (metrics under ensemble/mcts/, finite losses, its search's
    env steps counted); that module exports the run and checks the ensemble's policy call
    combines the member."""
    import json

    from test_export_mcts_refusals import ensemble_run

    run_dir, _ = ensemble_run(tmp_path_factory)
    lines = [json.loads(line) for line in
             (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    lines = [line for line in lines if "ensemble/mcts/model_loss" in line]
    model_loss = np.asarray([line["ensemble/mcts/model_loss"] for line in lines])
    assert model_loss.size > 0 and np.all(np.isfinite(model_loss))
    steps = np.asarray([line["ensemble/mcts/env_steps"] for line in lines])
    assert steps[-1] > steps[0] > 0
