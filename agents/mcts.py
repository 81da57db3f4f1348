"""A dual-head (policy + value) search agent that plans on a learned model of the next bar.

Trading env only. AlphaZero-style planners step the real environment inside the tree; on a
market replay that reads the bars after t, so the plan sees the future. Here the tree never
reads a bar after t: each edge is

    decision at the close of t  ->  the portfolio's exact afterstate (envs/accounting.py,
                                    the functions the env's own step runs)
    chance outcome              ->  the next bar, drawn from the network's next-bar model,
                                    settled exactly (fills, costs, stops, carry, reward)

Only three things of the market enter the tree, all at bar t: the observation (the feature
window ending at t), and the close, ATR, volatility and regime of bar t (the env's risk
manager and cost model read them at the decision). `tests/test_mcts.py` replaces every bar
after t and checks that the action, the visit distribution and the root value at t do not
change, and that the root value's derivative along MarketData rows after t is exactly zero
(forward mode: mctx walks the tree in a while_loop, which reverse mode cannot differentiate).

The network: a shared torso over the observation's market window -> latent h; heads
  policy logits (h, portfolio)   value (h, portfolio)   next-bar model logits (h)
where `portfolio` is the env's portfolio vector (envs/observation.py) of the node's exact
portfolio state. The next-bar model is a categorical over G x R buckets: the next open's gap
log(open_{t+1} / close_t) and the bar's own return log(close_{t+1} / open_{t+1}), both in
units of bar t's volatility (`agent.gap_edges_vol`, `agent.return_edges_vol`); a bucket's
bar is its conditional normal mean (so gap 0 sits in the middle bucket). The modelled bar's
high and low are max/min(open, close), so a modelled bar triggers a stop only through its
open or close. The market latent h is the root's at every depth: the model predicts one bar
ahead of the root and deeper nodes change only the portfolio (exactly); a learned latent
transition (MuZero's dynamics) is not trained. The next bar never depends on the agent's
action (a price taker), so all actions of a node share the chance distribution.

The accounting inside the tree is envs/accounting.py, the functions the env's own step runs:
a decision node's action becomes the exact afterstate (`accounting.decide`: risk manager,
no-trade band, target units at the node's close, cost rate), which is the chance node; the
modelled bar settles it (`accounting.settle`: fills, commission, spread, slippage, stops,
carry, reward, drawdown breaker). Below the root the decision bar is the modelled close with
bar t's ATR, volatility and regime. Bar t+1 is assumed tradable (`valid`) in the tree.

Search: mctx. Both policies are wired (`agent.search`):
  "gumbel"      `gumbel_muzero_policy`: the edge's reward and value are the model's
                expectation over the G x R outcomes; the child node continues from one
                sampled outcome in self-play, from the most probable one when evaluating.
                Improved-policy targets (completed Q values), good with few simulations;
                deterministic (gumbel_scale 0, no sampled outcome) when evaluating.
  "stochastic"  `stochastic_muzero_policy` (Antonoglou et al. 2022): explicit chance nodes;
                the afterstate value is the expectation over outcomes; visit counts as
                policy targets, PUCT (`hparams.pb_c_init`), Dirichlet noise in self-play.
                When evaluating: Dirichlet fraction 0, chance nodes pick argmax
                p_k / (n_k + 1) (deterministic given the tree), the action is the argmax of
                the root's visits; mctx's 1e-7 random tie-break of the PUCT scores stays.
Either search exports: the bundle's numpy runner repeats the evaluation tree bar for bar
(jaxtrade/live/mcts.py, tests/test_export_mcts.py; it breaks PUCT ties by the first index
where mctx adds its 1e-7 noise), alone or as an ensemble member (jaxtrade/live/ensemble.py
`SearchMember`).
Measured on this machine (2-core x86_64 VM, CPU only, shared with other jobs; `python
scripts/bench_mcts.py`: batch 256, 50 simulations, the default network, 21 outcomes, window
32 x 8 features): gumbel 136 ms per call (94,000 simulations/s; 247 ms in a later run at
higher load), stochastic 1,275 ms (10,000 simulations/s), 9.4x slower: each of its
expansions runs both its decision function (all 21 outcomes, for the afterstate value) and
its chance function, its tree is twice as deep for the same bars, and its nodes carry
A + C = 24 children. So `search="gumbel"` is the default; `search="stochastic"` stays
available (exact chance nodes, no sampled outcomes).

Self-play (one update): every env acts by batched search inside the same jit; the step, its
search policy and action go to the shared flashbax replay (agents/common/replay.py,
compact trading observations); then `gradient_steps` minibatches of `n_step` sequences:
  policy loss  cross-entropy of the policy head to the stored search policy
  value loss   squared error to the n-step bootstrapped return (bootstrap: the value head at
               the n-th observation, held fixed; a truncated end bootstraps its final one)
  model loss   cross-entropy of the next-bar model to the bucket of the bar that actually
               followed bar t (read from MarketData after it happened: t + 1 <= the bar the
               env is at)
Numeric hyperparameters are float32 leaves of the state (vmappable in sweeps).

Evaluation params (`hparams.param_average_decay`, default 0.99): the policy call, and with it
validation, checkpoints' backtests, the report and the export bundle, reads the
bias-corrected exponential moving average of the learner's params over its gradient steps
(Polyak averaging); self-play acts on the latest params, so the average never changes the
training. With a constant Adam step the latest params keep moving with the minibatch noise,
and the next-bar model's base rate with them: on the planted market one run's model predicted
0.024 too high on average over 11,000 test bars at its final checkpoint and 0.002 too low at
its update-250 one; its average is 0.003 off (four seeds: within 0.008, BENCHMARKS.md). It
does not remove the per-decile error of a model still learning (calibration over 0.05 on one
of the four seeds either way); the report reads the model's up-probability through a Platt map
fitted on the validation split (jaxtrade/evaluate/mcts.py: within 0.037 on the four seeds),
while the tree keeps the raw model. 0 evaluates the latest params.

The policy call (agents/common/types.py) searches from the given env states' exact
portfolios: action = the search's (deterministic: gumbel_scale 0 / no Dirichlet noise, the
argmax), logits = log of the search's improved policy, value = the root value after search.
`policy_head_act` is the policy head acting alone; the report's mcts section
(jaxtrade/evaluate/mcts.py) shows both. On the planted AR(1) market (BENCHMARKS.md), with
the latest params (nine runs) the search is far above a poor head (3.7-4.2 vs 0.6-0.8) and
within -0.08 to +0.38 of a good one (~3.6); with the averaged params (four seeds) it is 1.0 to
3.75 above the head (3.60-3.75 vs a head of 2.65 or less, one head never trading).

`agent.adversarial=true`: self-play steps envs.wrappers.AdversarialWrapper (observation
noise, slippage shocks, opening gaps at the wrapper's default rates) and the learner adds the
wrapper's observation noise to sampled observations (replay stores clean windows). The search
still plans on clean accounting: shocks are the world's, not the model's. Under 20%
observation noise on the planted market (the report's mcts section, two seeds each,
BENCHMARKS.md) it did not beat plain training; there the noise costs little and the drawdown
is set by the position size: at `env.trading.max_leverage=1.0` 22.1% over 10,459 test bars,
at 0.5 7.5-11.0% with Sharpe above 3.5.

Other envs: the agent refuses them with one line. Its tree is exact accounting of jaxtrade's
portfolio plus a learned model of the next bar; it has no learned dynamics of an arbitrary
env's state, so a gymnax classic-control env has nothing for it to plan on.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import mctx
import numpy as np
import optax
from flax import struct

from agents.common.agent import build_agent, policy_output
from agents.common.config import hparams_as_arrays
from agents.common.losses import n_step_returns
from agents.common.networks import MLP, NetworkConfig, _dense
from agents.common.offpolicy import OffPolicySizes, collect_and_learn, env_axis, example_item
from agents.common.optim import adam_init, adam_step
from agents.common.replay import Replay, make_replay, obs_codec
from agents.common.rollout import EnvRunner, reset_runner
from agents.common.types import Agent, Metrics, PolicyOutput
from jaxtrade.errors import ConfigError

SEARCHES = ("gumbel", "stochastic")


@struct.dataclass
class MCTSHParams:
    """Numeric hyperparameters: pytree leaves, so `jax.vmap` can sweep them in one program."""

    learning_rate: float = 1e-3
    gamma: float = 0.9  # discount in the tree and in the n-step value targets
    max_grad_norm: float = 1.0
    value_coef: float = 1.0
    model_coef: float = 1.0
    gumbel_scale: float = 1.0  # gumbel: exploration noise of self-play (0 when evaluating)
    pb_c_init: float = 1.25  # stochastic: PUCT constant
    dirichlet_fraction: float = 0.25  # stochastic: root noise in self-play
    temperature: float = 1.0  # stochastic: self-play acts on visits ** (1 / temperature)
    # Evaluation params: an exponential moving average of the learner's params over its
    # gradient steps (Polyak averaging, bias-corrected; 0: the latest params). Self-play acts
    # on the latest params; the policy call, checkpoints' evaluation, the report and the
    # export read the average.
    param_average_decay: float = 0.99


def _mcts_network_default() -> NetworkConfig:
    return NetworkConfig(hidden_sizes=(64, 64), activation="relu")


@dataclasses.dataclass(frozen=True)
class MCTSConfig(OffPolicySizes):
    name: str = "mcts"
    num_envs: int = 16
    rollout_len: int = 1
    total_steps: int = 50_000
    batch_size: int = 128
    buffer_size: int = 20_000
    learning_starts: int = 1_000
    updates_per_chunk: int = 250
    n_step: int = 5
    num_simulations: int = 16  # per decision in self-play and evaluation
    search: str = "gumbel"  # "gumbel" | "stochastic"
    max_depth: int = 0  # 0: no limit beyond the simulations
    gap_edges_vol: tuple[float, ...] = (-0.5, 0.5)
    return_edges_vol: tuple[float, ...] = (-1.5, -0.75, -0.25, 0.25, 0.75, 1.5)
    # Self-play against envs.wrappers.AdversarialWrapper (its default observation noise,
    # slippage shocks and opening gaps); learning sees the same observation noise.
    adversarial: bool = False
    network: NetworkConfig = dataclasses.field(default_factory=_mcts_network_default)
    hparams: MCTSHParams = dataclasses.field(default_factory=MCTSHParams)

    def check(self) -> None:
        super().check()
        if self.search not in SEARCHES:
            raise ConfigError(f"agent.search={self.search!r} is not allowed: one of {SEARCHES}")
        for key in ("n_step", "num_simulations"):
            if getattr(self, key) < 1:
                raise ConfigError(f"agent.{key}={getattr(self, key)} is not allowed: must be >= 1")
        for key in ("gap_edges_vol", "return_edges_vol"):
            edges = list(getattr(self, key))
            if edges != sorted(edges) or len(set(edges)) != len(edges):
                raise ConfigError(f"agent.{key}={edges} is not allowed: must be increasing")
        if self.network.torso != "mlp":
            raise ConfigError(f"network.torso={self.network.torso!r} is not allowed for mcts: "
                              "its torso is the mlp over the observation's market window")
        if self.network.observe or self.network.observe_columns:
            # Its next-bar model reads the same latent: a partial window would change what
            # it predicts, and the numpy search (jaxtrade/live/mcts.py) has no selection.
            raise ConfigError(f"network.observe={list(self.network.observe)} is not allowed "
                              "for mcts: its torso and next-bar model read the whole market "
                              "window")

    def check_num_envs(self, num_envs: int) -> None:
        if self.buffer_size // max(num_envs, 1) < self.n_step + 1:
            raise ConfigError(f"agent.buffer_size={self.buffer_size} is not allowed: with "
                              f"env.num_envs={num_envs} each env keeps fewer than "
                              f"agent.n_step + 1 = {self.n_step + 1} steps")

    def export_head(self) -> dict[str, Any]:
        """The bundle's network section: the three heads and the evaluation search
        (jaxtrade/live/mcts.py runs it in numpy, no exploration noise). jaxtrade/export.py
        replaces gamma and pb_c_init by the checkpoint's."""
        if self.search == "stochastic":
            search = {"search": "stochastic", "dirichlet_fraction": 0.0,
                      "pb_c_init": float(self.hparams.pb_c_init), "pb_c_base": 19652,
                      "action": "argmax of the root's visit counts"}
        else:
            search = {"search": "gumbel", "gumbel_scale": 0.0,
                      "max_num_considered_actions": "num_actions",
                      "child_outcome": "most probable"}
        return {"family": "mcts", **search,
                "num_simulations": int(self.num_simulations),
                "max_depth": int(self.max_depth),
                "gamma": float(self.hparams.gamma),
                "gap_edges_vol": [float(x) for x in self.gap_edges_vol],
                "return_edges_vol": [float(x) for x in self.return_edges_vol],
                "gap_centers_vol": bucket_centers(self.gap_edges_vol).tolist(),
                "return_centers_vol": bucket_centers(self.return_edges_vol).tolist()}


