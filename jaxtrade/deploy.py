"""Deploy gates and the decision history of continuous learning (`jaxtrade retrain`).

A retrain evaluates the candidate and the incumbent bundle on the same validation window
(the numpy runner, as live) and promotes the candidate only if a gate passes:

  ratio  validation Sharpe > incumbent's + (factor - 1) * |incumbent's| (factor 1.05: 5 %
         better; for a positive incumbent Sharpe that is Sharpe > 1.05 x incumbent's), and
         max drawdown not deeper: the rule of `jaxtrade backtest --compare`
         (jaxtrade/evaluate/gate.py) applied to the two bundles' returns.
  psr    the Probabilistic Sharpe Ratio of the per-bar return difference (candidate minus
         incumbent) against the Sharpe that the best of N unskilled retrains would show by
         luck (N: the retrains so far, this one included; each with the sampling variance
         1 / (T - 1) of a per-bar Sharpe over T bars): promote when it is >= 0.95. With N = 1
         it is the plain PSR that the candidate's Sharpe beats the incumbent's.

Each retrain writes a decision record (JSON) into its folder and appends it to
`RUN/retrains/history.jsonl`, which `jaxtrade retrain --history RUN` prints.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxtrade.errors import ConfigError

GATES = ("ratio", "psr")
HISTORY = "history.jsonl"
DECISION = "decision.json"


@dataclasses.dataclass(frozen=True)
class GateResult:
    gate: str
    passed: bool
    reason: str
    inputs: dict[str, Any]


def scores(returns: np.ndarray, bars_per_year: float) -> dict[str, float]:
    """Sharpe (annualized), max drawdown (<= 0), total return and bar count of simple
    per-bar returns, with the conventions of jaxtrade.metrics."""
    r = np.asarray(returns, dtype=np.float64)
    out = {
        "num_bars": int(r.size),
        "sharpe": math.nan,
        "max_drawdown": 0.0,
        "total_return": float(np.prod(1.0 + r) - 1.0) if r.size else 0.0,
    }
    if r.size >= 2:
        std = r.std(ddof=1)
        out["sharpe"] = float(r.mean() / std * math.sqrt(bars_per_year)) if std > 0 else 0.0
        curve = np.cumprod(1.0 + r)
        peak = np.maximum.accumulate(np.concatenate([[1.0], curve]))[1:]
        out["max_drawdown"] = float(min(np.min(curve / peak - 1.0), 0.0))
    return out


def ratio_gate(
    candidate: dict[str, float], incumbent: dict[str, float], factor: float = 1.05
) -> GateResult:
    """`backtest --compare`'s rule on the two bundles' validation scores."""
    if factor < 1.0:
        raise ConfigError(f"factor={factor} is not allowed: it must be >= 1.0")
    new, old = candidate["sharpe"], incumbent["sharpe"]
    new_dd, old_dd = candidate["max_drawdown"], incumbent["max_drawdown"]
    needed = old + (factor - 1.0) * abs(old) if math.isfinite(old) else -math.inf
    inputs = {
        "factor": factor,
        "needed_sharpe": needed if math.isfinite(needed) else None,
        "candidate_sharpe": new,
        "incumbent_sharpe": old,
        "candidate_max_drawdown": new_dd,
        "incumbent_max_drawdown": old_dd,
    }
    if not math.isfinite(new):
        return GateResult("ratio", False, f"candidate Sharpe is {new}", inputs)
    sharpe_ok = new > needed
    dd_ok = not new_dd < old_dd
    facts = (
        f"Sharpe {new:.3f} vs incumbent {old:.3f} (needs > {needed:.3f}); max drawdown "
        f"{new_dd:.2%} vs {old_dd:.2%}"
    )
    if sharpe_ok and dd_ok:
        return GateResult("ratio", True, f"promote: {facts}", inputs)
    why = [
        w
        for ok, w in ((sharpe_ok, "Sharpe not better by the factor"), (dd_ok, "drawdown is worse"))
        if not ok
    ]
    return GateResult("ratio", False, f"keep incumbent ({' and '.join(why)}): {facts}", inputs)


def _moments(x: np.ndarray) -> tuple[float, float]:
    centred = x - x.mean()
    m2 = float(np.mean(centred**2))
    if m2 <= 0:
        return 0.0, 3.0
    return float(np.mean(centred**3) / m2**1.5), float(np.mean(centred**4) / m2**2)


def psr_gate(
    candidate_returns: np.ndarray,
    incumbent_returns: np.ndarray,
    trials: int,
    threshold: float = 0.95,
) -> GateResult:
    """PSR of the return difference against the luck of `trials` retrains (module doc)."""
    from statistics import NormalDist

    c = np.asarray(candidate_returns, dtype=np.float64)
    i = np.asarray(incumbent_returns, dtype=np.float64)
    if c.shape != i.shape:
        raise ValueError(f"returns of different windows: {c.shape} vs {i.shape}")
    diff = c - i
    n = int(diff.size)
    trials = max(int(trials), 1)
    inputs: dict[str, Any] = {"threshold": threshold, "trials": trials, "num_bars": n}
    std = float(diff.std(ddof=1)) if n >= 2 else 0.0
    if n < 3 or std == 0.0:
        return GateResult(
            "psr",
            False,
            "keep incumbent: the candidate's returns do not differ "
            f"from the incumbent's on the {n}-bar window",
            inputs,
        )
    sharpe = float(diff.mean()) / std
    g3, g4 = _moments(diff)
    # Expected best of `trials` per-bar Sharpe ratios of zero true value (Bailey & Lopez de
    # Prado 2014), each with the estimator's sampling variance 1 / (n - 1).
    normal = NormalDist()
    gamma = 0.5772156649015329
    benchmark = 0.0
    if trials > 1:
        benchmark = math.sqrt(1.0 / (n - 1)) * (
            (1 - gamma) * normal.inv_cdf(1 - 1 / trials)
            + gamma * normal.inv_cdf(1 - 1 / (trials * math.e))
        )
    variance_term = max(1.0 - g3 * sharpe + (g4 - 1.0) / 4.0 * sharpe**2, 1e-12)
    psr = normal.cdf((sharpe - benchmark) * math.sqrt(n - 1) / math.sqrt(variance_term))
    inputs.update(
        {
            "difference_sharpe_per_bar": sharpe,
            "benchmark_sharpe_per_bar": benchmark,
            "skewness": g3,
            "kurtosis": g4,
            "psr": psr,
        }
    )
    facts = (
        f"PSR {psr:.3f} (threshold {threshold:g}) that the candidate's Sharpe beats the "
        f"incumbent's over {n} bars, {trials} retrain(s) as trials"
    )
    return GateResult(
        "psr",
        psr >= threshold,
        f"{'promote' if psr >= threshold else 'keep incumbent'}: {facts}",
        inputs,
    )


# ------------------------------------------------------------------------------ history


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write `path` through a temporary file and one rename (a reader never sees half)."""
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with temp.open("w", encoding="utf-8") as handle:
        handle.write(json.dumps(data, indent=1, allow_nan=False, default=_plain))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def append_history(retrains_dir: Path, record: dict[str, Any]) -> None:
    """Append one record as a JSON line (fsynced); a torn line from a kill is skipped by
    `read_history` and the record is added again by the next retrain's recovery."""
    with (retrains_dir / HISTORY).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, allow_nan=False, default=_plain) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_history(
    retrains_dir: Path, warn: Callable[[str], None] | None = None
) -> list[dict[str, Any]]:
    path = retrains_dir / HISTORY
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if warn:
                warn(
                    f"{path}:{number}: skipped an unreadable line (a retrain killed while "
                    "writing it)"
                )
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _plain(value: Any) -> Any:
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-able: {type(value).__name__}")


