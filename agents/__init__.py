"""Reinforcement-learning agents: one compiled training program per run.

    train = agents.make_train(config, env, env_params)
    out = train(jax.random.key(0))                      # TrainOutput(state, metrics[num_updates])
    outs = jax.jit(jax.vmap(train))(keys, hparams)      # seeds x hyperparameters, one program

`config.name` selects the algorithm in `AGENTS`. Agents accept any gymnax-style env (reset/step
pure functions, `action_space(params)` Discrete or Box), not only jaxtrade's trading env.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

import jaxtrade  # noqa: F401  (first: sets XLA:CPU flags before JAX starts its backend)
from agents import cvar_ppo, ppo
from agents.common.config import stack_hparams
from agents.common.networks import NetworkConfig
from agents.common.types import Agent, Metrics, TrainOutput, TrainState
from agents.cvar_ppo import CVaRPPOConfig, CVaRPPOHParams
from agents.ppo import PPOConfig, PPOHParams
from jaxtrade.errors import ConfigError

# name -> (config class, make_agent)
AGENTS: dict[str, tuple[type, Callable[..., Agent]]] = {
    "ppo": (PPOConfig, ppo.make_agent),
    "cvar_ppo": (CVaRPPOConfig, cvar_ppo.make_agent),
}


def config_from_dict(data: dict[str, Any]) -> Any:
    """Build the config of the agent named by `data["name"]` (default "ppo")."""
    name = data.get("name", "ppo")
    if name not in AGENTS:
        raise ConfigError(f"unknown agent {name!r}; available: {sorted(AGENTS)}")
    return AGENTS[name][0].from_dict(data)


def make_agent(config: Any, env: Any, env_params: Any) -> Agent:
    if config.name not in AGENTS:
        raise ConfigError(f"unknown agent {config.name!r}; available: {sorted(AGENTS)}")
    return AGENTS[config.name][1](config, env, env_params)


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


def train_with_progress(
    config: Any,
    env: Any,
    env_params: Any,
    key: jax.Array,
    hparams: Any = None,
    on_chunk: Callable[[int, TrainState, dict[str, np.ndarray], float], None] | None = None,
    state: TrainState | None = None,
) -> TrainOutput:
    """Same run as `make_train`, one compiled `run_chunk` call per chunk so the host can report.

    `on_chunk(chunk_index, state, chunk_metrics, env_steps_per_second)` runs between chunks (log,
    checkpoint). Pass `state` to resume from a saved `TrainState`.
    """
    agent = make_agent(config, env, env_params)
    init = jax.jit(agent.init)
    run_chunk = jax.jit(agent.run_chunk, donate_argnums=0)
    if state is None:
        state = init(key, hparams, env_params)
    done_chunks = int(state.update_step) // agent.updates_per_chunk
    num_chunks = agent.num_updates // agent.updates_per_chunk
    history: list[Metrics] = []
    for chunk in range(done_chunks, num_chunks):
        start = time.perf_counter()
        state, metrics = run_chunk(state, env_params)
        metrics = jax.device_get(metrics)
        elapsed = time.perf_counter() - start
        history.append(metrics)
        if on_chunk is not None:
            rate = agent.updates_per_chunk * agent.steps_per_update / max(elapsed, 1e-9)
            on_chunk(chunk, state, metrics, rate)
    stacked = (
        {k: np.concatenate([np.asarray(m[k]) for m in history]) for k in history[0]}
        if (history)
        else {}
    )
    return TrainOutput(state=state, metrics=stacked)


__all__ = [
    "AGENTS",
    "Agent",
    "CVaRPPOConfig",
    "CVaRPPOHParams",
    "NetworkConfig",
    "PPOConfig",
    "PPOHParams",
    "TrainOutput",
    "TrainState",
    "config_from_dict",
    "make_agent",
    "make_train",
    "stack_hparams",
    "train_with_progress",
]
