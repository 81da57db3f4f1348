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

NOISE_PROB = 0.2
NOISE_STD = 0.5
MIN_CALIBRATION_BARS = 1000
CALIBRATION_TOLERANCE = 0.05
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


def calibration(agent: Any, env: Any, params: Any, env_params: Any, split: str = "test",
                bins: int = 10) -> dict[str, Any]:
    """The next-bar model's up-probability per decile on `split` against the realized
    frequency; `max_deviation` over the deciles of at least MIN_CALIBRATION_BARS bars (None
    when none has that many)."""
    from agents.mcts import calibration_table, next_bar_up_probability

    first, last = eval_bounds(env, env_params, split)
    bars = jnp.arange(first, last)  # decisions whose next bar is in the split
    predicted = np.asarray(jax.jit(lambda b: next_bar_up_probability(
        agent, env, params, env_params, b))(bars), np.float64)
    close = np.asarray(env_params.market.close[:, 0], np.float64)
    index = np.asarray(bars)
    realized = (close[index + 1] > close[index]).astype(np.float64)
    rows = calibration_table(predicted, realized, bins)
    for row in rows:
        row["deviation"] = abs(row["predicted"] - row["realized"])
    judged = [row["deviation"] for row in rows if row["bars"] >= MIN_CALIBRATION_BARS]
    return {"split": split, "bars": int(len(index)), "min_bars": MIN_CALIBRATION_BARS,
            "tolerance": CALIBRATION_TOLERANCE, "rows": rows,
            "max_deviation": max(judged) if judged else None}


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
    out.append(f"  next-bar model calibration ({cal['bars']} bars; judged on deciles of >= "
               f"{cal['min_bars']} bars): max deviation {worst}")
    out.append("    decile  bars  predicted  realized  deviation")
    for i, row in enumerate(cal["rows"]):
        out.append(f"    {i + 1:6d}  {row['bars']:4.0f}  {row['predicted']:9.3f}  "
                   f"{row['realized']:8.3f}  {row['deviation']:9.3f}")
    return out


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
        f"</td><td>{row['realized']:.3f}</td><td>{row['deviation']:.3f}</td></tr>"
        for i, row in enumerate(cal["rows"]))
    worst = ("no decile has enough bars to judge" if cal["max_deviation"] is None
             else f"max deviation {cal['max_deviation']:.3f} (tolerance {cal['tolerance']:g})")
    return (f"<h2>MCTS: search, noise injection, next-bar model ({split} split)</h2>"
            f"<p>Trained {trained}. Noise injection: on each bar, with probability "
            f"{noise['prob']:g}, the whole observation gets N(0, {noise['std']:g}<sup>2</sup>) "
            "noise per entry; costs and fills unchanged.</p>"
            f"<table><thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>"
            "<p>Next-bar model calibration: predicted P(close<sub>t+1</sub> &gt; "
            "close<sub>t</sub>) per decile of the prediction against the realized frequency "
            f"over {cal['bars']} bars; judged on deciles of at least {cal['min_bars']} bars "
            f"(sampling error &le; {0.5 / np.sqrt(cal['min_bars']):.3f}): {worst}.</p>"
            "<table><thead><tr><th>decile</th><th>bars</th><th>predicted</th><th>realized</th>"
            f"<th>deviation</th></tr></thead><tbody>{rows}</tbody></table>")