def bucket_centers(edges: tuple[float, ...]) -> np.ndarray:
    """E[z | z in bucket] of a standard normal, for the buckets the edges cut."""
    cuts = np.concatenate([[-np.inf], np.asarray(edges, np.float64), [np.inf]])
    pdf = lambda x: 0.0 if np.isinf(x) else math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    cdf = lambda x: 0.5 * (1.0 + math.erf(x / math.sqrt(2.0))) if np.isfinite(x) else float(x > 0)
    return np.array([(pdf(a) - pdf(b)) / max(cdf(b) - cdf(a), 1e-12)
                     for a, b in zip(cuts[:-1], cuts[1:])], np.float32)


class MCTSNetwork(nn.Module):
    """Torso over the market window -> latent; policy/value heads read the latent and the
    portfolio vector; the next-bar model reads the latent only."""

    config: NetworkConfig
    num_actions: int
    num_outcomes: int

    def setup(self) -> None:
        cfg = self.config
        self.torso = MLP(cfg.hidden_sizes, cfg.activation, cfg.layer_norm)
        self.joint = MLP(cfg.hidden_sizes[-1:], cfg.activation)
        self.policy_head = _dense(self.num_actions, 0.01)
        self.value_head = _dense(1, 1.0)
        self.model_head = _dense(self.num_outcomes, 0.01)

    def embed(self, window: jax.Array) -> jax.Array:
        return self.torso(window.reshape(window.shape[0], -1).astype(jnp.float32))

    def predict(self, latent: jax.Array, portfolio: jax.Array) -> tuple[jax.Array, jax.Array]:
        z = self.joint(jnp.concatenate([latent, portfolio], axis=-1))
        return self.policy_head(z), self.value_head(z)[..., 0]

    def next_bar(self, latent: jax.Array) -> jax.Array:
        return self.model_head(latent)

    def __call__(self, window: jax.Array, portfolio: jax.Array):
        latent = self.embed(window)
        logits, value = self.predict(latent, portfolio)
        return logits, value, self.next_bar(latent)


