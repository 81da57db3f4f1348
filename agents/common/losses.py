"""Pure losses and targets shared by the algorithms (each tested on its own, tests/test_losses.py).

Time-major conventions: sequences are [T, ...] with T first; `done[t]` (or `discount[t] = 0`)
means no value flows from step t+1 back into step t. Hyperparameters may be traced arrays.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# ------------------------------------------------------------------------ returns


def gae(
    rewards: jax.Array, values: jax.Array, dones: jax.Array, last_value: jax.Array,
    gamma: jax.Array | float, lam: jax.Array | float,
) -> tuple[jax.Array, jax.Array]:
    """Generalized advantage estimates and value targets (advantage + value), [T, ...] each.

    A_t = delta_t + gamma lam (1 - d_t) A_{t+1}, delta_t = r_t + gamma (1 - d_t) V_{t+1} - V_t,
    with V_T = `last_value`.
    """

    def backward(carry, inputs):
        next_adv, next_value = carry
        reward, value, done = inputs
        not_done = 1.0 - done.astype(jnp.float32)
        delta = reward + gamma * next_value * not_done - value
        adv = delta + gamma * lam * not_done * next_adv
        return (adv, value), adv

    _, advantages = jax.lax.scan(
        backward, (jnp.zeros_like(last_value), last_value), (rewards, values, dones), reverse=True
    )
    return advantages, advantages + values


def lambda_returns(
    rewards: jax.Array, discounts: jax.Array, next_values: jax.Array,
    lam: jax.Array | float,
) -> jax.Array:
    """TD(lambda) returns G_t = r_t + d_t ((1 - lam) V_{t+1} + lam G_{t+1}), G_{T-1} bootstraps
    on V_T = next_values[T-1]. `discounts` = gamma (1 - terminal), [T, ...]."""

    def backward(next_return, inputs):
        reward, discount, next_value = inputs
        g = reward + discount * ((1.0 - lam) * next_value + lam * next_return)
        return g, g

    _, returns = jax.lax.scan(
        backward, next_values[-1], (rewards, discounts, next_values), reverse=True
    )
    return returns


def n_step_returns(
    rewards: jax.Array, terminated: jax.Array, truncated: jax.Array, gamma: jax.Array | float,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The n-step return of a sampled sequence, cut at its first episode end.

    Inputs are [n, ...] (n = sequence length, the first entry is the transition being learned
    from). Returns (G, bootstrap_discount, last): G = sum_{k<m} gamma^k r_k over the first m
    steps (m = index of the first terminated/truncated step + 1, else n); the target is
    G + bootstrap_discount * Q(next_obs[last]), where bootstrap_discount = gamma^m, or 0 when
    the episode terminated (a truncated end still bootstraps from its final observation).
    """
    n = rewards.shape[0]
    ended = jnp.logical_or(terminated, truncated).astype(jnp.int32)
    # alive[k] = 1 while no episode end occurred strictly before step k.
    ended_before = jnp.cumsum(ended, axis=0) - ended
    alive = (ended_before == 0).astype(jnp.float32)
    powers = jnp.asarray(gamma, jnp.float32) ** jnp.arange(n, dtype=jnp.float32)
    powers = powers.reshape((n,) + (1,) * (rewards.ndim - 1))
    g = jnp.sum(alive * powers * rewards, axis=0)
    m = jnp.sum(alive, axis=0)  # steps taken: 1..n
    last = (m - 1).astype(jnp.int32)
    term_last = jnp.take_along_axis(terminated, last[None], axis=0)[0]
    discount = jnp.asarray(gamma, jnp.float32) ** m * (1.0 - term_last.astype(jnp.float32))
    return g, discount, last


# ------------------------------------------------------------------------ losses


def huber(x: jax.Array, delta: jax.Array | float = 1.0) -> jax.Array:
    """Elementwise Huber loss: x^2 / 2 inside |x| <= delta, delta (|x| - delta / 2) outside."""
    abs_x = jnp.abs(x)
    quadratic = jnp.minimum(abs_x, delta)
    return 0.5 * quadratic**2 + delta * (abs_x - quadratic)


def td_loss(
    q: jax.Array, target: jax.Array, weights: jax.Array | None = None,
    delta: jax.Array | float | None = 1.0,
) -> tuple[jax.Array, jax.Array]:
    """(mean TD loss, TD errors) for chosen-action values q [B] against target [B]: Huber with
    `delta`, or half the squared error when `delta` is None.

    `weights` are importance-sampling weights of prioritized replay. The target is held
    fixed (stop_gradient)."""
    errors = jax.lax.stop_gradient(target) - q
    per_item = 0.5 * jnp.square(errors) if delta is None else huber(errors, delta)
    if weights is not None:
        per_item = per_item * weights
    return per_item.mean(), errors


