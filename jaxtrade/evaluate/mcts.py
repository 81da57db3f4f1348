"""The mcts agent's section of the report (agents/mcts.py), all on the test split.

  search vs policy head   the searched policy's metrics beside its own policy head acting
                          alone (same checkpoint, costs, bars): what the tree adds
  noise injection         the searched policy on clean observations and with observation
                          noise injected: on each bar, with probability NOISE_PROB (0.2, seed
                          002's "20% of its inputs are noise"), the whole observation gets
                          independent N(0, NOISE_STD^2) noise per entry (0.5, the
                          AdversarialWrapper's default size). Fills, costs and the book are
                          the env's, unchanged. The section names whether the run was trained
                          with `agent.adversarial=true`; the comparison across the two
                          trainings is two runs' reports (BENCHMARKS.md shows one).
  calibration             the next-bar model's P(close_{t+1} > close_t) at each decision bar,
                          in deciles of the prediction, against the realized frequency of an
                          up close. The model reads rows <= t; the outcome is row t + 1.
                          Two tables: the raw model's, and the model's through a Platt map
                          (slope and intercept on the log-odds) fitted on the VALIDATION
                          split only and applied unchanged to the test split; the calibrated
                          one is the judged one (`max_deviation`), the raw one stays beside it.

Why a map, and why Platt. On the planted AR(1) market (tests/test_mcts_trading.py, four
seeds, BENCHMARKS.md) the raw model's worst decile missed the realized frequency by 0.030 to
0.055, and the miss is a model still learning after ~440 gradient steps, not the bucket
read-out: against the planted probability it is under-confident at the extremes (seed 0's
top decile 0.046 low) or shifted by a few thousandths. The up-probability's convention for
the middle return bucket (gap and return centers summing to 0 count one half) moves a decile
by under 0.01 there: a normal bar return with the planted momentum (0.3-0.6 volatilities at
the extreme deciles) is up in 52-54% of that bucket, which holds 17-20% of the mass. A
temperature on the 21 outcome logits (fitted on validation by the outcomes' log loss) helps
seed 0 and hurts seeds 1-3: it sharpens the magnitude buckets, not the direction. Platt
scaling maps exactly the quantity the table judges, with two numbers a 1,100-bar validation
split pins down; its intercept also carries that split's own base rate (0.492 up closes
there against 0.507 on test), so against the planted probability the map fixes seed 0
(0.046 -> 0.033) and costs seeds 1-3 0.002-0.009. An isotonic map has one step per few bars
there and would fit validation noise. The map is the report's read-out of the model: the
planner's tree keeps the raw 21-outcome model (its search and the exported bundle are
unchanged). The fit is maximum likelihood with a weak prior at the identity (one
pseudo-observation), so a tiny or one-sided validation split stays near the raw model;
without a validation bar the map is the identity and the section says so.

Calibration is judged only on deciles of at least MIN_CALIBRATION_BARS bars. A decile's
realized frequency of n bars has a sampling standard error of sqrt(p (1 - p) / n) <= 0.5 /
sqrt(n): at n = 1,000 that is <= 0.0158, so the 0.05 tolerance is >= 3.16 standard errors
and a perfectly calibrated model fails one of ten deciles by chance with probability
<= 10 x 0.0016 = 1.6%. At 45 bars a decile (a 450-bar test split) the error alone is ~0.075,
larger than the tolerance, and the table can say nothing about calibration at 0.05.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtrade.evaluate.backtest import AgentPolicy, BacktestResult, backtest, eval_bounds
from jaxtrade.xla import compile_options

NOISE_PROB = 0.2
NOISE_STD = 0.5
MIN_CALIBRATION_BARS = 1000
CALIBRATION_TOLERANCE = 0.05
PLATT_PRIOR = 1.0  # pseudo-observations at the identity map
SUMMARY_METRICS = ("sharpe", "max_drawdown", "total_return", "num_trades")


def noisy_act(act: Callable[..., Any], prob: float = NOISE_PROB, std: float = NOISE_STD
              ) -> Callable[..., Any]:
    """`Agent.act` that sees, on each bar with probability `prob`, the observation plus
    independent N(0, std^2) noise per entry (its keys are folded from the bar's key, so the
    same backtest key injects the same noise)."""

    def act_on_noisy(params, obs, env_state, env_params, key, carry, deterministic):
        k_bar, k_noise = jax.random.split(jax.random.fold_in(key, 99))
        noise = std * jax.random.normal(k_noise, obs.shape, obs.dtype)
        obs = jnp.where(jax.random.bernoulli(k_bar, prob), obs + noise, obs)
        return act(params, obs, env_state, env_params, key, carry, deterministic)

    return act_on_noisy


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-6, 1.0 - 1e-6)
    return np.log(p / (1.0 - p))


def fit_platt(predicted: np.ndarray, realized: np.ndarray, prior_weight: float = PLATT_PRIOR
              ) -> tuple[float, float]:
    """(slope, intercept) of the Platt map sigmoid(slope * logit(p) + intercept) that
    maximizes the log likelihood of `realized` (0/1) given `predicted`, with a Gaussian prior
    of `prior_weight` pseudo-observations at the identity (slope 1, intercept 0): Newton's
    method on a strictly convex objective, float64."""
    x = _logit(predicted)
    y = np.asarray(realized, np.float64)
    design = np.stack([x, np.ones_like(x)], axis=1)
    theta = np.array([1.0, 0.0])
    prior = np.array([1.0, 0.0])
    for _ in range(100):
        q = 1.0 / (1.0 + np.exp(-(design @ theta)))
        grad = design.T @ (q - y) + prior_weight * (theta - prior)
        hess = (design * (q * (1.0 - q))[:, None]).T @ design + prior_weight * np.eye(2)
        step = np.linalg.solve(hess, grad)
        theta = theta - step
        if np.max(np.abs(step)) < 1e-12:
            break
    return float(theta[0]), float(theta[1])


def apply_platt(predicted: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """The Platt map of `fit_platt` applied to probabilities."""
    return 1.0 / (1.0 + np.exp(-(slope * _logit(predicted) + intercept)))


def _up_predictions(agent: Any, env: Any, params: Any, env_params: Any, split: str
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(predicted up-probability, realized up close) at every decision bar of `split` whose
    next bar is in the split."""
    from agents.mcts import next_bar_up_probability

    first, last = eval_bounds(env, env_params, split)
    bars = jnp.arange(first, last)
    predicted = np.asarray(jax.jit(lambda b: next_bar_up_probability(
        agent, env, params, env_params, b), compiler_options=compile_options())(bars), np.float64)
    close = np.asarray(env_params.market.close[:, 0], np.float64)
    index = np.asarray(bars)
    return predicted, (close[index + 1] > close[index]).astype(np.float64)


