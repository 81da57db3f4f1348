"""Building an `Agent` (agents/common/types.py) from an algorithm's own functions.

Each algorithm file writes `init`, one `update` and a batched `policy`; `build_agent` makes
the rest of the protocol from them, once for every agent: the public `update` (metrics as
float32 under the algorithm's family prefix), `run_chunk` (a `lax.scan` of updates) and
`act` (the policy for one unbatched observation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from agents.common.counters import env_steps_exact
from agents.common.types import Agent, Metrics, PolicyOutput


def target_weights(env: Any, action: jax.Array, env_params: Any) -> jax.Array | None:
    """[B, num_assets] target weights the env makes of a batch of actions, or None for an env
    without portfolio weights."""
    to_weights = getattr(env, "action_to_weights", None)
    if to_weights is None:
        return None
    return jax.vmap(to_weights, in_axes=(0, None))(action, env_params)


def policy_output(
    env: Any,
    env_params: Any,
    action: jax.Array,
    carry: Any,
    *,
    logits: jax.Array | None = None,
    value: jax.Array | None = None,
    q_values: jax.Array | None = None,
    quantiles: jax.Array | None = None,
) -> PolicyOutput:
    """A `PolicyOutput` with the env's target weights of `action`; beliefs an agent has not
    are None."""
    return PolicyOutput(
        action, target_weights(env, action, env_params), logits, value, q_values, quantiles, carry
    )


def _batch_of_one(tree: Any) -> Any:
    return jax.tree.map(lambda x: jnp.asarray(x)[None], tree)


def build_agent(
    *,
    family: str,
    config: Any,
    network: Any,
    init: Callable[..., Any],
    update: Callable[[Any, Any], tuple[Any, Metrics]],
    policy: Callable[..., PolicyOutput],
    policy_params: Callable[[Any], Any],
    init_carry: Callable[[], Any] = lambda: (),
    env_axis: Callable[[Any], Any] | None = None,
) -> Agent:
    """The `Agent` of an algorithm: `update(state, env_params) -> (state, metrics)` is its
    one update with plain metric names; `policy` its batched policy call. Run sizes are the
    config's `run_sizes()`; states count their updates in an int32 `update_step` and hold
    their hyperparameters in `hparams`."""
    num_updates, updates_per_chunk, steps_per_update = config.run_sizes()

    def public_update(state: Any, env_params: Any) -> tuple[Any, Metrics]:
        state, metrics = update(state, env_params)
        return state, {
            f"{family}/{name}": jnp.asarray(value, jnp.float32) for name, value in metrics.items()
        }

    def run_chunk(state: Any, env_params: Any) -> tuple[Any, Metrics]:
        return jax.lax.scan(
            lambda s, _: public_update(s, env_params), state, None, updates_per_chunk
        )

    def act(
        params: Any,
        obs: jax.Array,
        env_state: Any,
        env_params: Any,
        key: jax.Array,
        carry: Any,
        deterministic: bool | jax.Array,
    ) -> tuple[jax.Array, Any]:
        """`policy` for one unbatched observation and env state: (action, carry)."""
        out = policy(
            params,
            _batch_of_one(obs),
            _batch_of_one(env_state),
            env_params,
            key,
            _batch_of_one(carry),
            deterministic,
        )
        return out.action[0], jax.tree.map(lambda c: c[0], out.carry)

    return Agent(
        init=init,
        update=public_update,
        run_chunk=run_chunk,
        policy=policy,
        act=act,
        init_carry=init_carry,
        num_updates=num_updates,
        updates_per_chunk=updates_per_chunk,
        steps_per_update=steps_per_update,
        network=network,
        config=config,
        policy_params=policy_params,
        env_steps=lambda state: env_steps_exact(state.update_step, steps_per_update),
        family=family,
        env_axis=env_axis,
        with_hparams_of=lambda state, other: state.replace(hparams=other.hparams),
    )
