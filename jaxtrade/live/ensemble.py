"""The ensemble agent in the runner: every member's numpy policy, combined per bar as the
backtest combines them (agents/ensemble.py `combine_one`, agents/common/combine.py).

The functions below mirror agents/common/combine.py one for one (same names, same formulas,
same grid) so that a change to one is easy to repeat in the other; combine.py's docstring
writes the model down. They compute in float64 from the float32 inputs the backtest sees
(closes, volatility, regime probabilities and targets rounded to float32, paper returns taken
in float32 in the backtest's order), so the member weights and the trade probability agree
with the backtest's float32 figures to float32 rounding. The Student-t CDF, which JAX takes
from `betainc`, is a finite series when the degrees of freedom are a whole number (the vote's
and the trade probability's, 2 alpha0 + n: a few array operations over the 256-point grid,
which keeps the runner's bar within its latency goal), and otherwise the regularized
incomplete beta function by its continued fraction (modified Lentz); either way from
betainc's argument rounded to float32 as the backtest rounds it.

The combination works in the target-weights space of any number of assets, as combine.py
does: member targets are weight vectors [M, A], paper returns are those of the member's
portfolio over every asset (after each asset's costs), the book's volatility is
sum_a |w_a| vol_a. The single-symbol Runner (engine.py) and the multi-asset runner
(multi.py, one decision per timestamp from the closes and volatilities of every symbol)
call the same `EnsemblePolicy.decide`.

`EnsemblePolicy` holds the members (network.ActorNetwork each, with its own action map, or
an mcts member's numpy search, mcts.MCTSPlanner) and the combination: rule (equal, vote,
router, winner), vote window and prior, router table, winner, min_trade_probability.
Every member reads the same observation; a member whose network observes some features only
(its description's `observe_columns`, from `agent.<member>.network.observe`) drops the others
inside its own ActorNetwork, as its flax torso does (tests/test_ensemble_planted.py exports
such an ensemble and checks its runner against the backtest).
An mcts member searches as agents/mcts.py's policy does inside the ensemble's backtest: the
ensemble hands every member the same env states, so the member's root is the ensemble's own
book (the runner's ledger, marked at this bar's close) with bar t's ATR, volatility and
regime, and its latent is that of the observation's market window; its action becomes
target weights through its own (discrete) action map, as for any discrete member.
Per bar, `decide` records the paper returns that closed at this bar (members' after costs,
the ensemble's own gross), weighs the members' targets by the rule, computes the trade
probability and gates the target below the threshold, exactly as the backtest's walk does
from a fresh carry at its first bar.

numpy + stdlib only (the bundle's runner imports nothing else). tests/test_export_ensemble.py
checks runner == backtest bar for bar (targets, member weights, trade probability);
tests/test_export_mcts_refusals.py the same with an mcts member;
tests/test_export_ensemble_multi.py the same on two symbols (multi.MultiAssetRunner).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .errors import BundleError
from .mcts import MCTSPlanner, Portfolio
from .network import ActorNetwork, head_to_action

F32 = np.float32
F64 = np.float64
BPS = F32(1e-4)
GRID_POINTS = 256  # quadrature points of P(member best), as combine.GRID_POINTS
RULES = ("equal", "vote", "router", "winner")
_LENTZ_TINY = 1e-300
_LENTZ_EPS = 1e-15
_LENTZ_MAX_TERMS = 400


# --- agents/common/combine.py, in numpy --------------------------------------------------------
class NIG(NamedTuple):
    """Normal-Inverse-Gamma parameters (each [M] or scalar)."""

    mu: np.ndarray
    kappa: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray


def nig_prior(returns: np.ndarray, mask: np.ndarray, prior_bars: float,
              variance_floor: float = 0.0) -> NIG:
    """combine.nig_prior: the shared prior from window returns [W, M] (rows in `mask`)."""
    weight = mask[:, None].astype(F64) * np.ones_like(returns)
    total = max(weight.sum(), 1.0)
    mean = (weight * returns).sum() / total
    var = max((weight * (returns - mean) ** 2).sum() / total, variance_floor)
    alpha0 = 1.0
    return NIG(mean, F64(prior_bars), F64(alpha0), alpha0 * (var + 1e-12))


def nig_posterior(returns: np.ndarray, mask: np.ndarray, prior: NIG) -> NIG:
    """combine.nig_posterior: conjugate posterior per column of `returns` [W, M]."""
    w = mask.astype(F64)[:, None]
    n = w.sum(axis=0) * np.ones(returns.shape[1:], F64)
    xbar = (w * returns).sum(axis=0) / np.maximum(n, 1.0)
    ss = (w * (returns - xbar) ** 2).sum(axis=0)
    kappa = prior.kappa + n
    mu = (prior.kappa * prior.mu + n * xbar) / kappa
    alpha = prior.alpha + n / 2.0
    beta = prior.beta + ss / 2.0 + prior.kappa * n * (xbar - prior.mu) ** 2 / (2.0 * kappa)
    return NIG(mu, kappa, alpha, beta)


def mean_scale(post: NIG) -> np.ndarray:
    return np.sqrt(post.beta / (post.alpha * post.kappa))


def predictive_scale(post: NIG) -> np.ndarray:
    return np.sqrt(post.beta * (post.kappa + 1.0) / (post.alpha * post.kappa))


_lgamma = np.frompyfunc(math.lgamma, 1, 1)


def _log_beta(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """log B(a, b), elementwise (math.lgamma per element: call it on the few distinct
    parameters, not on a grid)."""
    return np.asarray(_lgamma(a) + _lgamma(b) - _lgamma(np.add(a, b)), F64)


def betainc(a: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Regularized incomplete beta I_x(a, b) (x in [0, 1]) by its continued fraction, on the
    side where it converges fast (I_x(a, b) = 1 - I_{1-x}(b, a) above the mean)."""
    log_beta = _log_beta(a, b)  # symmetric in (a, b): taken before the flip
    a, b, x, log_beta = np.broadcast_arrays(*(np.asarray(v, F64) for v in (a, b, x, log_beta)))
    flip = x > (a + 1.0) / (a + b + 2.0)
    a, b, x = np.where(flip, b, a), np.where(flip, a, b), np.where(flip, 1.0 - x, x)
    inside = (x > 0.0) & (x < 1.0)
    xs = np.where(inside, x, 0.5)
    front = np.exp(a * np.log(xs) + b * np.log1p(-xs) - log_beta) / a
    # Modified Lentz on 1 / (1 + d1 / (1 + d2 / (1 + ...))) (Numerical Recipes' betacf).
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = np.ones_like(xs)
    d = 1.0 - qab * xs / qap
    d = 1.0 / np.where(np.abs(d) < _LENTZ_TINY, _LENTZ_TINY, d)
    h = d.copy()
    for m in range(1, _LENTZ_MAX_TERMS + 1):
        m2 = 2.0 * m
        for numerator in (m * (b - m) * xs / ((qam + m2) * (a + m2)),
                          -(a + m) * (qab + m) * xs / ((a + m2) * (qap + m2))):
            d = 1.0 + numerator * d
            d = 1.0 / np.where(np.abs(d) < _LENTZ_TINY, _LENTZ_TINY, d)
            c = 1.0 + numerator / c
            c = np.where(np.abs(c) < _LENTZ_TINY, _LENTZ_TINY, c)
            delta = d * c
            h = h * delta
        if np.all(np.abs(delta - 1.0) < _LENTZ_EPS):
            break
    value = np.where(inside, front * h, np.where(x >= 1.0, 1.0, 0.0))
    return np.where(flip, 1.0 - value, value)