def _table(predicted: np.ndarray, realized: np.ndarray, bins: int
           ) -> tuple[list[dict[str, float]], float | None]:
    """Decile rows with their deviation, and the largest over deciles of at least
    MIN_CALIBRATION_BARS bars (None when none has that many)."""
    from agents.mcts import calibration_table

    rows = calibration_table(predicted, realized, bins)
    for row in rows:
        row["deviation"] = abs(row["predicted"] - row["realized"])
    judged = [row["deviation"] for row in rows if row["bars"] >= MIN_CALIBRATION_BARS]
    return rows, max(judged) if judged else None


def calibration(agent: Any, env: Any, params: Any, env_params: Any, split: str = "test",
                bins: int = 10, fit_split: str = "validation") -> dict[str, Any]:
    """The next-bar model's up-probability per decile on `split` against the realized
    frequency, through the Platt map fitted on `fit_split` (`rows`, `max_deviation`) and raw
    (`raw`); `map` says what was fitted on how many bars (None: no `fit_split` bar, identity)."""
    predicted, realized = _up_predictions(agent, env, params, env_params, split)
    try:
        fit_predicted, fit_realized = _up_predictions(agent, env, params, env_params,
                                                      fit_split)
    except ValueError:  # no bar of that split to decide on
        fit_predicted = fit_realized = np.zeros((0,))
    raw_rows, raw_max = _table(predicted, realized, bins)
    if len(fit_predicted):
        slope, intercept = fit_platt(fit_predicted, fit_realized)
        rows, worst = _table(apply_platt(predicted, slope, intercept), realized, bins)
        fitted = {"kind": "platt", "split": fit_split, "bars": int(len(fit_predicted)),
                  "slope": slope, "intercept": intercept, "prior_weight": PLATT_PRIOR}
    else:
        rows, worst, fitted = raw_rows, raw_max, None
    return {"split": split, "bars": int(len(predicted)), "min_bars": MIN_CALIBRATION_BARS,
            "tolerance": CALIBRATION_TOLERANCE, "rows": rows, "max_deviation": worst,
            "map": fitted, "raw": {"rows": raw_rows, "max_deviation": raw_max}}


def _summary(result: BacktestResult) -> dict[str, float | None]:
    """The section's metrics of one backtest; None where undefined (a policy that never
    trades has no Sharpe: zero return over zero volatility), as metrics.json writes them."""
    values = {k: float(result.metrics[k]) for k in SUMMARY_METRICS}
    return {k: v if math.isfinite(v) else None for k, v in values.items()}


def evaluate(agent: Any, params: Any, env: Any, env_params: Any, *, adversarial: bool,
             searched: BacktestResult | None = None, split: str = "test",
             deterministic: bool = True) -> dict[str, Any]:
    """The report's mcts section of one checkpoint: JSON-ready dict. `searched`: the
    searched policy's clean backtest of `split` when the report has run it already."""
    from agents.mcts import policy_head_act

    def run(act: Callable[..., Any]) -> BacktestResult:
        return backtest(env, env_params, AgentPolicy(params, act, agent.init_carry),
                        split=split, deterministic=deterministic)

    clean = searched if searched is not None else run(agent.act)
    return {
        "split": split,
        "adversarial_training": bool(adversarial),
        "searched": _summary(clean),
        "policy_head": _summary(run(policy_head_act(agent))),
        "noise": {"prob": NOISE_PROB, "std": NOISE_STD,
                  "searched": _summary(run(noisy_act(agent.act)))},
        "calibration": calibration(agent, env, params, env_params, split),
    }


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key in ("max_drawdown", "total_return"):
        return f"{value:.1%}"
    if key == "num_trades":
        return f"{value:.0f}"
    return f"{value:.2f}"


