"""How an ensemble combines its members, per bar, in target-weights space: pure functions.

Every rule is a function of what is known at the close of bar t (members' paper returns up to
t, regime probabilities filtered up to t, parameters fitted on earlier splits); the ensemble's
policy (agents/ensemble.py) calls them inside the backtest's walk, and
jaxtrade/evaluate/ensemble.py fits the rules' parameters and replays them offline.

Paper returns. Member m's target weights w_m(t) [A] decided at the close of t earn, at the
close of t+1,

    x_m(t+1) = w_m(t) . (close(t+1) / close(t) - 1)  -  c(t) . |w_m(t) - w_m(t-1)|

with c(t) [A] the env's cost per unit of traded notional at t (fee + half spread +
volatility-scaled slippage, envs/costs.py `fill_cost_rate`). It is a paper figure: the env
fills at the next open and its risk manager may change the book; members never trade it.

Bayesian vote (`vote_weights`). Each member's paper returns over the last W bars are
x_1..x_n ~ Normal(mu_m, sigma_m^2) i.i.d. with a Normal-Inverse-Gamma prior shared by all
members:

    sigma_m^2 ~ InvGamma(alpha0, beta0),   mu_m | sigma_m^2 ~ Normal(mu0, sigma_m^2 / kappa0)

    mu0    = the pooled mean of every member's window returns (empirical Bayes; causal)
    kappa0 = `prior_bars` pseudo-observations (the prior's weight against the evidence)
    alpha0 = 1,  beta0 = alpha0 * max(pooled variance, floor) (+ 1e-12); the ensemble's floor
             is (exposure x the market's rolling volatility at t)^2, so a window of a few
             returns cannot make the prior (and the trade probability) overconfident

Posterior (conjugate; n returns with mean xbar and sum of squared deviations S):

    kappa_n = kappa0 + n            mu_n   = (kappa0 mu0 + n xbar) / kappa_n
    alpha_n = alpha0 + n / 2        beta_n = beta0 + S / 2 + kappa0 n (xbar - mu0)^2 / (2 kappa_n)

so mu_m | data ~ Student-t(2 alpha_n, mu_n, beta_n / (alpha_n kappa_n)), and the next return
has the predictive Student-t(2 alpha_n, mu_n, beta_n (kappa_n + 1) / (alpha_n kappa_n)).
The vote's weight of member m is the posterior probability that its mu_m is the highest,
P(m best) = int f_m(x) prod_{j != m} F_j(x) dx (members independent), integrated on a grid.
With no evidence every posterior equals the prior and the weights are exactly equal; as the
window fills, they concentrate on the member whose mean is credibly highest.

Trade probability (`trade_probability`): the probability that the ensemble's next-bar return
after costs is positive, from the same conjugate model fitted to the ensemble's own gross paper
returns over the window (bars where it held a position): P(x > cost of the trade now) under
the predictive; 0 when the target is flat (a flat book earns nothing). Its prior differs from
the vote's in one place: its mean mu0 is `prior_mean` (0, "no edge", unless fitted on earlier
bars), not the window's own mean. With one series the pooled mean IS the sample mean, so that
prior would shrink nothing and the probability would swing with every run of lucky bars
(overconfident: expected calibration error 0.045-0.11 on the planted markets of
tests/test_ensemble_planted.py); shrunk toward mu0 with `prior_bars` pseudo-observations it
moves off the long-run rate only as far as the window's evidence carries it. The ensemble
(agents/ensemble.py) feeds it returns standardized by the book's volatility at each decision,
passes the window length as `prior_bars` and, once jaxtrade/evaluate/ensemble.py has fitted
it, the rule's mean standardized return over validation bars as `prior_mean`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import betainc
from jax.scipy.stats import t as student_t

GRID_POINTS = 256  # quadrature points of P(member best)


class NIG(NamedTuple):
    """Normal-Inverse-Gamma parameters (each [M] or scalar)."""

    mu: jax.Array
    kappa: jax.Array
    alpha: jax.Array
    beta: jax.Array


def nig_prior(returns: jax.Array, mask: jax.Array, prior_bars: float | jax.Array,
              variance_floor: float | jax.Array = 0.0) -> NIG:
    """The shared prior of the module docstring from window returns [W, M] (mask [W]: rows
    that hold a return); its variance is at least `variance_floor`."""
    weight = mask[:, None].astype(returns.dtype) * jnp.ones_like(returns)
    total = jnp.maximum(weight.sum(), 1.0)
    mean = (weight * returns).sum() / total
    var = jnp.maximum((weight * (returns - mean) ** 2).sum() / total, variance_floor)
    alpha0 = jnp.asarray(1.0, returns.dtype)
    return NIG(mean, jnp.asarray(prior_bars, returns.dtype), alpha0, alpha0 * (var + 1e-12))


def nig_posterior(returns: jax.Array, mask: jax.Array, prior: NIG) -> NIG:
    """Conjugate posterior per column of `returns` [W, M] over the rows where `mask` [W]."""
    w = mask.astype(returns.dtype)[:, None]
    n = w.sum(axis=0) * jnp.ones(returns.shape[1:], returns.dtype)
    xbar = (w * returns).sum(axis=0) / jnp.maximum(n, 1.0)
    ss = (w * (returns - xbar) ** 2).sum(axis=0)
    kappa = prior.kappa + n
    mu = (prior.kappa * prior.mu + n * xbar) / kappa
    alpha = prior.alpha + n / 2.0
    beta = prior.beta + ss / 2.0 + prior.kappa * n * (xbar - prior.mu) ** 2 / (2.0 * kappa)
    return NIG(mu, kappa, alpha, beta)


def mean_scale(post: NIG) -> jax.Array:
    """Scale of the Student-t posterior of the mean."""
    return jnp.sqrt(post.beta / (post.alpha * post.kappa))


def predictive_scale(post: NIG) -> jax.Array:
    """Scale of the Student-t posterior predictive of the next return."""
    return jnp.sqrt(post.beta * (post.kappa + 1.0) / (post.alpha * post.kappa))


def student_t_cdf(x: jax.Array, df: jax.Array) -> jax.Array:
    """CDF of the standard Student-t with `df` degrees of freedom."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + x * x))
    return jnp.where(x > 0, 1.0 - tail, tail)


