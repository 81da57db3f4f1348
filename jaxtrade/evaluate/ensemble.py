"""The ensemble's evaluation: fit the router and winner-takes-all, backtest every rule and
every member on every split, and measure how calibrated the trade probability is.

Fitting uses training and validation bars only (never test):
  winner   one-hot on the member with the highest validation Sharpe (FinRL's rule),
           from each member's own backtest (its policy alone, the env's costs)
  router   per regime r, the member with the highest regime-weighted mean return
           sum_t P(r at t) x_m(t+1) / sum_t P(r at t) over training + validation bars,
           with P(r at t) the forward-filtered regime probabilities (MarketData.regime);
           applied at t as sum_r P(r at t) table[r] (agents/common/combine.py)

  trade prior mean   per rule, the mean over validation bars of the rule's paper return
           standardized by the book's volatility, sum_a w_a r_a / sum_a |w_a| vol_a, on bars
           with a position (ungated): the prior mean of the trade probability
           (agents/common/combine.py), so it starts from the rule's edge out of sample, not
           1/2. Validation only: on training bars the members' edge is in-sample (optimistic);
           training + validation when there is no validation split

Reliability of the trade probability (test split): over bars where the ensemble holds a
position, bin the probability in deciles and compare the mean prediction with the realized
frequency of a positive next-bar return after costs (the backtest's return of the next row,
which is earned by that target); ECE = sum_bins (n_bin / n) |mean p - frequency|.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from agents.ensemble import COMBINE_RULES
from jaxtrade.evaluate.backtest import BacktestResult, agent_policy, backtest
from jaxtrade.market import SPLIT_NAMES

FIT_SPLITS = ("train", "validation")


def member_backtests(agent: Any, params: Any, env: Any, env_params: Any,
                     splits: Sequence[str], deterministic: bool = True
                     ) -> dict[str, dict[str, BacktestResult]]:
    """{member: {split: backtest of the member trading alone}} (each on its own env kind)."""
    out: dict[str, dict[str, BacktestResult]] = {}
    for name, member in agent.members.items():
        mode = getattr(type(member.config), "env_action_mode", "discrete")
        member_env = env.with_action_mode(mode)
        policy = agent_policy(member, params["members"][name])
        out[name] = {s: backtest(member_env, env_params, policy, split=s,
                                 deterministic=deterministic) for s in splits}
    return out


def fit_winner(validation_sharpe: Sequence[float]) -> np.ndarray:
    """One-hot [M] on the best validation Sharpe (the first on ties; equal if all NaN)."""
    sharpe = np.asarray(validation_sharpe, np.float64)
    if not np.isfinite(sharpe).any():
        return np.full(len(sharpe), 1.0 / len(sharpe))
    out = np.zeros(len(sharpe))
    out[int(np.nanargmax(np.where(np.isfinite(sharpe), sharpe, -np.inf)))] = 1.0
    return out


def fit_router(member_returns: np.ndarray, regime_probs: np.ndarray) -> np.ndarray:
    """[R, M] table: per regime, one-hot on the member with the highest regime-weighted mean
    return. `member_returns` [T, M]: the return of each member earned over bar t -> t+1;
    `regime_probs` [T, R]: P(regime at t) (filtered), the information at the decision."""
    weights = regime_probs / np.maximum(regime_probs.sum(axis=0, keepdims=True), 1e-12)
    means = weights.T @ member_returns  # [R, M]
    table = np.zeros_like(means)
    table[np.arange(len(means)), means.argmax(axis=1)] = 1.0
    return table


def _earned(result: BacktestResult) -> tuple[np.ndarray, np.ndarray]:
    """(decision bars [n-1], return earned over the next bar by each decision)."""
    return np.arange(len(result.returns) - 1), result.returns[1:]


def fit_combination(agent: Any, env_params: Any,
                    members: Mapping[str, Mapping[str, BacktestResult]]) -> dict[str, np.ndarray]:
    """The fitted `combine` parameters (router table, winner) from members' training and
    validation backtests."""
    names = list(agent.members)
    winner = fit_winner([members[n]["validation"].metrics.get("sharpe", np.nan)
                         for n in names])
    regime = np.asarray(env_params.market.regime, np.float64)
    returns, probs = [], []
    for split in FIT_SPLITS:
        first_bar = _first_bar(env_params, members[names[0]][split])
        _, earned = _earned(members[names[0]][split])
        returns.append(np.stack([_earned(members[n][split])[1] for n in names], axis=1))
        probs.append(regime[first_bar:first_bar + len(earned)])
    table = fit_router(np.concatenate(returns), np.concatenate(probs))
    return {"router": table, "winner": winner}


def fit(agent: Any, params: Any, env: Any, env_params: Any,
        deterministic: bool = True) -> dict[str, Any]:
    """The fitted `combine` parameters alone, as `evaluate` fits them (members' backtests on
    training and validation, each rule's trade prior on validation): what `jaxtrade export`
    puts in an ensemble bundle."""
    splits = [s for s in FIT_SPLITS if _tradable(env, env_params, s)]
    members = member_backtests(agent, params, env, env_params, splits, deterministic)
    fitted: dict[str, Any] = fit_combination(agent, env_params, members)
    fitted["trade_prior_mean"] = fit_trade_priors(agent, params, env, env_params, fitted,
                                                  splits, deterministic)
    return fitted


def fit_trade_priors(agent: Any, params: Any, env: Any, env_params: Any,
                     fitted: Mapping[str, Any], splits: Sequence[str],
                     deterministic: bool = True) -> dict[str, float]:
    """Each rule's trade-probability prior mean from its ungated book out of sample (the
    validation split; training and validation when there is none)."""
    prior_splits = ["validation"] if "validation" in splits else [
        s for s in FIT_SPLITS if s in splits]

    def run(rule: str, split: str) -> BacktestResult:
        return backtest(env, env_params, agent_policy(agent, with_rule(params, rule, fitted,
                                                                       0.0)),
                        split=split, deterministic=deterministic)

    return {rule: fit_trade_prior_mean(env_params, [run(rule, s) for s in prior_splits])
            for rule in COMBINE_RULES}


def fit_trade_prior_mean(env_params: Any, results: Sequence[BacktestResult]) -> float:
    """The mean standardized paper return of a rule's book over `results` (its training and
    validation backtests); 0 without a bar in the market."""
    market = env_params.market
    close = np.asarray(market.close, np.float64)
    vol = np.asarray(market.volatility, np.float64)
    values = []
    for result in results:
        first = _first_bar(env_params, result)
        w = np.asarray(result.target_positions, np.float64)[:-1]  # [n-1, A]
        bars = first + np.arange(len(w))
        scale = (np.abs(w) * vol[bars]).sum(axis=1)
        gross = (w * (close[bars + 1] / close[bars] - 1.0)).sum(axis=1)
        held = scale > 1e-12
        values.append(gross[held] / scale[held])
    z = np.concatenate(values) if values else np.zeros(0)
    return float(z.mean()) if len(z) else 0.0


def _first_bar(env_params: Any, result: BacktestResult) -> int:
    timestamps = np.asarray(env_params.market.meta.timestamps)
    return int(np.searchsorted(timestamps, result.timestamps[0]))


GATE_THRESHOLDS = (0.5, 0.55, 0.6)  # min_trade_probability values the report also shows


def with_rule(params: Any, rule: str, fitted: Mapping[str, np.ndarray],
              min_trade_probability: float | None = None) -> Any:
    """The ensemble's policy params with `rule`, the fitted parameters and (when given) another
    trade-probability threshold."""
    combine = dict(params["combine"])
    if min_trade_probability is not None:
        combine["min_trade_probability"] = jnp.asarray(min_trade_probability, jnp.float32)
    combine["rule"] = jnp.asarray(COMBINE_RULES.index(rule), jnp.int32)
    combine["router"] = jnp.asarray(fitted["router"], jnp.float32)
    combine["winner"] = jnp.asarray(fitted["winner"], jnp.float32)
    combine["trade_prior_mean"] = jnp.asarray(
        fitted.get("trade_prior_mean", {}).get(rule, 0.0), jnp.float32)
    return {**params, "combine": combine}


def reliability(result: BacktestResult, bins: int = 10) -> tuple[list[dict[str, float]], float]:
    """Deciles of the trade probability vs the realized frequency of a positive next-bar
    return after costs, over decisions with a position; and the ECE. ([], nan) without any."""
    p = np.asarray(result.report.get("trade_probability", []), np.float64)[:-1]
    exposure = np.abs(result.target_positions[:-1]).sum(axis=1)
    won = result.returns[1:] > 0
    held = exposure > 1e-9
    p, won = p[held], won[held]
    if len(p) == 0:
        return [], float("nan")
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        inside = which == b
        if not inside.any():
            continue
        predicted, realized = float(p[inside].mean()), float(won[inside].mean())
        rows.append({"bin": f"{edges[b]:.1f}-{edges[b + 1]:.1f}", "bars": int(inside.sum()),
                     "predicted": predicted, "realized": realized})
        ece += inside.sum() / len(p) * abs(predicted - realized)
    return rows, float(ece)


@dataclasses.dataclass
class EnsembleEvaluation:
    rules: dict[str, dict[str, BacktestResult]]  # rule -> split -> backtest
    members: dict[str, dict[str, BacktestResult]]  # member -> split -> backtest alone
    fitted: dict[str, Any]  # router [R, M], winner [M], trade_prior_mean {rule: float}
    reliability: list[dict[str, float]]
    ece: float
    gate: dict[str, dict[str, float | None]]  # threshold -> test sharpe, turnover, exposure

    def summary(self, names: Sequence[str]) -> dict[str, Any]:
        """metrics.json's "ensemble" section."""
        pick = ("sharpe", "total_return", "max_drawdown", "turnover")
        table = lambda by_split: {s: {k: _finite(r.metrics.get(k)) for k in pick}
                                  for s, r in by_split.items()}
        test = {rule: _finite(r["test"].metrics.get("sharpe")) if "test" in r else None
                for rule, r in self.rules.items()}
        best = max((r for r in test if test[r] is not None), key=lambda r: test[r],
                   default=None)
        return {
            "rules": {rule: table(r) for rule, r in self.rules.items()},
            "members": {name: table(r) for name, r in self.members.items()},
            "best_rule_on_test": best,
            "router_table": np.asarray(self.fitted["router"]).tolist(),
            "winner": names[int(np.argmax(self.fitted["winner"]))],
            "trade_prior_mean": dict(self.fitted.get("trade_prior_mean", {})),
            "reliability_test": self.reliability,
            "ece_test": _finite(self.ece),
            "min_trade_probability_test": self.gate,
        }


