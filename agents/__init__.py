"""Reinforcement-learning agents: one compiled training program per run.

    train = agents.make_train(config, env, env_params)
    out = train(jax.random.key(0))                      # TrainOutput(state, metrics[num_updates])
    outs = jax.jit(jax.vmap(train))(keys, hparams)      # seeds x hyperparameters, one program

`config.name` selects the algorithm in `AGENTS`. Agents accept any gymnax-style env (reset/step
pure functions, `action_space(params)` Discrete or Box), not only jaxtrade's trading env. The
protocol every agent follows and the metrics it reports are in agents/common/types.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

import jaxtrade  # noqa: F401  (first: sets XLA:CPU flags before JAX starts its backend)
from agents import cvar_ppo, dqn, ensemble, mcts, ppo, qrdqn, sac, td3
from agents.common.config import stack_hparams
from agents.common.networks import NetworkConfig
from agents.common.types import Agent, Metrics, TrainOutput
from agents.cvar_ppo import CVaRPPOConfig, CVaRPPOHParams
from agents.dqn import DQNConfig, DQNHParams
from agents.mcts import MCTSConfig, MCTSHParams
from agents.ppo import PPOConfig, PPOHParams
from agents.qrdqn import QRDQNConfig, QRDQNHParams
from agents.sac import SACConfig, SACDiscreteConfig, SACDiscreteHParams, SACHParams
from agents.td3 import DDPGConfig, DDPGHParams, TD3Config, TD3HParams
from jaxtrade.errors import ConfigError


class AgentSpec(NamedTuple):
    config_class: type
    make_agent: Callable[..., Agent]
    summary: str  # one line for help texts


AGENTS: dict[str, AgentSpec] = {
    "ppo": AgentSpec(PPOConfig, ppo.make_agent, "PPO, discrete or continuous actions"),
    "cvar_ppo": AgentSpec(CVaRPPOConfig, cvar_ppo.make_agent,
                          "PPO with a CVaR constraint by dual ascent"),
    "dqn": AgentSpec(DQNConfig, dqn.make_agent,
                     "DQN: double, dueling, n-step, prioritized replay (discrete actions)"),
    "qrdqn": AgentSpec(QRDQNConfig, qrdqn.make_agent,
                       "QR-DQN: quantile regression DQN, mean or CVaR acting (discrete)"),
    "sac": AgentSpec(SACConfig, sac.make_agent,
                     "SAC: twin Q, tanh-Gaussian, automatic entropy (continuous actions)"),
    "sac_discrete": AgentSpec(SACDiscreteConfig, sac.make_agent,
                              "discrete SAC: soft Q over discrete actions"),
    "td3": AgentSpec(TD3Config, td3.make_agent,
                     "TD3: clipped double Q, target smoothing, delayed actor (continuous)"),
    "ddpg": AgentSpec(DDPGConfig, td3.make_agent,
                      "DDPG: TD3 without its three changes (continuous actions)"),
    "mcts": AgentSpec(MCTSConfig, mcts.make_agent,
                      "search on a learned next-bar model + exact accounting (trading env)"),
}
# After every single agent: the ensemble's config has one field per agent registered above.
EnsembleConfig = ensemble.make_config_class(AGENTS)
AGENTS["ensemble"] = AgentSpec(EnsembleConfig, ensemble.make_agent,
                               "members trained side by side in one program, combined per bar")


def config_from_dict(data: dict[str, Any]) -> Any:
    """Build the config of the agent named by `data["name"]` (default "ppo")."""
    name = data.get("name", "ppo")
    if name not in AGENTS:
        raise ConfigError(f"unknown agent {name!r}; available: {sorted(AGENTS)}")
    return AGENTS[name].config_class.from_dict(data)


def make_agent(config: Any, env: Any, env_params: Any) -> Agent:
    if config.name not in AGENTS:
        raise ConfigError(f"unknown agent {config.name!r}; available: {sorted(AGENTS)}")
    return AGENTS[config.name].make_agent(config, env, env_params)


def make_train(config: Any, env: Any, env_params: Any) -> Callable[..., TrainOutput]:
    """`train(key, hparams=None) -> TrainOutput`: init + all chunks in one `jax.jit`.

    The env params (market arrays) enter the compiled program as an argument, never as baked-in
    constants. `train` is pure, so `jax.vmap(train)(keys, hparams)` batches runs.
    """
    agent = make_agent(config, env, env_params)
    num_chunks = agent.num_updates // agent.updates_per_chunk

    def train_program(key: jax.Array, hparams: Any, env_params: Any) -> TrainOutput:
        state = agent.init(key, hparams, env_params)
        state, metrics = jax.lax.scan(
            lambda s, _: agent.run_chunk(s, env_params), state, None, num_chunks
        )
        metrics = jax.tree.map(lambda m: m.reshape(-1), metrics)
        return TrainOutput(state=state, metrics=metrics)

    compiled = jax.jit(train_program)

    def train(key: jax.Array, hparams: Any = None) -> TrainOutput:
        return compiled(key, hparams, env_params)

    return train


def help_lines() -> str:
    """`name  summary` per registered agent, for the CLI's help texts."""
    width = max(len(n) for n in AGENTS)
    return "\n".join(f"  {name:<{width}}  {spec.summary}" for name, spec in AGENTS.items())


__all__ = [
    "AGENTS",
    "Agent",
    "AgentSpec",
    "CVaRPPOConfig",
    "CVaRPPOHParams",
    "DDPGConfig",
    "DDPGHParams",
    "DQNConfig",
    "DQNHParams",
    "EnsembleConfig",
    "MCTSConfig",
    "MCTSHParams",
    "Metrics",
    "NetworkConfig",
    "PPOConfig",
    "PPOHParams",
    "QRDQNConfig",
    "QRDQNHParams",
    "SACConfig",
    "SACDiscreteConfig",
    "SACDiscreteHParams",
    "SACHParams",
    "TD3Config",
    "TD3HParams",
    "TrainOutput",
    "config_from_dict",
    "help_lines",
    "make_agent",
    "make_train",
    "stack_hparams",
]