def clean_number(value: Any) -> Any:
    """None for NaN / infinities (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean_number(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_number(v) for v in value]
    return value


def format_history(records: Sequence[dict[str, Any]]) -> str:
    """The decision history as a table, one retrain per line, oldest first."""
    header = (
        f"{'#':>4}  {'finished (UTC)':20}  {'gate':5}  {'decision':9}  "
        f"{'cand Sharpe':>11}  {'inc Sharpe':>10}  {'cand DD':>8}  {'inc DD':>8}  "
        f"{'bars to':20}  {'s':>6}  note"
    )
    lines = [header]

    def num(value: Any, pct: bool = False) -> str:
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return "-"
        return f"{100 * value:.1f}%" if pct else f"{value:.2f}"

    for r in records:
        cand = r.get("candidate", {}).get("scores") or {}
        inc = r.get("incumbent", {}).get("scores") or {}
        decision = r.get("decision", "?")
        note = r.get("reason", "")
        if r.get("recovered"):
            note = "(recovered after an interrupted retrain) " + note
        lines.append(
            f"{r.get('number', 0):>4}  {str(r.get('finished_utc', ''))[:19]:20}  "
            f"{str(r.get('gate') or '-'):5}  {decision:9}  {num(cand.get('sharpe')):>11}  "
            f"{num(inc.get('sharpe')):>10}  {num(cand.get('max_drawdown'), True):>8}  "
            f"{num(inc.get('max_drawdown'), True):>8}  "
            f"{str((r.get('data') or {}).get('last_bar', ''))[:19]:20}  "
            f"{num((r.get('timings_s') or {}).get('total')):>6}  {note}"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------ report
HISTORY_BEGIN = "<!-- retrain-history -->"
HISTORY_END = "<!-- /retrain-history -->"


def history_html(records: Sequence[dict[str, Any]]) -> str:
    """The decision history as the report's section: one row per retrain attempt with its
    date, gate, decision, candidate vs incumbent scores on the shared validation window, the
    data range and the reason (between markers, so a later retrain replaces it)."""
    import html

    def num(value: Any, pct: bool = False) -> str:
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return "-"
        return f"{100 * value:.1f}%" if pct else f"{value:.2f}"

    rows = []
    for r in records:
        cand = (r.get("candidate") or {}).get("scores") or {}
        inc = (r.get("incumbent") or {}).get("scores") or {}
        data = r.get("data") or {}
        window = data.get("validation") or {}
        decision = str(r.get("decision", "?"))
        note = str(r.get("reason", ""))
        if r.get("recovered"):
            note = "(recovered after an interrupted retrain) " + note
        cells = [
            str(r.get("number", "")), str(r.get("finished_utc", ""))[:19],
            str(r.get("gate") or "-"), f"<b>{html.escape(decision)}</b>",
            num(cand.get("sharpe")), num(inc.get("sharpe")),
            num(cand.get("max_drawdown"), True), num(inc.get("max_drawdown"), True),
            num(cand.get("total_return"), True), num(inc.get("total_return"), True),
            f"{str(window.get('first_bar', ''))[:19]} to {str(window.get('last_bar', ''))[:19]}"
            if window else "-",
            str(data.get("new_bars_used", "-")),
        ]
        cls = " class='promoted'" if decision == "promoted" else ""
        rows.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in cells[:3])
                    + f"<td>{cells[3]}</td>"
                    + "".join(f"<td>{html.escape(c)}</td>" for c in cells[4:])
                    + f"<td>{html.escape(note)}</td></tr>")
    head = ("<tr><th>#</th><th>finished (UTC)</th><th>gate</th><th>decision</th>"
            "<th>candidate Sharpe</th><th>incumbent Sharpe</th><th>candidate max DD</th>"
            "<th>incumbent max DD</th><th>candidate return</th><th>incumbent return</th>"
            "<th>validation window</th><th>new bars</th><th>reason</th></tr>")
    retrains = [r for r in records if r.get("gate")]  # not the initial deployment
    promoted = sum(1 for r in retrains if r.get("decision") == "promoted")
    body = (f"<p>{len(retrains)} retrain attempt(s) after the initial deployment, {promoted} "
            "promoted; scores of both bundles on the same most recent validation window "
            "(`jaxtrade retrain --history RUN` prints the same).</p>"
            f"<table>{head}{''.join(rows)}</table>") if records else \
        "<p>No retrain yet.</p>"
    return (f"{HISTORY_BEGIN}\n<h2>Retrain history (continuous learning)</h2>\n{body}\n"
            f"{HISTORY_END}")


def update_report_history(run_dir: Path) -> Path | None:
    """Put the run's retrain history into RUN/report/report.html (replacing the section a
    previous retrain wrote; atomically); None when the run has no report page."""
    page = Path(run_dir) / "report" / "report.html"
    if not page.is_file():
        return None
    records = read_history(Path(run_dir) / "retrains")
    text = page.read_text(encoding="utf-8")
    section = history_html(records)
    if HISTORY_BEGIN in text and HISTORY_END in text:
        before, rest = text.split(HISTORY_BEGIN, 1)
        after = rest.split(HISTORY_END, 1)[1]
        text = before + section + after
    elif "</body>" in text:
        text = text.replace("</body>", section + "\n</body>", 1)
    else:
        text += section
    temp = page.with_name(f".{page.name}.tmp-{os.getpid()}")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, page)
    return page