def quantile_huber_loss(
    quantiles: jax.Array, targets: jax.Array, taus: jax.Array,
    weights: jax.Array | None = None, kappa: jax.Array | float = 1.0,
) -> tuple[jax.Array, jax.Array]:
    """QR-DQN's quantile Huber loss (Dabney et al. 2018, eq. 10).

    quantiles [B, N] of the chosen action, targets [B, M] (held fixed), taus [N] the quantile
    midpoints (2i + 1) / 2N. Per item: sum over i of the mean over j of
    |tau_i - 1{u_ij < 0}| * Huber_kappa(u_ij) / kappa, u_ij = target_j - quantile_i.
    Returns (mean loss, per-item loss) so prioritized replay can set priorities from it.
    The gradient is written out (d/dq_i = -mean_j |tau_i - 1{u_ij < 0}| clip(u_ij, +-kappa) /
    kappa, computed in the same pass as the loss): autodiff of the [B, N, M] expression
    materializes more pairwise arrays, and the loss is most of a QR-DQN update on CPU.
    """
    per_item = _quantile_huber_per_item(quantiles, jax.lax.stop_gradient(targets), taus,
                                        jnp.asarray(kappa, quantiles.dtype))
    loss = per_item if weights is None else per_item * weights
    return loss.mean(), per_item


def _quantile_huber_parts(quantiles, targets, taus, kappa):
    u = targets[:, None, :] - quantiles[:, :, None]  # [B, N, M]
    weight = jnp.abs(taus[None, :, None] - (u < 0).astype(u.dtype))
    per_item = (weight * huber(u, kappa)).mean(axis=2).sum(axis=1) / kappa
    grad = -(weight * jnp.clip(u, -kappa, kappa)).mean(axis=2) / kappa  # d per_item / d q
    return per_item, grad


@jax.custom_vjp
def _quantile_huber_per_item(quantiles, targets, taus, kappa):
    return _quantile_huber_parts(quantiles, targets, taus, kappa)[0]


def _quantile_huber_fwd(quantiles, targets, taus, kappa):
    per_item, grad = _quantile_huber_parts(quantiles, targets, taus, kappa)
    return per_item, (grad, targets, taus, kappa)


def _quantile_huber_bwd(residuals, cotangent):
    grad, targets, taus, kappa = residuals  # targets, taus and kappa are held fixed
    return (cotangent[:, None] * grad, jnp.zeros_like(targets), jnp.zeros_like(taus),
            jnp.zeros_like(kappa))


_quantile_huber_per_item.defvjp(_quantile_huber_fwd, _quantile_huber_bwd)


def ppo_clip_loss(
    log_prob: jax.Array, old_log_prob: jax.Array, advantages: jax.Array,
    clip_eps: jax.Array | float,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(clipped surrogate loss, ratio, log_ratio): -mean(min(r A, clip(r, 1-e, 1+e) A))."""
    log_ratio = log_prob - old_log_prob
    ratio = jnp.exp(log_ratio)
    clipped_ratio = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    loss = -jnp.minimum(ratio * advantages, clipped_ratio * advantages).mean()
    return loss, ratio, log_ratio


def clipped_value_loss(
    value: jax.Array, old_value: jax.Array, targets: jax.Array, clip_eps: jax.Array | float,
    clip: bool = True,
) -> jax.Array:
    """0.5 mean squared error to the targets, pessimistic over the clipped update when `clip`."""
    error = jnp.square(value - targets)
    if clip:
        clipped = old_value + jnp.clip(value - old_value, -clip_eps, clip_eps)
        error = jnp.maximum(error, jnp.square(clipped - targets))
    return 0.5 * error.mean()


# ------------------------------------------------------------------------ target networks


def polyak_update(online: object, target: object, tau: jax.Array | float) -> object:
    """target <- tau * online + (1 - tau) * target (tau = 1 copies)."""
    return jax.tree.map(lambda o, t: tau * o + (1.0 - tau) * t, online, target)


def periodic_update(
    online: object, target: object, step: jax.Array, every: int, tau: jax.Array | float = 1.0,
) -> object:
    """A Polyak update (a hard copy at tau = 1) on steps that are multiples of `every`."""
    updated = polyak_update(online, target, tau)
    do = (step % every) == 0
    return jax.tree.map(lambda u, t: jnp.where(do, u, t), updated, target)


def twin_critic_loss(q: jax.Array, target: jax.Array) -> jax.Array:
    """Half the squared error of every critic's Q [C, B] against one target [B]: each critic's
    batch mean, summed over critics (every critic regresses on the same target; with C = 2 the
    clipped double Q of TD3 and SAC, with C = 1 DDPG's one critic)."""
    return 0.5 * jnp.sum(jnp.mean(jnp.square(q - target[None]), axis=1))