def student_t_cdf(x: np.ndarray, df: np.ndarray) -> np.ndarray:
    """combine.student_t_cdf: CDF of the standard Student-t with `df` degrees of freedom.
    betainc's argument df / (df + x^2) is rounded as the backtest rounds it, in float32: near
    x = 0 that rounding alone moves the CDF by up to ~1e-4 (sqrt(1 - argument) is what
    counts there), far more than anything else in this port."""
    x = np.asarray(x, F64)
    x32, df32 = x.astype(F32), np.asarray(df, F32)
    u = np.asarray(df32 / (df32 + x32 * x32), F64)  # = cos^2 of theta = atan(x / sqrt(df))
    dfs = np.asarray(df, F64).ravel()
    first = float(dfs[0])
    if first == round(first) and 1 <= first <= _SERIES_MAX_DF and np.all(dfs == first):
        # One whole number of degrees of freedom (the vote's: 2 alpha0 + n, shared by the
        # members): the same CDF as a finite series, a few array operations instead of a
        # continued fraction per element.
        return _student_t_cdf_series(u, np.sign(x), int(first))
    tail = 0.5 * betainc(df / 2.0, 0.5, u)
    return np.where(x > 0, 1.0 - tail, tail)


_SERIES_MAX_DF = 1000


def _student_t_cdf_series(u: np.ndarray, sign: np.ndarray, df: int) -> np.ndarray:
    """Student-t CDF for a whole `df` from u = df / (df + x^2) and sign(x) (Abramowitz and
    Stegun 26.7.3-4, theta = atan(x / sqrt(df)), cos^2 theta = u): P(|T| < |x|) =
      df odd:  (2 / pi) (theta + sin theta cos theta sum_k d_k u^k),  d_k = prod_j 2j / (2j+1)
      df even: sin theta sum_k c_k u^k,  c_k = prod_j (2j-1) / (2j)
    with k < (df - 1) / 2 and df / 2 terms; CDF = (1 + sign(x) P) / 2."""
    sin = np.sqrt(np.maximum(1.0 - u, 0.0))
    terms = (df - 1) // 2 if df % 2 else df // 2
    k = np.arange(1, terms)
    ratios = 2.0 * k / (2.0 * k + 1.0) if df % 2 else (2.0 * k - 1.0) / (2.0 * k)
    coefficients = np.concatenate([[1.0], np.cumprod(ratios)])
    series = np.tensordot(coefficients, _powers(u, terms), axes=1) if terms else \
        np.zeros_like(u)
    if df % 2:
        theta = np.arctan2(sin, np.sqrt(u))
        inside = (2.0 / math.pi) * (theta + sin * np.sqrt(u) * series)
    else:
        inside = sin * series
    # Far in the lower tail 1/2 - P/2 cancels to a few 1e-16 either side of 0.
    return np.clip(0.5 + 0.5 * sign * inside, 0.0, 1.0)


