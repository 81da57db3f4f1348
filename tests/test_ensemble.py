"""The ensemble agent (agents/ensemble.py) and its combination rules (agents/common/combine.py).

Proofs: members trained inside one ensemble program equal each member trained alone with its
key (`member_key`) and settings (`member_config`); the Normal-Inverse-Gamma posterior equals
its closed form; the vote gives exactly equal weights without evidence; every combination
output at bar t is unchanged when the bars after t change.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import agents
import envs
from agents.common import combine as comb
from agents.common.types import is_last_value_metric, metric_name
from agents.ensemble import member_key
from jaxtrade.errors import ConfigError
from jaxtrade.market import from_arrays

NET = {"hidden_sizes": [8, 8]}
CONFIG = {
    "name": "ensemble",
    "members": ["ppo", "sac"],
    "num_envs": 2,
    "total_steps": 2 * 8 * 8,
    "updates_per_chunk": 4,
    "ppo": {"rollout_len": 8, "num_minibatches": 2, "update_epochs": 1, "network": NET},
    "sac": {"rollout_len": 2, "learning_starts": 8, "batch_size": 4, "buffer_size": 64,
            "network": NET},
}


def _market(seed: int = 0, num_bars: int = 200):
    rng = np.random.default_rng(seed)
    log_returns = 0.01 * rng.standard_normal((num_bars, 1))
    close = 100.0 * np.exp(np.cumsum(log_returns, axis=0))
    splits = np.array([[0, 120], [120, 160], [160, num_bars]])
    return from_arrays(close, features=log_returns[:, :, None], splits=splits)


def _env(market, mode: str = "continuous"):
    return envs.make("trading", market, window_bars=4, action_mode=mode)


def test_members_trained_in_one_program_equal_each_member_trained_alone() -> None:
    env, env_params = _env(_market())
    config = agents.config_from_dict(CONFIG)
    key = jax.random.key(7)
    together = agents.make_train(config, env, env_params)(key)
    num_updates, _, repeats = config.schedule()
    assert repeats == {"ppo": 1, "sac": 4}
    for name in config.members:
        member_cfg = config.member_config(name)
        member_env = env.with_action_mode(type(member_cfg).__dict__.get(
            "env_action_mode", getattr(type(member_cfg), "env_action_mode", "discrete")))
        alone = agents.make_train(member_cfg, member_env, env_params)(member_key(key, name))
        # Same budget: every member reaches the ensemble's schedule, within total_steps.
        family = agents.make_agent(member_cfg, member_env, env_params).family
        steps = np.asarray(alone.metrics[f"{family}/env_steps"])
        assert steps[-1] == num_updates * repeats[name] * (steps[0])
        assert steps[-1] <= config.total_steps
        for key_alone, values in alone.metrics.items():
            values = np.asarray(values).reshape(num_updates, repeats[name])
            reduced = values[:, -1] if is_last_value_metric(key_alone) else values.mean(axis=1)
            got = np.asarray(together.metrics[f"ensemble/{name}/{metric_name(key_alone)}"])
            np.testing.assert_allclose(got, reduced, rtol=1e-5, atol=1e-6,
                                       err_msg=f"{name}: {key_alone}")
        for got, want in zip(jax.tree.leaves(together.state.members[name]),
                             jax.tree.leaves(alone.state), strict=True):
            if jax.dtypes.issubdtype(got.dtype, jax.dtypes.prng_key):
                got, want = jax.random.key_data(got), jax.random.key_data(want)
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)


def test_schedule_gives_every_member_the_budget_rounded_to_its_update_size() -> None:
    config = agents.config_from_dict({"name": "ensemble", "num_envs": 8,
                                      "total_steps": 10_000})
    num_updates, per_chunk, repeats = config.schedule()
    assert num_updates % per_chunk == 0
    for name in config.members:
        member = config.member_config(name)
        done = member.run_sizes()[0] * member.run_sizes()[2]
        assert done == num_updates * repeats[name] * member.run_sizes()[2] <= 10_000
        # Less than one ensemble update of the member short of the budget.
        assert 10_000 - done < num_updates * member.run_sizes()[2] * 2 or repeats[name] == 1


def test_bad_member_lists_are_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="not a registered agent"):
        agents.config_from_dict({"name": "ensemble", "members": ["ppo", "nope"]})
    with pytest.raises(ConfigError, match="twice"):
        agents.config_from_dict({"name": "ensemble", "members": ["ppo", "ppo"]})
    with pytest.raises(ConfigError, match="train.total_steps"):
        agents.config_from_dict({"name": "ensemble", "ppo": {"total_steps": 5}})


def test_member_hyperparameters_are_vmapped_points_from_the_command_line() -> None:
    from experiments import common
    from experiments.sweep import check_hparam_axes, split_sweep_overrides
    from experiments.train import point_hparams, prepare

    argv = ["agent=ensemble", "experiment=smoke", "data.options.num_bars=300",
            "run_dir=/tmp/unused-ensemble-sweep"]
    plain, axes, multirun = split_sweep_overrides(
        [*argv, "agent.sac.hparams.tau=0.005,0.02", "agent.ppo.hparams.ent_coef=0,0.1"])
    assert set(axes) == {"agent.sac.hparams.tau", "agent.ppo.hparams.ent_coef"} and not multirun
    cfg = common.compose(plain)
    check_hparam_axes(cfg, axes)
    with pytest.raises(ConfigError, match="agent.sac.hparams.nope"):
        check_hparam_axes(cfg, {"agent.sac.hparams.nope": [1.0]})
    prep = prepare(cfg)
    points = [{"seed": 0, "agent.sac.hparams.tau": t, "agent.ppo.hparams.ent_coef": e}
              for t, e in ((0.005, 0.0), (0.02, 0.1))]
    hparams = point_hparams(prep, points)
    states = jax.vmap(prep.agent.init, in_axes=(0, 0, None))(
        jnp.stack([jax.random.key(0)] * 2), hparams, prep.env_params)
    np.testing.assert_allclose(states.members["sac"].hparams.tau, [0.005, 0.02])
    np.testing.assert_allclose(states.members["ppo"].hparams.ent_coef, [0.0, 0.1])
    # Members not swept keep their own defaults at every point.
    np.testing.assert_allclose(states.members["qrdqn"].hparams.learning_rate,
                               prep.agent_config.qrdqn.hparams.learning_rate)


# ---------------------------------------------------------------------- the vote's model


def test_nig_posterior_is_the_closed_form() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(0.001, 0.01, size=(30, 3)).astype(np.float32)
    mask = np.arange(30) >= 5  # 25 returns
    prior = comb.NIG(jnp.float32(0.0005), jnp.float32(10.0), jnp.float32(1.0),
                     jnp.float32(1e-4))
    post = comb.nig_posterior(jnp.asarray(x), jnp.asarray(mask), prior)
    for m in range(3):
        d = x[mask, m].astype(np.float64)
        n, xbar = len(d), d.mean()
        ss = ((d - xbar) ** 2).sum()
        kappa = 10.0 + n
        np.testing.assert_allclose(post.kappa[m], kappa, rtol=1e-6)
        np.testing.assert_allclose(post.mu[m], (10.0 * 0.0005 + n * xbar) / kappa, rtol=1e-5)
        np.testing.assert_allclose(post.alpha[m], 1.0 + n / 2, rtol=1e-6)
        np.testing.assert_allclose(
            post.beta[m], 1e-4 + ss / 2 + 10.0 * n * (xbar - 0.0005) ** 2 / (2 * kappa),
            rtol=1e-4)


def test_student_t_cdf_matches_scipy() -> None:
    z = np.linspace(-6, 6, 41)
    for df in (1.0, 3.5, 30.0):
        np.testing.assert_allclose(comb.student_t_cdf(jnp.asarray(z), jnp.float32(df)),
                                   scipy.stats.t.cdf(z, df), atol=2e-6)


def test_probability_best_matches_monte_carlo_and_is_equal_without_evidence() -> None:
    post = comb.NIG(jnp.array([0.0, 0.001, -0.0005]), jnp.array([20.0, 30.0, 25.0]),
                    jnp.array([6.0, 8.0, 7.0]), jnp.array([5e-4, 8e-4, 6e-4]))
    got = np.asarray(comb.probability_best(post))
    rng = np.random.default_rng(0)
    scale = np.asarray(comb.mean_scale(post))
    draws = np.asarray(post.mu) + scale * rng.standard_t(2 * np.asarray(post.alpha),
                                                         size=(400_000, 3))
    want = np.bincount(draws.argmax(axis=1), minlength=3) / len(draws)
    np.testing.assert_allclose(got, want, atol=5e-3)
    # No evidence: every member's posterior is the shared prior, so the weights are equal.
    empty = comb.vote_weights(jnp.zeros((16, 4)), jnp.zeros((16,), bool), 20.0)
    np.testing.assert_allclose(empty, 0.25, atol=1e-6)


def test_vote_concentrates_on_the_member_that_earns_more() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(0.0, 0.01, size=(64, 3))
    x[:, 1] += 0.01
    w = np.asarray(comb.vote_weights(jnp.asarray(x, jnp.float32), jnp.ones(64, bool), 20.0))
    assert w[1] > 0.95 and abs(w.sum() - 1) < 1e-5


def test_trade_probability_is_the_predictive_tail_and_zero_when_flat() -> None:
    x = jnp.asarray(np.random.default_rng(3).normal(0.002, 0.01, 50), jnp.float32)
    mask = jnp.ones(50, bool)
    p = float(comb.trade_probability(x, mask, 20.0, jnp.float32(0.0), jnp.float32(1.0)))
    prior = comb.nig_prior(x[:, None], mask, 20.0)._replace(mu=jnp.float32(0.0))
    post = comb.nig_posterior(x[:, None], mask, prior)
    want = scipy.stats.t.sf(0.0, 2 * float(post.alpha[0]), loc=float(post.mu[0]),
                            scale=float(comb.predictive_scale(post)[0]))
    assert abs(p - want) < 1e-4 and p > 0.5
    assert float(comb.trade_probability(x, mask, 20.0, jnp.float32(0.0), jnp.float32(0.0))) == 0


# ------------------------------------------------------------------------- causality


def _walk_beliefs(config, market, bars: int):
    """Member weights, trade probabilities and targets of the ensemble's policy walking the
    test split from its first bar (eval mode), one bar at a time."""
    env, env_params = _env(market)
    env_params = env_params.replace(split=jnp.int32(2), eval_mode=jnp.bool_(True))
    agent = agents.make_agent(config, env, env_params)
    state = agent.init(jax.random.key(3), None, env_params)
    params = agent.policy_params(state)

    def one_bar(carry, key, params, env_params):
        obs, env_state, policy_carry = carry
        out = agent.policy(params, obs[None], jax.tree.map(lambda x: x[None], env_state),
                           env_params, key, jax.tree.map(lambda c: c[None], policy_carry), True)
        obs, env_state, *_ = env.step_env(key, env_state, out.action[0], env_params)
        return (obs, env_state, jax.tree.map(lambda c: c[0], out.carry)), (
            out.ensemble.weights[0], out.ensemble.trade_probability[0], out.target_weights[0])

    def run(params, env_params):  # the market as an argument: no constant folding
        obs, env_state = env.reset(jax.random.key(0), env_params)
        return jax.lax.scan(lambda c, k: one_bar(c, k, params, env_params),
                            (obs, env_state, agent.init_carry()),
                            jax.random.split(jax.random.key(1), bars))[1]

    rows = jax.jit(run)(params, env_params)
    return [np.asarray(r) for r in rows]


@pytest.mark.parametrize("rule", ["vote", "router"])
def test_changing_bars_after_t_changes_nothing_at_or_before_t(rule: str) -> None:
    config = agents.config_from_dict({**CONFIG, "combine": rule, "vote_window_bars": 8})
    market = _market(num_bars=200)
    other = _market(seed=9, num_bars=200)
    t = 175  # test split starts at bar 160
    close = np.asarray(market.close).copy()
    close[t + 1:] = np.asarray(other.close)[t + 1:] * close[t] / np.asarray(other.close)[t]
    feats = np.asarray(market.features).copy()
    feats[t + 1:] = np.asarray(other.features)[t + 1:]
    rebuilt = from_arrays(close, features=feats, splits=np.asarray(market.splits))
    # Bars <= t exactly as they were (from_arrays' rolling ATR / volatility differ in the
    # last float bit when later bars change), bars > t all new.
    changed = market.replace(**{
        f: jnp.asarray(np.concatenate([np.asarray(getattr(market, f))[:t + 1],
                                       np.asarray(getattr(rebuilt, f))[t + 1:]]))
        for f in ("features", "open", "high", "low", "close", "atr", "volatility")})
    a = _walk_beliefs(config, market, 39)
    b = _walk_beliefs(config, changed, 39)
    upto = t - 160 + 1  # rows decided at bars 160 .. t
    for got, want in zip(a, b, strict=True):
        np.testing.assert_array_equal(got[:upto], want[:upto])
    assert not np.array_equal(a[2][upto + 2:], b[2][upto + 2:]) or rule == "router"