def _finite(x: Any) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


def evaluate(agent: Any, params: Any, env: Any, env_params: Any,
             deterministic: bool = True) -> EnsembleEvaluation:
    """Fit on training + validation, then backtest every rule and member on every split."""
    splits = [s for s in SPLIT_NAMES if _tradable(env, env_params, s)]
    members = member_backtests(agent, params, env, env_params, splits, deterministic)
    fitted: dict[str, Any] = fit_combination(agent, env_params, members)

    def run(rule: str, split: str, threshold: float | None = None) -> BacktestResult:
        return backtest(env, env_params, agent_policy(agent, with_rule(params, rule, fitted,
                                                                       threshold)),
                        split=split, deterministic=deterministic)

    fitted["trade_prior_mean"] = fit_trade_priors(agent, params, env, env_params, fitted,
                                                  splits, deterministic)
    rules = {rule: {s: run(rule, s) for s in splits} for rule in COMBINE_RULES}
    rule = agent.config.combine
    rows, ece, gate = [], float("nan"), {}
    if "test" in splits:
        rows, ece = reliability(rules[rule]["test"])
        for threshold in sorted({float(agent.config.min_trade_probability), 0.0,
                                 *GATE_THRESHOLDS}):
            result = run(rule, "test", threshold)
            gate[f"{threshold:g}"] = {
                "sharpe": _finite(result.metrics.get("sharpe")),
                "turnover": _finite(result.metrics.get("turnover")),
                "bars_in_market": float(np.mean(np.abs(result.target_positions).sum(1) > 0))}
    return EnsembleEvaluation(rules, members, fitted, rows, ece, gate)


