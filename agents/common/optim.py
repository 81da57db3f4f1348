"""Optimizers built from traced hyperparameters, so learning rates stay vmappable.

Adam's state (moments, count) does not depend on the learning rate or the clipping norm, so
the transformation can be rebuilt inside the traced program from the current hyperparameters
and the step `params - lr * direction` applied by hand: one compiled program then serves every
learning rate of a sweep.
"""

from __future__ import annotations

from typing import Any

import jax
import optax


def adam_direction(max_grad_norm: jax.Array | float, eps: float = 1e-5
                   ) -> optax.GradientTransformation:
    """Global-norm clipping then Adam's scaling, without the learning rate."""
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.scale_by_adam(eps=eps))


def adam_step(
    params: Any, grads: Any, opt_state: Any, lr: jax.Array | float,
    max_grad_norm: jax.Array | float, eps: float = 1e-5,
) -> tuple[Any, Any]:
    """One Adam step with a traced learning rate; returns (params, opt_state)."""
    direction, opt_state = adam_direction(max_grad_norm, eps).update(grads, opt_state, params)
    return jax.tree.map(lambda p, d: p - lr * d, params, direction), opt_state


def adam_init(params: Any, eps: float = 1e-5) -> Any:
    return adam_direction(1.0, eps).init(params)