def _powers(u: np.ndarray, count: int) -> np.ndarray:
    """[count, ...] u^0 .. u^(count-1), by doubling: log2(count) array products."""
    out = np.empty((count,) + u.shape, F64)
    out[0] = 1.0
    filled, power = 1, u  # power = u^filled
    while filled < count:
        take = min(filled, count - filled)
        np.multiply(out[:take], power, out=out[filled:filled + take])
        filled, power = filled + take, power * power
    return out


def student_t_pdf(x: np.ndarray, df: np.ndarray) -> np.ndarray:
    """jax.scipy.stats.t.pdf: density of the standard Student-t."""
    df = np.asarray(df, F64)
    log_norm = -_log_beta(0.5 * df, np.full_like(df, 0.5)) - 0.5 * np.log(df)
    return np.exp(log_norm - 0.5 * (df + 1.0) * np.log1p(x * x / df))


def probability_best(post: NIG) -> np.ndarray:
    """combine.probability_best: [M] P(mu_m is the highest), on the same grid."""
    loc, scale, df = post.mu, mean_scale(post), 2.0 * post.alpha
    lo = np.min(loc - 12.0 * scale)
    hi = np.max(loc + 12.0 * scale)
    grid = np.linspace(lo, hi, GRID_POINTS)  # [G]
    z = (grid[:, None] - loc) / scale  # [G, M]
    pdf = student_t_pdf(z, df) / scale
    log_cdf = np.log(np.clip(student_t_cdf(z, df), 1e-30, 1.0))
    others = np.exp(log_cdf.sum(axis=1, keepdims=True) - log_cdf)  # prod over j != m
    mass = (pdf * others).sum(axis=0)
    return mass / max(mass.sum(), 1e-30)