@dataclasses.dataclass
class SplitEvaluation:
    """Every rule and every member alone on one split, with the combination fitted on
    training + validation (a walk-forward fold's test window)."""

    rules: dict[str, BacktestResult]
    members: dict[str, BacktestResult]
    fitted: dict[str, Any]


def evaluate_split(agent: Any, params: Any, env: Any, env_params: Any, split: str = "test",
                   deterministic: bool = True) -> SplitEvaluation:
    """`fit` on training + validation (as `evaluate` fits), then backtest each rule and each
    member alone on `split` only: what a walk-forward fold reports, without the other
    splits' backtests and the threshold sweep of the full report."""
    fitted = fit(agent, params, env, env_params, deterministic)
    rules = {rule: backtest(env, env_params,
                            agent_policy(agent, with_rule(params, rule, fitted)),
                            split=split, deterministic=deterministic)
             for rule in COMBINE_RULES}
    members = {name: by_split[split] for name, by_split in member_backtests(
        agent, params, env, env_params, [split], deterministic).items()}
    return SplitEvaluation(rules, members, fitted)


def _tradable(env: Any, env_params: Any, split: str) -> bool:
    start, end = env_params.market.split_bounds(split)
    first = max(start, int(env.window_bars) - 1)
    return min(end, env_params.market.num_bars) - first >= 2


