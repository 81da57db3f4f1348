"""An ensemble of registered agents trained side by side in one program, combined per bar.

    jaxtrade train agent=ensemble                                   # ppo, cvar_ppo, sac, qrdqn
    jaxtrade train agent=ensemble 'agent.members=[ppo,sac]' agent.sac.hparams.tau=0.01

Members. `members` names registered agents; each member's settings are the ensemble
config's field of the same name (that agent's own config dataclass, its defaults), so
`agent.sac.hparams.tau=0.01` sets SAC's tau. A member's network can observe some of the
market's features only, so members see different views of the same market:

    jaxtrade train agent=ensemble 'agent.members=[ppo,cvar_ppo]' \
        'agent.ppo.network.observe=[zscore_log_return_20]' \
        'agent.cvar_ppo.network.observe=[zscore_log_volume_20]'

(`network.observe`, agents/common/networks.py; experiments/common.py resolves the names
against the market's features, an unknown one is a ConfigError listing them; the backtest,
export and live runner apply the same selection; mcts members refuse it).

Every member trains on the same market (the ensemble's env params: one device copy) with its
own env batch of `env.num_envs` envs, its own optimizer, replay and RNG, and its own kind of
actions: a member whose config declares `env_action_mode` (SAC, TD3, DDPG: continuous;
discrete SAC: discrete) trades the trading env in that mode, the others in the env's default
discrete mode (`TradingEnv.with_action_mode`: same market, same params, another static action
mode). The ensemble itself trades the
continuous env: its action is the combined target weights.

Keys. Member `name` starts from `member_key(key, name)` = fold_in(key, crc32(name)), a pure
function of the run's key and the member's name (not its position in the list), so a member
trained alone with `train(member_key(key, name))` and the same settings (`member_config`)
reproduces its part of the ensemble exactly (tests/test_ensemble.py).

Clock and interleaving. Members differ in env steps per update (PPO 8 x 128, SAC 8 x 2, ...).
With T = train.total_steps and s_m a member's env steps per update, the ensemble runs
U = min_m floor(T / s_m) updates (rounded down to whole chunks), and each ensemble update
runs r_m = floor(T / (U s_m)) updates of member m in a `lax.scan`, one member after the
other. Every member thus reaches U r_m s_m <= T env steps (T rounded down to its own update
size: the same budget per member) on a static schedule: no `cond`, so vmapped seeds and
hyperparameters cost no extra member updates. A member is built with that total and
`updates_per_chunk = r_m`, so its learning-rate schedules see the updates it really does.
`steps_per_update` (the ensemble's clock, for progress and intervals) is the largest r_m s_m.

Metrics: `ensemble/<member>/<metric>` per member (one value per ensemble update: the mean of
its r_m updates, or the last value for run states such as episode_return), and the contract's
own: `ensemble/episode_return` and `ensemble/episode_length` (means over members),
`ensemble/env_steps`, `ensemble/loss` (sum of the members' losses, so a NaN in any stops the
run).

Policy. `policy` calls every member's policy on the same observations and env states and
combines their target weights with the rule `combine` (agents/common/combine.py):
  equal   1 / M each
  vote    Bayesian vote: posterior probability of being best from each member's paper returns
          after costs over the last `vote_window_bars` bars (prior worth `vote_prior_bars`)
  router  regime router: P(regime at t) @ table [R, M] (state `combine.router`, fitted on
          training + validation bars by jaxtrade/evaluate/ensemble.py; equal until then)
  winner  winner-takes-all: one-hot `combine.winner` (the best validation Sharpe; fitted by
          jaxtrade/evaluate/ensemble.py; equal until then)
`combine` sets the state's traced `combine.rule` (an index into COMBINE_RULES) and
`min_trade_probability` its traced `combine.min_trade_probability`, so one compiled walk
evaluates every rule and threshold. The recurrent carry holds the members' carries, the
vote's window (previous targets, paper returns) and `report` (this bar's member weights,
member targets and trade probability, which the backtest records per bar), so the walk
updates it bar by bar with nothing after t.
The trade probability (`combine.trade_probability`) is fitted to the ensemble's own paper
returns standardized by the book's volatility at each decision (sum_a |w_a| vol_a), from a
prior worth one window (`vote_window_bars`) whose mean is `combine.trade_prior_mean` (0: no
edge, until jaxtrade/evaluate/ensemble.py fits it on validation bars); the cost of
the trade now is compared on the same scale.
`PolicyOutput.ensemble` holds `EnsembleBeliefs`: member weights [B, M], member target
weights [B, M, A], the trade probability [B] and each member's own PolicyOutput. With
`min_trade_probability` > 0 the target is flat where the trade probability is below it.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from agents.common import combine as comb
from agents.common.agent import build_agent, policy_output
from agents.common.config import config_from_dict, config_to_dict
from agents.common.rollout import env_axis_flags
from agents.common.types import Agent, Metrics, PolicyOutput, is_last_value_metric, metric_name
from jaxtrade.errors import ConfigError

COMBINE_RULES = ("equal", "vote", "router", "winner")
# A member's fields the ensemble sets (the same for every member).
SIZE_KEYS = ("num_envs", "total_steps", "updates_per_chunk")


def member_key(key: jax.Array, name: str) -> jax.Array:
    """The key member `name` starts from (see the module docstring)."""
    return jax.random.fold_in(key, zlib.crc32(name.encode()) & 0x7FFFFFFF)


@dataclasses.dataclass(frozen=True)
class EnsembleConfigBase:
    """The ensemble's own settings; `make_config_class` adds one field per registered agent."""

    name: str = "ensemble"
    members: tuple[str, ...] = ("ppo", "cvar_ppo", "sac", "qrdqn")
    num_envs: int = 8  # envs per member
    total_steps: int = 500_000  # env steps per member
    updates_per_chunk: int = 10  # ensemble updates per host call
    combine: str = "vote"  # equal | vote | router | winner
    vote_window_bars: int = 64
    vote_prior_bars: float = 20.0
    min_trade_probability: float = 0.0  # 0: off; else flat below it

    registry: ClassVar[Mapping[str, Any]] = {}
    env_action_mode: ClassVar[str] = "continuous"

    def __post_init__(self) -> None:
        if not self.members:
            raise ConfigError("agent.members=[] is not allowed: name at least one agent")
        for name in self.members:
            if name not in self.agent_fields():
                raise ConfigError(f"agent.members: {name!r} is not a registered agent; choose "
                                  f"from {sorted(self.agent_fields())}")
        if len(set(self.members)) != len(self.members):
            raise ConfigError(f"agent.members={list(self.members)} names an agent twice")
        if self.combine not in COMBINE_RULES:
            raise ConfigError(f"agent.combine={self.combine!r} is not allowed: choose one of "
                              f"{', '.join(COMBINE_RULES)}")
        if self.vote_window_bars < 2:
            raise ConfigError("agent.vote_window_bars must be >= 2")
        if not 0.0 <= self.min_trade_probability < 1.0:
            raise ConfigError("agent.min_trade_probability must be in [0, 1)")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Any:
        data = dict(data or {})
        network = data.pop("network", None)
        if network:
            raise ConfigError("network.* does not apply to agent=ensemble: set a member's "
                              "network as agent.<member>.network.<key>")
        for name in cls.agent_fields():
            given = data.get(name)
            if isinstance(given, Mapping):
                for key in SIZE_KEYS:
                    if key in given:
                        where = {"num_envs": "env.num_envs", "total_steps": "train.total_steps",
                                 "updates_per_chunk": "agent.updates_per_chunk"}[key]
                        raise ConfigError(f"agent.{name}.{key} is not allowed: every member "
                                          f"uses {where}")
        return config_from_dict(cls, data)

    @classmethod
    def registered_defaults(cls) -> dict[str, Any]:
        """The defaults Hydra composes on (jaxtrade/config/schema.py): members' size keys
        are the ensemble's, so they are not shown per member."""
        out = config_to_dict(cls())
        for name in cls.agent_fields():
            for key in SIZE_KEYS:
                out[name].pop(key, None)
        return out

    @classmethod
    def agent_fields(cls) -> list[str]:
        """The fields that hold an agent's config (one per agent registered before)."""
        return [f.name for f in dataclasses.fields(cls) if f.name in cls.registry]

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    # ---- sizes ---------------------------------------------------------------------------

    def _sized(self, name: str, total_steps: int, per_chunk: int) -> Any:
        return dataclasses.replace(getattr(self, name), num_envs=self.num_envs,
                                   total_steps=total_steps, updates_per_chunk=per_chunk)

    def schedule(self) -> tuple[int, int, dict[str, int]]:
        """(ensemble updates U, updates per chunk, {member: its updates per ensemble update})."""
        per_update = {n: self._sized(n, self.total_steps, 1).run_sizes()[2]
                      for n in self.members}
        most = min(self.total_steps // s for s in per_update.values())
        if most < 1:
            raise ConfigError(f"train.total_steps={self.total_steps} is less than one update of "
                              f"every member (env steps per update: {per_update})")
        per_chunk = max(1, min(self.updates_per_chunk, most))
        num_updates = (most // per_chunk) * per_chunk
        return num_updates, per_chunk, {
            n: self.total_steps // (num_updates * s) for n, s in per_update.items()}

    def member_config(self, name: str) -> Any:
        """Member `name`'s config as the ensemble trains it (its own settings; the ensemble's
        envs, its share of the schedule)."""
        num_updates, _, repeats = self.schedule()
        spu = self._sized(name, self.total_steps, 1).run_sizes()[2]
        return self._sized(name, num_updates * repeats[name] * spu, repeats[name])

    def run_sizes(self) -> tuple[int, int, int]:
        num_updates, per_chunk, repeats = self.schedule()
        steps = max(repeats[n] * self.member_config(n).run_sizes()[2] for n in self.members)
        return num_updates, per_chunk, steps

    @property
    def hparams(self) -> dict[str, Any]:
        """The members' numeric hyperparameters, {member: its hparams}: a pytree, so seeds and
        member hyperparameters vmap as they do for one agent."""
        return {n: getattr(self, n).hparams for n in self.members}

    def check_num_envs(self, num_envs: int) -> None:
        for name in self.members:
            check = getattr(getattr(self, name), "check_num_envs", None)
            if check is not None:
                check(num_envs)

    def auto_sizing(self, env: Any, env_params: Any) -> dict[str, Any]:
        """Memory figures for env.num_envs=auto and the memory check: the members' summed."""
        import numpy as np

        obs = jax.eval_shape(lambda k: env.reset(k, env_params)[0], jax.random.key(0))
        obs_bytes = int(np.prod(obs.shape)) * 4
        sizings = [getattr(self, n).auto_sizing(env, env_params) for n in self.members]
        per_env = sum(s.get("per_env_bytes") or 2 * s["rollout_len"] * (obs_bytes + 32)
                      for s in sizings)
        return {"rollout_len": max(s["rollout_len"] for s in sizings),
                "per_env_bytes": per_env,
                "fixed_bytes": sum(int(s.get("fixed_bytes", 0)) for s in sizings),
                "cpu_envs_per_core": min(s.get("cpu_envs_per_core", 64) for s in sizings)}

    def export_head(self) -> dict[str, Any]:
        raise ConfigError("an ensemble has no single network head: `jaxtrade export` writes "
                          "an ensemble bundle (every member + the combination) instead")


def make_config_class(registry: Mapping[str, Any]) -> type:
    """EnsembleConfig: EnsembleConfigBase plus one field per agent in `registry` (name ->
    AgentSpec), holding that agent's config dataclass with its defaults."""
    fields = [(name, spec.config_class,
               dataclasses.field(default_factory=spec.config_class))
              for name, spec in registry.items() if name != "ensemble"]
    cls = dataclasses.make_dataclass("EnsembleConfig", fields, bases=(EnsembleConfigBase,),
                                     frozen=True)
    cls.__module__ = __name__
    cls.registry = registry
    return cls


@struct.dataclass
class EnsembleState:
    members: dict[str, Any]  # member name -> its own state
    combine: dict[str, jax.Array]  # fitted: router [R, M], winner [M], trade_prior_mean []
    update_step: jax.Array  # int32 scalar, ensemble updates done


class VoteCarry(NamedTuple):
    """What the combination remembers between bars, per env (see agents/common/combine.py)."""

    last_bar: jax.Array  # int32, the bar of the previous decision (-1: none yet)
    member_target: jax.Array  # [M, A] targets decided at last_bar
    member_before: jax.Array  # [M, A] targets decided the bar before
    target: jax.Array  # [A] the ensemble's target decided at last_bar
    cost_rate: jax.Array  # [A] the env's cost per traded notional at last_bar
    scale: jax.Array  # [] the book's volatility at last_bar: sum_a |target_a| vol_a
    member_returns: jax.Array  # [W, M] paper returns after costs, ring buffer
    own_returns: jax.Array  # [W] the ensemble's gross paper returns / the book's volatility
    filled: jax.Array  # [W] bool, rows that hold a return
    exposed: jax.Array  # [W] bool, rows where the ensemble held a position
    slot: jax.Array  # int32, next row to write


class EnsembleBeliefs(NamedTuple):
    """`PolicyOutput.ensemble` of the ensemble agent (None for single agents)."""

    weights: jax.Array  # [B, M] member weights after the rule
    member_target_weights: jax.Array  # [B, M, A]
    trade_probability: jax.Array  # [B]
    members: dict[str, PolicyOutput]  # each member's own output


def make_agent(config: Any, env: Any, env_params: Any) -> Agent:
    # envs imports gymnax, which starts JAX's backend; importing `agents` (config
    # registration, before jax.distributed starts) must not.
    from envs.costs import fill_cost_rate

    registry = type(config).registry
    if getattr(env, "action_to_weights", None) is None or not hasattr(env, "with_action_mode"):
        raise ConfigError("agent=ensemble needs the trading env (members are combined in "
                          "target-weights space)")
    if env.action_mode != "continuous":
        raise ConfigError("agent=ensemble trades its combined target weights: it needs "
                          "env.action_mode=continuous")
    names = tuple(config.members)
    _, _, repeats = config.schedule()
    members: dict[str, Agent] = {}
    for name in names:
        cls = registry[name].config_class
        member_env = env.with_action_mode(getattr(cls, "env_action_mode", "discrete"))
        members[name] = registry[name].make_agent(config.member_config(name), member_env,
                                                  env_params)
    num_members = len(names)
    num_regimes = int(env_params.market.regime.shape[-1])
    num_assets = int(env.num_assets)
    window = int(config.vote_window_bars)

    def init(key: jax.Array, hparams: Any, env_params: Any) -> EnsembleState:
        hparams = hparams or {}
        return EnsembleState(
            members={n: members[n].init(member_key(key, n), hparams.get(n), env_params)
                     for n in names},
            combine={"rule": jnp.asarray(COMBINE_RULES.index(config.combine), jnp.int32),
                     "min_trade_probability": jnp.asarray(config.min_trade_probability,
                                                          jnp.float32),
                     "router": jnp.full((num_regimes, num_members), 1.0 / num_members),
                     "winner": jnp.full((num_members,), 1.0 / num_members),
                     "trade_prior_mean": jnp.zeros((), jnp.float32)},
            update_step=jnp.zeros((), jnp.int32))

    def update(state: EnsembleState, env_params: Any) -> tuple[EnsembleState, Metrics]:
        new_members, metrics = {}, {}
        for name in names:
            member = members[name]
            member_state, stacked = jax.lax.scan(
                lambda s, _, m=member: m.update(s, env_params), state.members[name], None,
                repeats[name])
            new_members[name] = member_state
            for key, values in stacked.items():
                value = values[-1] if is_last_value_metric(key) else values.mean()
                metrics[f"{name}/{metric_name(key)}"] = value
        state = state.replace(members=new_members, update_step=state.update_step + 1)
        mean_of = lambda what: jnp.mean(jnp.stack([metrics[f"{n}/{what}"] for n in names]))
        metrics.update({
            "episode_return": mean_of("episode_return"),
            "episode_length": mean_of("episode_length"),
            "env_steps": state.update_step.astype(jnp.float32) * steps_per_update,
            "loss": sum(metrics[f"{n}/loss"] for n in names),
        })
        return state, metrics

    def init_carry() -> Any:
        zeros_ma = jnp.zeros((num_members, num_assets), jnp.float32)
        vote = VoteCarry(
            last_bar=jnp.asarray(-1, jnp.int32), member_target=zeros_ma, member_before=zeros_ma,
            target=jnp.zeros((num_assets,), jnp.float32),
            cost_rate=jnp.zeros((num_assets,), jnp.float32),
            scale=jnp.zeros((), jnp.float32),
            member_returns=jnp.zeros((window, num_members), jnp.float32),
            own_returns=jnp.zeros((window,), jnp.float32),
            filled=jnp.zeros((window,), bool), exposed=jnp.zeros((window,), bool),
            slot=jnp.asarray(0, jnp.int32))
        report = {"weights": jnp.zeros((num_members,), jnp.float32),
                  "member_targets": zeros_ma, "trade_probability": jnp.zeros((), jnp.float32)}
        return {"members": {n: members[n].init_carry() for n in names}, "vote": vote,
                "report": report}

    def combine_one(vote: VoteCarry, targets: jax.Array, bar: jax.Array, env_params: Any,
                    fitted: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array, jax.Array,
                                                           VoteCarry]:
        """One env: record the paper returns that closed at `bar`, then weigh `targets`
        [M, A] decided at `bar`. Returns (member weights, combined target, trade
        probability, carry)."""
        market = env_params.market
        close_now = market.close[bar]
        consecutive = vote.last_bar == bar - 1
        close_before = market.close[jnp.maximum(bar - 1, 0)]
        member_x = comb.paper_returns(vote.member_target, vote.member_before, close_before,
                                      close_now, vote.cost_rate)
        own_x = (vote.target * (close_now / close_before - 1.0)).sum()
        # Standardized by the book's volatility when it was decided: calm and volatile bars
        # then share one scale (see the trade probability below).
        own_x = jnp.where(vote.scale > 1e-12, own_x / jnp.maximum(vote.scale, 1e-12), 0.0)
        write = lambda ring, x: ring.at[vote.slot].set(jnp.where(consecutive, x, ring[vote.slot]))
        vote = vote._replace(
            member_returns=write(vote.member_returns, member_x),
            own_returns=write(vote.own_returns, own_x),
            filled=write(vote.filled, True),
            exposed=write(vote.exposed, jnp.abs(vote.target).sum() > 1e-9),
            slot=jnp.where(consecutive, (vote.slot + 1) % window, vote.slot))
        # A return of a fully invested book varies about like the asset: the prior's floor.
        market_variance = jnp.mean(market.volatility[bar]) ** 2
        # Every rule's weights, the traced `rule` picks one: one compiled walk serves all
        # rules (the report compares them on the same checkpoint).
        by_rule = {
            "equal": comb.equal_weights(num_members),
            "vote": comb.vote_weights(vote.member_returns, vote.filled, config.vote_prior_bars,
                                      market_variance),
            "router": comb.router_weights(market.regime[bar], fitted["router"]),
            "winner": fitted["winner"],
        }
        weights = jnp.stack([by_rule[r] for r in COMBINE_RULES])[fitted["rule"]]
        target = weights @ targets
        cost_rate = fill_cost_rate(market.volatility[bar], env_params.costs, 0.0)
        trade_cost = (cost_rate * jnp.abs(target - vote.target)).sum()
        exposure = jnp.abs(target).sum()
        # The predictive is of the standardized return x / s(t), s(t) = sum_a |w_a| vol_a(t)
        # (the book's volatility at the decision), so the cost threshold is cost / s(t) and
        # the variance floor 1: a raw-return predictive pools calm and volatile bars on one
        # scale and misjudges both (and the cost against them).
        scale = (jnp.abs(target) * market.volatility[bar]).sum()
        # The prior (no edge, or the rule's edge fitted on validation bars) is
        # worth one window: the probability leaves the long-run rate only as far as a full
        # window of evidence carries it.
        probability = comb.trade_probability(
            vote.own_returns, vote.filled & vote.exposed, float(window),
            trade_cost / jnp.maximum(scale, 1e-12), exposure, 1.0,
            fitted["trade_prior_mean"])
        # A traced threshold (0: every probability passes), so the report can show the
        # gate's effect with the same compiled walk.
        target = jnp.where(probability >= fitted["min_trade_probability"], target, 0.0)
        vote = vote._replace(last_bar=bar.astype(jnp.int32), member_before=vote.member_target,
                             member_target=targets, target=target, cost_rate=cost_rate,
                             scale=(jnp.abs(target) * market.volatility[bar]).sum())
        return weights, target, probability, vote

    def policy(params, obs, env_states, env_params, key, carry, deterministic) -> PolicyOutput:
        outputs = {}
        for i, name in enumerate(names):
            outputs[name] = members[name].policy(
                params["members"][name], obs, env_states, env_params,
                jax.random.fold_in(key, i), carry["members"][name], deterministic)
        targets = jnp.stack([outputs[n].target_weights for n in names], axis=1)  # [B, M, A]
        weights, target, probability, vote = jax.vmap(
            combine_one, in_axes=(0, 0, 0, None, None))(
            carry["vote"], targets, env_states.t, env_params, params["combine"])
        # `report`: what this bar's decision was made of; the backtest records it per bar.
        new_carry = {"members": {n: outputs[n].carry for n in names}, "vote": vote,
                     "report": {"weights": weights, "member_targets": targets,
                                "trade_probability": probability}}
        out = policy_output(env, env_params, target, new_carry)
        return out._replace(ensemble=EnsembleBeliefs(weights, targets, probability, outputs))

    steps_per_update = config.run_sizes()[2]

    def env_axis(state: EnsembleState) -> EnsembleState:
        flags = {}
        for name in names:
            member_flags = members[name].env_axis
            flags[name] = (member_flags(state.members[name]) if member_flags is not None
                           else env_axis_flags(state.members[name], False))
        return EnsembleState(members=flags, combine=env_axis_flags(state.combine, False),
                             update_step=False)

    agent = build_agent(
        family="ensemble", config=config, network=None, init=init, update=update,
        policy=policy,
        policy_params=lambda state: {
            "members": {n: members[n].policy_params(state.members[n]) for n in names},
            "combine": state.combine},
        init_carry=init_carry, env_axis=env_axis)
    return agent._replace(members=members)