def vote_weights(returns: np.ndarray, mask: np.ndarray, prior_bars: float,
                 variance_floor: float = 0.0) -> np.ndarray:
    """combine.vote_weights: [M] Bayesian vote weights from window returns [W, M]."""
    prior = nig_prior(returns, mask, prior_bars, variance_floor)
    return probability_best(nig_posterior(returns, mask, prior))


def trade_probability(returns: np.ndarray, mask: np.ndarray, prior_bars: float, cost: float,
                      exposure: float, variance_floor: float = 0.0,
                      prior_mean: float = 0.0) -> float:
    """combine.trade_probability: P(next-bar return > `cost`) under the predictive fitted to
    the ensemble's own window returns [W] (rows in `mask`), from a prior of mean `prior_mean`
    worth `prior_bars` bars; 0 when flat."""
    ret = returns[:, None]
    prior = nig_prior(ret, mask, prior_bars, variance_floor)._replace(
        mu=np.asarray(prior_mean, F64))
    post = nig_posterior(ret, mask, prior)
    z = (cost - post.mu[0]) / predictive_scale(post)[0]
    p = 1.0 - float(student_t_cdf(z, 2.0 * post.alpha[0]))
    return p if exposure > 1e-9 else 0.0


def router_weights(regime_probs: np.ndarray, table: np.ndarray) -> np.ndarray:
    """combine.router_weights: [M] = P(regime at t) @ table [R, M]."""
    return regime_probs @ table


def equal_weights(num_members: int) -> np.ndarray:
    return np.full((num_members,), 1.0 / num_members, F32)


def paper_returns(weights: np.ndarray, previous: np.ndarray, close_now: np.ndarray,
                  close_next: np.ndarray, cost_rate: np.ndarray) -> np.ndarray:
    """combine.paper_returns in float32: [M] returns after costs of targets [M, A]."""
    gross = (weights * (close_next / close_now - F32(1.0))).sum(axis=-1, dtype=F32)
    return gross - (cost_rate * np.abs(weights - previous)).sum(axis=-1, dtype=F32)


def fill_cost_rate(volatility: np.ndarray, costs: dict) -> np.ndarray:
    """envs.costs.fill_cost_rate (no shock) in float32: cost per unit of traded notional."""
    slippage_bps = np.minimum(F32(costs.get("slippage_vol_mult", 0.05)) * volatility / BPS,
                              F32(costs.get("slippage_cap_bps", 25.0)))
    bps = F32(costs.get("fee_bps", 1.0)) + F32(costs.get("half_spread_bps", 1.0))
    return ((bps + slippage_bps + F32(0.0)) * BPS).astype(F32)


# --- the per-bar combination (agents/ensemble.py `combine_one`) --------------------------------
@dataclass
class VoteState:
    """What the combination remembers between bars (agents/ensemble.py VoteCarry)."""

    last_bar: int  # the runner's bar count at the previous decision (-1: none yet)
    member_target: np.ndarray  # [M, A] targets decided at last_bar
    member_before: np.ndarray  # [M, A] targets decided the bar before
    target: np.ndarray  # [A] the ensemble's target decided at last_bar (after the gate)
    cost_rate: np.ndarray  # [A] cost per traded notional at last_bar
    close: np.ndarray  # [A] close at last_bar
    scale: float  # the book's volatility at last_bar: sum_a |target_a| vol_a (float32)
    member_returns: np.ndarray  # [W, M] paper returns after costs, ring buffer
    own_returns: np.ndarray  # [W] the ensemble's gross paper returns / the book's volatility
    filled: np.ndarray  # [W] bool
    exposed: np.ndarray  # [W] bool
    slot: int