def positions_columns(result: BacktestResult, names: Sequence[str], rule: str
                      ) -> dict[str, np.ndarray]:
    """positions.csv columns of an ensemble backtest: the rule, the trade probability, each
    member's weight (per bar) and target position (per bar and symbol)."""
    report = result.report
    n = len(result.returns)
    cols: dict[str, Any] = {"rule": np.array([rule] * n),
                            "trade_probability": np.asarray(report["trade_probability"])}
    for i, name in enumerate(names):
        cols[f"weight_{name}"] = np.asarray(report["weights"])[:, i]
        cols[f"position_{name}"] = np.asarray(report["member_targets"])[:, i, :]
    return cols


def html_section(summary: Mapping[str, Any]) -> str:
    """report.html's ensemble section: rules vs members per split, the reliability table."""
    import html

    def cell(x: Any) -> str:
        return "-" if x is None else f"{x:.2f}"

    splits = [s for s in SPLIT_NAMES if any(s in r for r in summary["rules"].values())]
    head = "".join(f"<th>{s} Sharpe</th>" for s in splits)
    rows = []
    for kind, entries in (("rule", summary["rules"]), ("member", summary["members"])):
        for name, by_split in entries.items():
            cells = "".join(f"<td>{cell((by_split.get(s) or {}).get('sharpe'))}</td>"
                            for s in splits)
            rows.append(f"<tr><td>{kind}: {html.escape(name)}</td>{cells}</tr>")
    rel = "".join(f"<tr><td>{r['bin']}</td><td>{r['bars']}</td><td>{r['predicted']:.3f}</td>"
                  f"<td>{r['realized']:.3f}</td></tr>" for r in summary["reliability_test"])
    gate = "".join(f"<tr><td>{t}</td><td>{cell(g['sharpe'])}</td><td>{cell(g['turnover'])}"
                   f"</td><td>{g['bars_in_market']:.2f}</td></tr>"
                   for t, g in summary["min_trade_probability_test"].items())
    return (f"<h2>Ensemble</h2><p>Best rule on test: {summary['best_rule_on_test']}; "
            f"winner-takes-all member (validation Sharpe): {html.escape(summary['winner'])}. "
            "Router and winner fitted on training + validation bars only.</p>"
            f"<table><tr><th></th>{head}</tr>{''.join(rows)}</table>"
            "<h3>Trade probability reliability (test, bars with a position)</h3>"
            f"<p>ECE {cell(summary['ece_test'])}</p><table><tr><th>predicted</th><th>bars</th>"
            f"<th>mean predicted</th><th>realized positive</th></tr>{rel}</table>"
            "<h3>agent.min_trade_probability (test; flat below the threshold)</h3>"
            "<table><tr><th>threshold</th><th>Sharpe</th><th>turnover</th>"
            f"<th>bars in the market</th></tr>{gate}</table>")


RULE_LABELS = {"winner": "winner-takes-all", "equal": "equal weights"}