@struct.dataclass
class Node:
    """A state node of the tree (batched: leaves lead with [B])."""

    latent: jax.Array  # [H] the root's market latent
    portfolio: Any  # envs.accounting.EnvState: the exact portfolio (its t is not read)
    bar: Any  # envs.accounting.DecisionBar: the node's close (bar t's at the root, modelled
    # below) with bar t's ATR, volatility and regime


@struct.dataclass
class Afterstate:
    """A chance node: the node it was decided at and the exact order (envs.accounting)."""

    node: Node
    after: Any  # envs.accounting.Afterstate


@struct.dataclass
class SearchParams:
    """What the batched policy call needs: the network and the search's hyperparameters."""

    network: Any
    hparams: MCTSHParams


@struct.dataclass
class TreeParams:
    """What mctx passes to the recurrent functions: the search's params and the env params
    (cost, risk and reward settings the exact accounting reads)."""

    network: Any
    hparams: MCTSHParams
    env_params: Any
    deterministic: Any  # bool: gumbel's child continues from the most probable outcome


@struct.dataclass
class MCTSState:
    params: Any
    opt_state: Any
    buffer: Any
    runner: EnvRunner
    rng: jax.Array
    hparams: Any
    update_step: jax.Array
    average: Any  # decay-weighted sum of the params after each gradient step (not corrected)
    average_weight: jax.Array  # its total weight 1 - decay ** steps (0 before learning)