def probability_best(post: NIG) -> jax.Array:
    """[M] P(mu_m is the highest) for independent Student-t posteriors of the means."""
    loc, scale, df = post.mu, mean_scale(post), 2.0 * post.alpha
    lo = jnp.min(loc - 12.0 * scale)
    hi = jnp.max(loc + 12.0 * scale)
    grid = jnp.linspace(lo, hi, GRID_POINTS)  # [G]
    z = (grid[:, None] - loc) / scale  # [G, M]
    pdf = student_t.pdf(z, df) / scale
    log_cdf = jnp.log(jnp.clip(student_t_cdf(z, df), 1e-30, 1.0))
    others = jnp.exp(log_cdf.sum(axis=1, keepdims=True) - log_cdf)  # prod over j != m
    mass = (pdf * others).sum(axis=0)
    return mass / jnp.maximum(mass.sum(), 1e-30)


def vote_weights(returns: jax.Array, mask: jax.Array, prior_bars: float | jax.Array,
                 variance_floor: float | jax.Array = 0.0) -> jax.Array:
    """[M] Bayesian vote weights from window paper returns [W, M] (module docstring)."""
    prior = nig_prior(returns, mask, prior_bars, variance_floor)
    return probability_best(nig_posterior(returns, mask, prior))


def trade_probability(returns: jax.Array, mask: jax.Array, prior_bars: float | jax.Array,
                      cost: jax.Array, exposure: jax.Array,
                      variance_floor: float | jax.Array = 0.0,
                      prior_mean: float | jax.Array = 0.0) -> jax.Array:
    """P(next-bar return > `cost`) under the predictive fitted to the ensemble's own window
    returns [W] (rows in `mask`), from a prior of mean `prior_mean` (0: no edge) worth
    `prior_bars` bars; 0 when `exposure` (sum |target weights|) is 0."""
    ret, m = returns[:, None], mask
    prior = nig_prior(ret, m, prior_bars, variance_floor)._replace(
        mu=jnp.asarray(prior_mean, returns.dtype))
    post = nig_posterior(ret, m, prior)
    z = (cost - post.mu[0]) / predictive_scale(post)[0]
    p = 1.0 - student_t_cdf(z, 2.0 * post.alpha[0])
    return jnp.where(exposure > 1e-9, p, 0.0)


def router_weights(regime_probs: jax.Array, table: jax.Array) -> jax.Array:
    """[M] member weights of the regime router: sum_r P(regime r at t) table[r] ([R, M],
    rows summing to 1, fitted on training + validation bars)."""
    return regime_probs @ table


def equal_weights(num_members: int) -> jax.Array:
    return jnp.full((num_members,), 1.0 / num_members, jnp.float32)


def paper_returns(weights: jax.Array, previous: jax.Array, close_now: jax.Array,
                  close_next: jax.Array, cost_rate: jax.Array) -> jax.Array:
    """x(t+1) of the module docstring for target weights [..., A] decided at t, the weights
    decided at t-1 and the prices at t and t+1 ([A]); cost_rate [A] is c(t)."""
    gross = (weights * (close_next / close_now - 1.0)).sum(axis=-1)
    return gross - (cost_rate * jnp.abs(weights - previous)).sum(axis=-1)