def walk_forward_verdict(fold_books: Sequence[Mapping[str, BacktestResult]],
                         stitched_metrics: Mapping[str, Mapping[str, float]],
                         combine: str) -> tuple[dict[str, Any], list[str]]:
    """Which rule won a walk-forward run and by how much, and in which folds the ensemble
    (the `combine` rule's book) lost to the best member alone or to winner-takes-all.

    `fold_books`: per fold, its test backtests keyed "rule/<rule>" and "member/<name>";
    `stitched_metrics`: the same keys' metrics over the stitched out-of-sample period.
    Returns (metrics.json's "ensemble" section, console lines). Rules are ranked by their
    stitched Sharpe; "by how much" is the difference in Sharpe and in total return.
    """
    def figure(book: str, metric: str = "sharpe") -> float | None:
        return _finite((stitched_metrics.get(book) or {}).get(metric))

    rules = [r for r in COMBINE_RULES if figure(f"rule/{r}") is not None]
    best = max(rules, key=lambda r: figure(f"rule/{r}"), default=None)
    margins = {r: {m: figure(f"rule/{best}", m) - figure(f"rule/{r}", m)
                   if figure(f"rule/{r}", m) is not None and figure(f"rule/{best}", m)
                   is not None else None for m in ("sharpe", "total_return")}
               for r in rules if r != best}
    lost_member, lost_winner = [], []
    for k, books in enumerate(fold_books):
        mine = _finite(books[f"rule/{combine}"].metrics.get("sharpe"))
        members = {b.split("/", 1)[1]: _finite(r.metrics.get("sharpe"))
                   for b, r in books.items() if b.startswith("member/")}
        members = {n: v for n, v in members.items() if v is not None}
        if mine is None:
            continue
        if members:
            top = max(members, key=members.get)
            if members[top] > mine:
                lost_member.append({"fold": k, "ensemble_sharpe": mine, "member": top,
                                    "member_sharpe": members[top]})
        wta = _finite(books["rule/winner"].metrics.get("sharpe"))
        if combine != "winner" and wta is not None and wta > mine:
            lost_winner.append({"fold": k, "ensemble_sharpe": mine, "winner_sharpe": wta})
    section = {"combine": combine, "best_rule": best,
               "best_rule_sharpe": figure(f"rule/{best}") if best else None,
               "best_rule_total_return": figure(f"rule/{best}", "total_return") if best
               else None,
               "margins": margins, "folds_lost_to_best_member": lost_member,
               "folds_lost_to_winner_takes_all": lost_winner, "folds": len(fold_books)}

    def name(rule: str) -> str:
        return RULE_LABELS.get(rule, rule)

    def num(x: float | None, pct: bool = False) -> str:
        return "-" if x is None else (f"{100 * x:+.1f}%" if pct else f"{x:.2f}")

    lines = []
    if best is not None:
        behind = "; ".join(
            f"{name(r)} {num(figure(f'rule/{r}'))} (by {num(margins[r]['sharpe'])} Sharpe, "
            f"{num(margins[r]['total_return'], pct=True)} return)" for r in rules if r != best)
        lines.append(f"best rule over the stitched out-of-sample period: {name(best)} (Sharpe "
                     f"{num(figure(f'rule/{best}'))}, return "
                     f"{num(figure(f'rule/{best}', 'total_return'), pct=True)}), ahead of "
                     f"{behind}")
    label = f"the ensemble (agent.combine={combine})"
    if lost_member:
        lines.append(f"{label} lost to the best member alone in "
                     f"{len(lost_member)} of {len(fold_books)} folds: " + "; ".join(
                         f"fold {x['fold']} {num(x['ensemble_sharpe'])} vs {x['member']} "
                         f"{num(x['member_sharpe'])}" for x in lost_member))
    else:
        lines.append(f"{label} beat or matched the best member alone in every fold")
    if combine != "winner":
        if lost_winner:
            lines.append(f"{label} lost to winner-takes-all in {len(lost_winner)} of "
                         f"{len(fold_books)} folds: " + "; ".join(
                             f"fold {x['fold']} {num(x['ensemble_sharpe'])} vs "
                             f"{num(x['winner_sharpe'])}" for x in lost_winner))
        else:
            lines.append(f"{label} beat or matched winner-takes-all in every fold")
    return section, lines