def averaged_params(state: MCTSState) -> Any:
    """The bias-corrected moving average of the learner's params (`param_average_decay`);
    the latest params before the first gradient step."""
    weight = state.average_weight
    return jax.tree.map(lambda avg, p: jnp.where(weight > 0, avg / jnp.maximum(weight, 1e-12),
                                                 p), state.average, state.params)


def make_agent(config: MCTSConfig, env: Any, env_params: Any) -> Agent:
    # envs imports gymnax, which starts JAX's backend; importing `agents` (config
    # registration, before jax.distributed starts) must not.
    from envs import accounting
    from envs.observation import portfolio_size, portfolio_vector
    from envs.trading import TradingEnv
    from envs.wrappers import AdversarialWrapper

    if not isinstance(env, TradingEnv):
        raise ConfigError("agent.name='mcts' plans on jaxtrade's trading env only (exact "
                          "portfolio accounting + a learned next-bar model); "
                          f"{type(env).__name__} has no such model")
    config.check()
    if env.action_mode != "discrete":
        raise ConfigError("agent.name='mcts' needs discrete actions (env.action_mode=discrete)")
    if env.num_assets != 1:
        raise ConfigError(f"agent.name='mcts' plans on one asset; the market has "
                          f"{env.num_assets}")
    if env.obs_layout != "flat" or not env.include_portfolio:
        raise ConfigError("agent.name='mcts' needs env.obs_layout=flat and "
                          "env.include_portfolio=true")
    num_updates, _, steps_per_update = config.run_sizes()
    num_actions = env.num_actions
    gap_z = jnp.asarray(bucket_centers(config.gap_edges_vol))
    ret_z = jnp.asarray(bucket_centers(config.return_edges_vol))
    gap_edges = jnp.asarray(config.gap_edges_vol, jnp.float32)
    ret_edges = jnp.asarray(config.return_edges_vol, jnp.float32)
    num_ret = ret_z.shape[0]
    num_outcomes = gap_z.shape[0] * num_ret
    network = MCTSNetwork(config.network, num_actions, num_outcomes)
    p_size = portfolio_size(env.num_assets, True)
    codec = obs_codec(env)
    # Self-play env: the trading env, or the adversarial wrapper around it (same states; the
    # search still plans on the unwrapped env's accounting and its clean MarketData).
    play_env = AdversarialWrapper(env) if config.adversarial else env
    replay: Replay = make_replay(config.buffer_size, config.num_envs, config.batch_size,
                                 config.n_step)
    max_depth = config.max_depth or None

    # ---- the tree ------------------------------------------------------------------------

    def node_portfolio_vector(node: Node) -> jax.Array:
        s = node.portfolio
        return jax.vmap(portfolio_vector)(s.units, s.entry_price, s.bars_in_position, s.cash,
                                          s.equity, s.peak_equity, node.bar.close)

    def root_node(params, obs, env_state, env_params) -> Node:
        """The root: latent of the window at t, the env state's exact portfolio, bar t's
        decision values. Reads MarketData at row t only."""
        latent = network.apply(params, obs[:, :-p_size], method=MCTSNetwork.embed)
        bar = jax.vmap(env.decision_bar, in_axes=(0, None))(env_state, env_params)
        return Node(latent, env_state, bar)

    def modelled_bar(bar: Any, outcome: jax.Array) -> Any:
        """The next bar [A] of chance outcome `outcome` after decision bar `bar`."""
        scale = jnp.maximum(bar.volatility, 1e-4)
        open1 = bar.close * jnp.exp(gap_z[outcome // num_ret] * scale)
        close1 = open1 * jnp.exp(ret_z[outcome % num_ret] * scale)
        return accounting.NextBar(open=open1, high=jnp.maximum(open1, close1),
                                  low=jnp.minimum(open1, close1), close=close1,
                                  valid=jnp.ones_like(close1))

    def decide(node: Node, action: jax.Array, env_params: Any) -> Afterstate:
        """The exact order of `action` at each node of the batch (envs.accounting.decide)."""
        def one(state, bar, a):
            return accounting.decide(state, env.action_to_weights(a, env_params), bar,
                                     env_params)
        return Afterstate(node, jax.vmap(one)(node.portfolio, node.bar, action))

    def settle(chance: Afterstate, outcome: jax.Array, env_params: Any):
        """Outcome [B] settles each afterstate: (child nodes, rewards [B], terminated [B])."""
        def one(after, bar, o):
            next_bar = modelled_bar(bar, o)
            nxt, reward, terminated, _, _ = accounting.settle(after, next_bar, env_params)
            return nxt, bar.replace(close=next_bar.close), reward, terminated

        nxt, bar, reward, terminated = jax.vmap(one)(chance.after, chance.node.bar, outcome)
        child = chance.node.replace(portfolio=nxt, bar=bar)
        return child, reward.astype(jnp.float32), terminated

    def chance_logits(params, node: Node) -> jax.Array:
        return network.apply(params, node.latent, method=MCTSNetwork.next_bar)

    def evaluate(params, node: Node) -> tuple[jax.Array, jax.Array]:
        return network.apply(params, node.latent, node_portfolio_vector(node),
                             method=MCTSNetwork.predict)

    def all_outcomes(params, chance: Afterstate, env_params, gamma):
        """Every outcome of each afterstate of the batch: children [K, B], rewards,
        survival, the children's logits and values, the outcome probabilities [K, B] and the
        afterstate's expected return sum_k p_k (r_k + gamma alive_k V_k) [B]."""
        batch = chance.after.order_units.shape[0]
        outcomes = jnp.broadcast_to(jnp.arange(num_outcomes)[:, None], (num_outcomes, batch))
        children, rewards, terminated = jax.vmap(settle, in_axes=(None, 0, None))(
            chance, outcomes, env_params)
        flat = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), children)
        logits, values = evaluate(params, flat)
        logits = logits.reshape((num_outcomes, batch, num_actions))
        values = values.reshape((num_outcomes, batch))
        probs = jax.nn.softmax(chance_logits(params, chance.node), axis=-1).T  # [K, B]
        alive = 1.0 - terminated.astype(jnp.float32)
        expected = jnp.sum(probs * (rewards + gamma * alive * values), axis=0)
        return children, rewards, alive, logits, values, probs, expected

    def gumbel_recurrent(tree: TreeParams, key, action, node: Node):
        params, gamma = tree.network, tree.hparams.gamma
        children, rewards, alive, logits, values, probs, _ = all_outcomes(
            params, decide(node, action, tree.env_params), tree.env_params, gamma)
        batch = jnp.arange(action.shape[0])
        # Evaluation is deterministic: the child continues from the most probable outcome
        # (the first on ties), so a numpy runner repeats the same tree without JAX's keys.
        sampled = jnp.where(tree.deterministic, jnp.argmax(probs.T, axis=-1),
                            jax.random.categorical(key, jnp.log(probs.T + 1e-12)))
        child = jax.tree.map(lambda x: x[sampled, batch], children)
        out = mctx.RecurrentFnOutput(
            reward=jnp.sum(probs * rewards, axis=0),
            discount=gamma * jnp.ones_like(action, jnp.float32),
            prior_logits=logits[sampled, batch],
            value=jnp.sum(probs * alive * values, axis=0))
        return out, child

    def decision_recurrent(tree: TreeParams, key, action, node: Node):
        params, gamma = tree.network, tree.hparams.gamma
        chance = decide(node, action, tree.env_params)
        *_, expected = all_outcomes(params, chance, tree.env_params, gamma)
        out = mctx.DecisionRecurrentFnOutput(chance_logits=chance_logits(params, node),
                                             afterstate_value=expected)
        return out, chance

    def chance_recurrent(tree: TreeParams, key, outcome, chance: Afterstate):
        params, gamma = tree.network, tree.hparams.gamma
        child, reward, terminated = settle(chance, outcome, tree.env_params)
        logits, value = evaluate(params, child)
        out = mctx.ChanceRecurrentFnOutput(
            action_logits=logits, value=value, reward=reward,
            discount=gamma * (1.0 - terminated.astype(jnp.float32)))
        return out, child

    def search(network_params, hp, obs, env_state, env_params, key, deterministic):
        """Batched search from the env states: (action, improved policy [B, A], root value)."""
        node = root_node(network_params, obs, env_state, env_params)
        logits, value = evaluate(network_params, node)
        root = mctx.RootFnOutput(prior_logits=logits, value=value, embedding=node)
        deterministic = jnp.asarray(deterministic)
        search_params = TreeParams(network_params, hp, env_params, deterministic)
        if config.search == "gumbel":
            out = mctx.gumbel_muzero_policy(
                search_params, key, root, gumbel_recurrent, config.num_simulations,
                max_depth=max_depth, max_num_considered_actions=num_actions,
                gumbel_scale=jnp.where(deterministic, 0.0, hp.gumbel_scale))
            weights = out.action_weights
            action = out.action
        else:
            out = mctx.stochastic_muzero_policy(
                search_params, key, root, decision_recurrent, chance_recurrent,
                config.num_simulations, max_depth=max_depth,
                dirichlet_fraction=jnp.where(deterministic, 0.0, hp.dirichlet_fraction),
                pb_c_init=hp.pb_c_init, temperature=hp.temperature)
            weights = out.action_weights
            action = jnp.where(deterministic, jnp.argmax(weights, axis=-1), out.action)
        root_value = out.search_tree.summary().value
        return action.astype(jnp.int32), weights, root_value

    # ---- learning ------------------------------------------------------------------------

    def realized_outcome(bar: jax.Array, env_params: Any) -> jax.Array:
        """The bucket of the bar that followed `bar` (asset 0), in bar `bar`'s volatility."""
        m = env_params.market
        scale = jnp.maximum(m.volatility[bar, 0], 1e-4)
        gap = jnp.log(m.open[bar + 1, 0] / m.close[bar, 0]) / scale
        ret = jnp.log(m.close[bar + 1, 0] / m.open[bar + 1, 0]) / scale
        g = jnp.searchsorted(gap_edges, gap, side="right")
        r = jnp.searchsorted(ret_edges, ret, side="right")
        return (g * num_ret + r).astype(jnp.int32)

    def init(key: jax.Array, hparams: Any, env_params: Any) -> MCTSState:
        hp = hparams_as_arrays(config.hparams if hparams is None else hparams)
        key, net_key, env_key = jax.random.split(key, 3)
        runner = reset_runner(play_env, env_params, env_key, config.num_envs)
        obs = runner.obs
        params = network.init(net_key, obs[:, :-p_size], obs[:, -p_size:])
        stored = {"index": jnp.zeros((config.num_envs,), jnp.int32),
                  "search_policy": jnp.zeros((config.num_envs, num_actions), jnp.float32)}
        return MCTSState(params=params, opt_state=adam_init(params),
                         buffer=replay.init(example_item(codec, runner, stored)),
                         runner=runner, rng=key, hparams=hp,
                         update_step=jnp.zeros((), jnp.int32),
                         average=jax.tree.map(jnp.zeros_like, params),
                         average_weight=jnp.zeros((), jnp.float32))

    def learn(state: MCTSState, key: jax.Array, env_params: Any):
        hp = state.hparams
        items, _, _ = replay.sample(state.buffer, key)
        time_major = lambda x: jnp.swapaxes(x, 0, 1)
        returns, discount, last = n_step_returns(time_major(items["reward"]),
                                                 time_major(items["terminated"]),
                                                 time_major(items["truncated"]), hp.gamma)
        first = jax.tree.map(lambda x: x[:, 0], items["obs"])
        boot = jax.tree.map(lambda x: jnp.take_along_axis(
            x, last.reshape((-1,) + (1,) * (x.ndim - 1)), axis=1)[:, 0], items["next_obs"])
        obs = codec.decode(first, env_params)
        next_obs = codec.decode(boot, env_params)
        if config.adversarial:  # the wrapper's observation noise (replay stores clean windows)
            noisy_key, noise_key = jax.random.split(jax.random.fold_in(key, 1))
            noisy = jax.random.bernoulli(noisy_key, play_env.obs_noise_prob, obs.shape[:1])
            noise = play_env.obs_noise_std * jax.random.normal(noise_key, obs.shape, obs.dtype)
            obs = jnp.where(noisy[:, None], obs + noise, obs)
        target_policy = items["action"]["search_policy"][:, 0]
        outcome = realized_outcome(first["bar"], env_params)
        _, next_value, _ = network.apply(state.params, next_obs[:, :-p_size],
                                         next_obs[:, -p_size:])
        value_target = jax.lax.stop_gradient(returns + discount * next_value)

        def loss_fn(params):
            logits, value, model_logits = network.apply(params, obs[:, :-p_size],
                                                        obs[:, -p_size:])
            policy_loss = -jnp.mean(jnp.sum(target_policy * jax.nn.log_softmax(logits), -1))
            value_loss = 0.5 * jnp.mean((value - value_target) ** 2)
            model_loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
                model_logits, outcome))
            loss = policy_loss + hp.value_coef * value_loss + hp.model_coef * model_loss
            return loss, (policy_loss, value_loss, model_loss, value)

        (loss, (p_loss, v_loss, m_loss, value)), grads = jax.value_and_grad(
            loss_fn, has_aux=True)(state.params)
        params, opt_state = adam_step(state.params, grads, state.opt_state, hp.learning_rate,
                                      hp.max_grad_norm)
        # Polyak average: with a constant Adam step the params keep moving with the minibatch
        # noise, and the next-bar model's base rate with them (~0.02-0.03 between checkpoints
        # of one run on the planted market, BENCHMARKS.md); the average damps that walk.
        decay = hp.param_average_decay
        average = jax.tree.map(lambda avg, p: decay * avg + (1.0 - decay) * p,
                               state.average, params)
        average_weight = decay * state.average_weight + (1.0 - decay)
        metrics = {"loss": loss, "policy_loss": p_loss, "value_loss": v_loss,
                   "model_loss": m_loss, "value_mean": jnp.mean(value),
                   "grad_norm": optax.global_norm(grads)}
        return state.replace(params=params, opt_state=opt_state, average=average,
                             average_weight=average_weight), metrics

    def update(state: MCTSState, env_params: Any) -> tuple[MCTSState, Metrics]:
        hp = state.hparams

        def behaviour(obs, env_state, key):
            action, weights, _ = search(state.params, hp, obs, env_state, env_params, key,
                                        False)
            return {"index": action, "search_policy": weights}, action

        state, metrics = collect_and_learn(state, play_env, env_params, replay, codec, behaviour,
                                           lambda s, k: learn(s, k, env_params), config,
                                           steps_per_update)
        return state, metrics

    def policy(params: SearchParams, obs, env_state, env_params, key, carry,
               deterministic) -> PolicyOutput:
        """Batched search from the env states' exact portfolios: the search's action, its
        improved policy as logits, the root value."""
        action, weights, root_value = search(params.network, params.hparams, obs, env_state,
                                             env_params, key, deterministic)
        return policy_output(env, env_params, action, carry,
                             logits=jnp.log(jnp.maximum(weights, 1e-30)), value=root_value)

    return build_agent(
        family="mcts",
        config=config,
        network=network,
        init=init,
        update=update,
        policy=policy,
        policy_params=lambda state: SearchParams(averaged_params(state), state.hparams),
        env_axis=env_axis,
    )