class Combined(NamedTuple):
    """One bar's combination: what the runner prints beside the target."""

    weights: np.ndarray  # [M] member weights after the rule
    member_targets: np.ndarray  # [M, A]
    target: np.ndarray  # [A] the ensemble's target weights (the action), after the gate
    trade_probability: float


class Combination:
    """The rule and its state from the manifest's `network.combine` section."""

    def __init__(self, section: dict, num_members: int, num_assets: int, costs: dict) -> None:
        self.rule = section["rule"]
        if self.rule not in RULES:
            raise BundleError(f"combination rule {self.rule!r} is not one of {', '.join(RULES)}")
        self.window = int(section["vote_window_bars"])
        if self.window < 2:
            raise BundleError("network.combine.vote_window_bars must be >= 2")
        self.prior_bars = float(section["vote_prior_bars"])
        self.min_trade_probability = F32(section.get("min_trade_probability", 0.0))
        self.trade_prior_mean = float(F32(section.get("trade_prior_mean", 0.0)))
        self.router = np.asarray(section["router"], F32)
        self.winner = np.asarray(section["winner"], F32)
        if self.router.ndim != 2 or self.router.shape[1] != num_members or \
                self.winner.shape != (num_members,):
            raise BundleError(f"network.combine: router {list(self.router.shape)} and winner "
                              f"{list(self.winner.shape)} do not fit {num_members} members")
        self.num_members, self.num_assets, self.costs = num_members, num_assets, costs

    def initial_state(self) -> VoteState:
        zeros_ma = np.zeros((self.num_members, self.num_assets), F32)
        zeros_a = np.zeros((self.num_assets,), F32)
        return VoteState(-1, zeros_ma, zeros_ma.copy(), zeros_a, zeros_a.copy(), zeros_a.copy(),
                         F32(0.0),
                         np.zeros((self.window, self.num_members), F32),
                         np.zeros((self.window,), F32), np.zeros((self.window,), bool),
                         np.zeros((self.window,), bool), 0)

    def step(self, vote: VoteState, targets: np.ndarray, bar: int, close: np.ndarray,
             volatility: np.ndarray, regime: np.ndarray) -> Combined:
        """Record the paper returns that closed at `bar`, then weigh `targets` [M, A] decided
        at `bar` (float32 close, volatility [A] and regime probabilities [R] of that bar).
        Updates `vote` in place."""
        if vote.last_bar == bar - 1:
            slot = vote.slot
            vote.member_returns[slot] = paper_returns(vote.member_target, vote.member_before,
                                                      vote.close, close, vote.cost_rate)
            own = (vote.target * (close / vote.close - F32(1.0))).sum(dtype=F32)
            # Standardized by the book's volatility when it was decided (as the backtest).
            vote.own_returns[slot] = (own / max(vote.scale, F32(1e-12))
                                      if vote.scale > 1e-12 else F32(0.0))
            vote.filled[slot] = True
            vote.exposed[slot] = np.abs(vote.target).sum(dtype=F32) > 1e-9
            vote.slot = (slot + 1) % self.window
        # A return of a fully invested book varies about like the asset: the prior's floor.
        market_variance = F32(np.mean(volatility, dtype=F32)) ** 2
        if self.rule == "vote":
            weights = vote_weights(vote.member_returns.astype(F64), vote.filled,
                                   self.prior_bars, float(market_variance)).astype(F32)
        elif self.rule == "router":
            weights = router_weights(regime.astype(F32), self.router).astype(F32)
        elif self.rule == "winner":
            weights = self.winner
        else:
            weights = equal_weights(self.num_members)
        target = (weights @ targets).astype(F32)
        cost_rate = fill_cost_rate(volatility, self.costs)
        trade_cost = (cost_rate * np.abs(target - vote.target)).sum(dtype=F32)
        exposure = np.abs(target).sum(dtype=F32)
        # The predictive of the standardized return: cost on the book's volatility scale,
        # variance floor 1, a prior worth one window (agents/ensemble.py `combine_one`).
        scale = (np.abs(target) * volatility).sum(dtype=F32)
        probability = F32(trade_probability(
            vote.own_returns.astype(F64), vote.filled & vote.exposed, float(self.window),
            float(trade_cost / max(scale, F32(1e-12))), float(exposure), 1.0,
            self.trade_prior_mean))
        # The threshold is 0 unless set: every probability passes.
        if probability < self.min_trade_probability:
            target = np.zeros_like(target)
        vote.last_bar, vote.member_before, vote.member_target = bar, vote.member_target, targets
        vote.target, vote.cost_rate, vote.close = target, cost_rate, close
        vote.scale = (np.abs(target) * volatility).sum(dtype=F32)
        return Combined(weights, targets, target, float(probability))