def lines(summary: Mapping[str, Any]) -> list[str]:
    """Console lines of the section."""
    split = summary["split"]
    trained = "adversarial" if summary["adversarial_training"] else "plain"
    out = [f"mcts on {split} ({trained} training; Sharpe, max drawdown, return, trades):"]
    noise = summary["noise"]
    for label, m in (("searched", summary["searched"]), ("policy head", summary["policy_head"]),
                     (f"searched, {noise['prob']:.0%} noise", noise["searched"])):
        out.append(f"  {label:<22s} " + "  ".join(_cell(k, m[k]) for k in SUMMARY_METRICS))
    cal = summary["calibration"]
    worst = ("not judged" if cal["max_deviation"] is None
             else f"{cal['max_deviation']:.3f} (tolerance {cal['tolerance']:g})")
    raw = cal["raw"]["max_deviation"]
    out.append(f"  next-bar model calibration ({cal['bars']} bars; judged on deciles of >= "
               f"{cal['min_bars']} bars): {_map_words(cal)}: max deviation {worst}; raw "
               f"model {'not judged' if raw is None else f'{raw:.3f}'}")
    out.append("    decile  bars  predicted  realized  deviation  raw predicted  raw deviation")
    for i, (row, raw_row) in enumerate(zip(cal["rows"], cal["raw"]["rows"])):
        out.append(f"    {i + 1:6d}  {row['bars']:4.0f}  {row['predicted']:9.3f}  "
                   f"{row['realized']:8.3f}  {row['deviation']:9.3f}  "
                   f"{raw_row['predicted']:13.3f}  {raw_row['deviation']:13.3f}")
    return out


def _map_words(cal: Mapping[str, Any]) -> str:
    fitted = cal["map"]
    if fitted is None:
        return "raw model (no validation bar to fit a map on)"
    return (f"through the Platt map fitted on the {fitted['split']} split ({fitted['bars']} "
            f"bars: slope {fitted['slope']:.3f}, intercept {fitted['intercept']:+.3f})")


def html_section(summary: Mapping[str, Any]) -> str:
    """The section of report.html."""
    split = html.escape(summary["split"])
    trained = ("with <code>agent.adversarial=true</code>" if summary["adversarial_training"]
               else "without adversarial training")
    noise = summary["noise"]
    head = "".join(f"<th>{k.replace('_', ' ')}</th>" for k in SUMMARY_METRICS)
    body = "".join(
        f"<tr><th class='k'>{html.escape(label)}</th>"
        + "".join(f"<td>{_cell(k, m[k])}</td>" for k in SUMMARY_METRICS) + "</tr>"
        for label, m in (("searched policy, clean observations", summary["searched"]),
                         ("policy head alone, clean observations", summary["policy_head"]),
                         (f"searched policy, {noise['prob']:.0%} noise injection",
                          noise["searched"])))
    cal = summary["calibration"]
    rows = "".join(
        f"<tr><th class='k'>{i + 1}</th><td>{row['bars']:.0f}</td><td>{row['predicted']:.3f}"
        f"</td><td>{row['realized']:.3f}</td><td>{row['deviation']:.3f}</td>"
        f"<td>{raw_row['predicted']:.3f}</td><td>{raw_row['deviation']:.3f}</td></tr>"
        for i, (row, raw_row) in enumerate(zip(cal["rows"], cal["raw"]["rows"])))
    worst = ("no decile has enough bars to judge" if cal["max_deviation"] is None
             else f"max deviation {cal['max_deviation']:.3f} (tolerance {cal['tolerance']:g})")
    raw = cal["raw"]["max_deviation"]
    worst += ("" if raw is None else f"; raw model {raw:.3f}")
    return (f"<h2>MCTS: search, noise injection, next-bar model ({split} split)</h2>"
            f"<p>Trained {trained}. Noise injection: on each bar, with probability "
            f"{noise['prob']:g}, the whole observation gets N(0, {noise['std']:g}<sup>2</sup>) "
            "noise per entry; costs and fills unchanged.</p>"
            f"<table><thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>"
            "<p>Next-bar model calibration: predicted P(close<sub>t+1</sub> &gt; "
            "close<sub>t</sub>) per decile of the prediction against the realized frequency "
            f"over {cal['bars']} bars, {html.escape(_map_words(cal))} (the planner's tree "
            "uses the raw model); judged on deciles of at least "
            f"{cal['min_bars']} bars (sampling error &le; "
            f"{0.5 / np.sqrt(cal['min_bars']):.3f}): {worst}.</p>"
            "<table><thead><tr><th>decile</th><th>bars</th><th>predicted</th><th>realized</th>"
            "<th>deviation</th><th>raw predicted</th><th>raw deviation</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>")