def policy_head_act(agent: Agent):
    """`Agent.act` of an mcts agent's policy head alone, without search (its argmax; a
    sample from it when not deterministic): what the search adds is measured against it."""
    from envs.observation import portfolio_size

    p_size = portfolio_size(1, True)

    def act(params: SearchParams, obs, env_state, env_params, key, carry, deterministic):
        logits, _, _ = agent.network.apply(params.network, obs[None, :-p_size],
                                           obs[None, -p_size:])
        sampled = jax.random.categorical(key, logits[0])
        action = jnp.where(jnp.asarray(deterministic), jnp.argmax(logits[0]), sampled)
        return action.astype(jnp.int32), carry

    return act


def next_bar_up_probability(agent: Agent, env: Any, params: SearchParams, env_params: Any,
                            bars: jax.Array) -> jax.Array:
    """P(close_{t+1} > close_t) [N] the next-bar model gives at each bar t of `bars` (asset 0;
    an outcome whose modelled close equals close_t counts one half). Reads rows <= t only."""
    from envs.observation import feature_window

    config = agent.config
    gap_z = bucket_centers(config.gap_edges_vol)
    ret_z = bucket_centers(config.return_edges_vol)
    move = (gap_z[:, None] + ret_z[None, :]).reshape(-1)
    up = jnp.asarray(np.where(move > 0, 1.0, np.where(move == 0, 0.5, 0.0)), jnp.float32)
    windows = jax.vmap(lambda t: feature_window(env_params.market.features, t,
                                                env.window_bars).reshape(-1))(bars)
    latent = agent.network.apply(params.network, windows, method=MCTSNetwork.embed)
    logits = agent.network.apply(params.network, latent, method=MCTSNetwork.next_bar)
    return jax.nn.softmax(logits, axis=-1) @ up


def calibration_table(predicted: np.ndarray, realized: np.ndarray, bins: int = 10
                      ) -> list[dict[str, float]]:
    """Rows per decile of the predicted up-probability: bars, mean predicted, realized
    frequency of an up close."""
    order = np.argsort(predicted, kind="stable")
    rows = []
    for part in np.array_split(order, bins):
        if len(part):
            rows.append({"bars": float(len(part)), "predicted": float(predicted[part].mean()),
                         "realized": float(realized[part].mean())})
    return rows