# --- the members ------------------------------------------------------------------------------
class SearchInputs(NamedTuple):
    """What an mcts member's search reads besides the observation (the runner's bar t)."""

    window: np.ndarray  # [W, F] the normalized market window ending at t
    root: Portfolio  # the ensemble's book marked at bar t's close (MCTSPlanner.root)
    atr: float


def _discrete_weights(index: int, levels: np.ndarray, num_assets: int) -> np.ndarray:
    """The env's `action_to_weights` of a discrete action (before long_only)."""
    index = min(max(int(index), 0), len(levels) - 1)
    return np.full((num_assets,), levels[index] / F32(num_assets), F32)


class Member:
    """One member: its numpy network and how its output becomes target weights [A] (the
    env's `action_to_weights` for the member's own action mode)."""

    def __init__(self, name: str, description: dict, weights: dict[str, np.ndarray],
                 trading: dict, num_assets: int) -> None:
        self.name = name
        self.network = ActorNetwork(description, weights)
        self.action = description["action"]
        self.levels = np.asarray(self.action.get("discrete_levels", ()), F32)
        self.leverage = F32(trading.get("max_leverage", 1.0))
        self.long_only = bool(trading.get("long_only", False))
        self.num_assets = num_assets

    def target_weights(self, obs: np.ndarray, carry) -> tuple[np.ndarray, object]:
        head, carry = self.network.forward(obs, carry)
        action = head_to_action(head, self.action)
        if self.action["mode"] == "discrete":
            weights = _discrete_weights(int(action), self.levels, self.num_assets)
        else:
            weights = np.nan_to_num(np.asarray(action, F32).reshape(self.num_assets), nan=0.0,
                                    posinf=self.leverage, neginf=-self.leverage)
            weights = np.clip(weights, -self.leverage, self.leverage).astype(F32)
        if self.long_only:
            weights = np.maximum(weights, F32(0.0))
        return weights, carry


class SearchMember:
    """An mcts member: the bundle's numpy search (gumbel or stochastic) (mcts.MCTSPlanner) with the
    member's evaluation settings, from the root the ensemble's backtest gives it."""

    def __init__(self, name: str, description: dict, weights: dict[str, np.ndarray],
                 manifest: dict, num_assets: int) -> None:
        if "reward" not in manifest:
            raise BundleError(f"ensemble member {name!r} searches with the env's reward: the "
                              "manifest has no `reward` section")
        if description["action"].get("mode") != "discrete":
            raise BundleError(f"ensemble member {name!r} (mcts) needs a discrete action map")
        self.name = name
        # The planner reads its search settings from `network`, its action levels from
        # `action`, and the accounting from the bundle's costs, trading, risk and reward.
        self.network = MCTSPlanner(
            {"network": description, "action": description["action"],
             "costs": manifest["costs"], "trading": manifest["trading"],
             "risk": manifest.get("risk", {}), "reward": manifest["reward"]}, weights)
        self.levels = np.asarray(description["action"]["discrete_levels"], F32)
        self.long_only = bool(manifest["trading"].get("long_only", False))
        self.num_assets = num_assets

    def target_weights(self, search: SearchInputs | None, volatility: float,
                       regime: np.ndarray) -> np.ndarray:
        if search is None:
            raise BundleError(f"ensemble member {self.name!r} searches from the book: "
                              "decide() needs its SearchInputs")
        action, _, _ = self.network.search(search.window, search.root, search.atr, volatility,
                                           regime)
        weights = _discrete_weights(action, self.levels, self.num_assets)
        if self.long_only:
            weights = np.maximum(weights, F32(0.0))
        return weights


class EnsembleCarry(NamedTuple):
    members: list  # each member network's recurrent carry (None for feed-forward)
    vote: VoteState


class EnsemblePolicy:
    """The exported ensemble: `decide(obs, carry, bar, close, volatility, regime)`."""

    def __init__(self, manifest: dict, weights: dict[str, np.ndarray]) -> None:
        net = manifest["network"]
        members = net.get("members")
        if not isinstance(members, list) or not members:
            raise BundleError("an ensemble bundle's network.members lists no members")
        num_assets = len(manifest["action"]["low"])
        self.names = [str(m["name"]) for m in members]
        self.members = []
        for spec in members:
            prefix = f"{spec['name']}/"
            own = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
            if not own:
                raise BundleError(f"bundle weights hold nothing for member {spec['name']!r}")
            if spec.get("family") == "mcts":
                self.members.append(SearchMember(spec["name"], spec, own, manifest,
                                                 num_assets))
            else:
                self.members.append(Member(spec["name"], spec, own, manifest["trading"],
                                           num_assets))
        # Members that search from the book need the runner's window, ledger and ATR.
        self.searches = any(isinstance(m, SearchMember) for m in self.members)
        if self.searches and num_assets != 1:  # agents/mcts.py trains on one asset only
            raise BundleError(f"an mcts ensemble member searches one symbol's book, the "
                              f"bundle trades {num_assets}")
        shapes = {m.network.obs_shape for m in self.members}
        if len(shapes) != 1:
            raise BundleError(f"the members take different observations: {sorted(shapes)}")
        self.obs_shape = shapes.pop()
        self.combination = Combination(net["combine"], len(self.members), num_assets,
                                       manifest["costs"])
        self.rule = self.combination.rule

    def initial_carry(self) -> EnsembleCarry:
        return EnsembleCarry([m.network.initial_carry() for m in self.members],
                             self.combination.initial_state())

    def decide(self, obs: np.ndarray, carry: EnsembleCarry, bar: int,
               close: float | np.ndarray, volatility: float | np.ndarray, regime: np.ndarray,
               search: SearchInputs | None = None) -> tuple[Combined, EnsembleCarry]:
        """Every member's target on `obs`, combined; `bar` counts the runner's bars (the
        vote records a paper return only between consecutive decisions). `close` and
        `volatility`: bar t's, one per asset (a bundle trading several symbols: the
        market's close and volatility [A], a missing bar's carried forward) or one number
        for every asset. `search`: what an mcts member's search starts from (required when
        `self.searches`; one symbol only)."""
        targets, member_carries = [], []
        for member, member_carry in zip(self.members, carry.members):
            if isinstance(member, SearchMember):
                weights = member.target_weights(search, F32(volatility),
                                                np.asarray(regime, F32))
            else:
                weights, member_carry = member.target_weights(obs, member_carry)
            targets.append(weights)
            member_carries.append(member_carry)
        assets = self.combination.num_assets  # np.full: a number or [A] values, copied
        combined = self.combination.step(
            carry.vote, np.stack(targets).astype(F32), bar,
            np.full(assets, np.asarray(close, F32), F32),
            np.full(assets, np.asarray(volatility, F32), F32), np.asarray(regime, F32))
        return combined, EnsembleCarry(member_carries, carry.vote)
