"""`jaxtrade walkforward`: retrain an agent per fold, test each fold out of sample, stitch.

    jaxtrade walkforward agent=ensemble walkforward.folds=4 [any `jaxtrade train` override]

A command of its own rather than a `jaxtrade train` setting: train makes one run (one
config.yaml, one checkpoint series that resume, fork, backtest and export continue), and a
walk-forward is K such runs on K different bar ranges plus a report over all of them.

Order of work: compose + validate the train config and the walkforward.* keys -> load the
bars, cut the folds (jaxtrade.data.splits.walk_forward_folds: each fold cut like a single
run's split, by data.train_frac / data.validation_frac / the rest, data.embargo_bars between,
test windows tiling the last bars), refuse folds whose validation or test window is under
the project's minimum (MIN_EVAL_BARS) -> per fold k: a run in RUN/folds/<k>/ whose config
records the fold's ranges (data.splits), trained by `jaxtrade train`'s own code on the fold's
market (features, normalization and regimes fitted on the fold's training bars only; the
checkpoint kept by validation Sharpe on the fold's validation bars), then restored and
backtested on the fold's test window beside the baselines; an ensemble also fits its router,
winner-takes-all and trade prior on the fold's train + validation bars and backtests every
rule and every member alone -> stitch the test windows (jaxtrade.evaluate.walk_forward.stitch)
-> RUN/report/ and a console summary.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experiments import common
from jaxtrade.errors import ConfigError
from jaxtrade.logging import plural

HELP = """usage: jaxtrade walkforward [walkforward.folds=4] [walkforward.anchored=false]
                            [key=value ...]

Walk-forward out-of-sample evaluation of any agent: for each fold, train a new run on the
fold's training bars (its checkpoint chosen on the fold's validation bars), then backtest it
on the fold's test window, which comes after every bar it trained or chose on; the test
windows are stitched into one out-of-sample equity curve. Every other key=value is a
`jaxtrade train` override (see jaxtrade train --help): agent, data, env, sizes, seed, logger.

  walkforward.folds=4        number of folds (>= 2); their test windows tile the last bars
  walkforward.anchored=false rolling training windows of a fixed length; true: every fold
                             trains from the first bar (growing windows)

Each fold is cut like a single run: data.train_frac : data.validation_frac : the rest
(train : validation : test), data.embargo_bars dropped between them; each later fold moves on
by one test window. Features, normalization and HMM regimes are fitted on each fold's
training bars. Folds whose validation or test window would hold fewer than 30 bars are
refused (the same minimum as a run's splits), with the most folds the bars allow.
agent=ensemble: each fold also fits the router, winner-takes-all and the trade prior on its
training + validation bars, and reports every rule and every member alone.

Writes RUN/ (run_dir=, default runs/walkforward-<agent>-<data>-<UTC time>):
  folds/<k>/          fold k's training run (config.yaml with its data.splits, checkpoints,
                      metrics.jsonl): `jaxtrade backtest run_dir=RUN/folds/<k>` gives its
                      full report (train.report=true writes it during the walk-forward)
  report/folds.csv    one row per fold and book (policy, rules, members, baselines): the
                      windows and the test Sharpe, return, max drawdown and turnover
  report/metrics.json every fold's ranges, dates and test figures; every book's figures
                      over the stitched period; which rule won and when the ensemble lost
  report/equity.png   stitched out-of-sample equity of every book
  report/positions.csv the traded book's target per test bar (with its fold)
  report/summary.txt  the console summary

examples:
  jaxtrade walkforward agent=ppo data=eurusd_1h train.total_steps=2e5
  jaxtrade walkforward agent=ensemble 'agent.members=[ppo,sac]' walkforward.folds=6 \\
      walkforward.anchored=true
Exit codes: 0 ok, 2 bad config or data (too many folds for the bars included).
"""

DEFAULT_FOLDS = 4
SETTINGS = {"walkforward.folds": DEFAULT_FOLDS, "walkforward.anchored": False}


def parse_settings(argv: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """(walkforward.* settings with defaults, the other arguments as train overrides)."""
    from jaxtrade.config.validate import unknown_key

    settings = dict(SETTINGS)
    overrides = []
    for arg in common.split_flags(argv):
        key, sep, value = arg.partition("=")
        if not key.startswith("walkforward."):
            overrides.append(arg)
            continue
        if key not in SETTINGS:
            raise unknown_key(key, value, [k.split(".", 1)[1] for k in SETTINGS])
        if key == "walkforward.folds":
            try:
                settings[key] = int(value)
            except ValueError:
                raise ConfigError(f"{arg} is not allowed: expected an integer >= 2") from None
            if settings[key] < 2:
                raise ConfigError(f"{arg} is not allowed: a walk-forward needs at least 2 "
                                  "folds (one fold is `jaxtrade train`)")
        else:
            if value.lower() not in ("true", "false"):
                raise ConfigError(f"{arg} is not allowed: expected true or false")
            settings[key] = value.lower() == "true"
    return settings, overrides


def refuse_run_keys(overrides: Sequence[str]) -> None:
    """What belongs to one training run, not to a walk-forward, is refused in one line."""
    from jaxtrade.config.compose import parse_overrides

    keys = common.override_keys(overrides)
    refused = {
        "resume": "a walk-forward trains new runs and does not continue one",
        "from_run": "a walk-forward trains new runs and does not continue one",
        "data.splits": "the walk-forward cuts each fold's ranges itself",
        "train.stop_after_updates": "every fold trains to the end before it is tested",
        "train.distributed": "it runs in one process (train.devices shards its points)",
    }
    for key in sorted(keys):
        found = next((k for k in refused if key == k or key.startswith(k + ".")), None)
        if found is not None:
            raise ConfigError(f"{key} is not allowed with jaxtrade walkforward: {refused[found]}")
    texts = [a for a in overrides if not a.startswith("-")]
    for text, override in zip(texts, parse_overrides(texts), strict=True):
        if override.is_sweep_override():
            raise ConfigError(f"'{text}' is a sweep; jaxtrade walkforward evaluates one "
                              "configuration (sweep first, then walk the chosen one forward)")


def main(argv: Sequence[str]) -> int:
    if common.wants_help(argv):
        print(HELP)
        return 0
    settings, overrides = parse_settings(argv)
    refuse_run_keys(overrides)
    cfg = common.compose(overrides)
    if cfg["sweep"]["method"] != "none":
        raise ConfigError(f"sweep={cfg['sweep']['method']} is not allowed with jaxtrade "
                          "walkforward: it evaluates one configuration")
    walk_forward(cfg, settings, set_by_user=common.override_keys(overrides))
    return 0


def fold_layout(cfg: Mapping[str, Any], settings: Mapping[str, Any], num_bars: int) -> list:
    """The folds of `num_bars` bars (jaxtrade.data.splits.Splits, oldest first), or one
    ConfigError when a fold's validation or test window, or its training window for the
    observation window, is too short, naming the most folds the bars allow."""
    from jaxtrade.config import check_window
    from jaxtrade.config.validate import MIN_EVAL_BARS
    from jaxtrade.data.splits import walk_forward_folds

    data = cfg["data"]
    count = int(settings["walkforward.folds"])

    def cut(k: int) -> list:
        return walk_forward_folds(num_bars, k, data["train_frac"], data["validation_frac"],
                                  data["embargo_bars"], bool(settings["walkforward.anchored"]))

    def short(folds: list) -> list[str]:
        first = folds[0]
        sizes = {"validation": first.validation[1] - first.validation[0],
                 "test": first.test[1] - first.test[0]}
        return [f"{n} {b} bars" for n, b in sizes.items()
                if b < MIN_EVAL_BARS and not (n == "validation" and data["validation_frac"] == 0)]

    def fits(k: int) -> bool:
        try:
            return not short(cut(k))
        except ConfigError:
            return False

    try:
        folds = cut(count)
        problems = short(folds)
    except ConfigError:
        folds, problems = [], ["windows would hold no bars"]
    if problems:
        # More folds, shorter windows: the counts that fit are 2 .. most (bisected).
        low, high = 1, max(2, num_bars // MIN_EVAL_BARS)
        while low < high:
            middle = (low + high + 1) // 2
            low, high = (middle, high) if fits(middle) else (low, middle - 1)
        allowed = f"at most {low} folds fit" if low >= 2 else "not even 2 folds fit"
        raise ConfigError(
            f"walkforward.folds={count} is not allowed with {num_bars} bars: each fold's "
            f"{' and '.join(problems)} (data.train_frac={data['train_frac']:g}, "
            f"data.validation_frac={data['validation_frac']:g}, data.embargo_bars="
            f"{data['embargo_bars']}); validation and test windows need at least "
            f"{MIN_EVAL_BARS} bars each: {allowed}; use fewer folds or more bars")
    check_window(int(cfg["env"].get("window_bars", 1)), folds[0].train[1] - folds[0].train[0])
    return folds


def fold_config(cfg: Mapping[str, Any], fold: Any, run_dir: Path,
                write_report: bool) -> dict[str, Any]:
    """Fold k's run config: the walk-forward's, with the fold's ranges as data.splits (the
    fractions and embargo they replace at their defaults) and its own run directory."""
    from jaxtrade.config.schema import DataConfig

    out = copy.deepcopy(dict(cfg))
    defaults = DataConfig()
    out["data"].update(splits={n: list(fold.bounds(n)) for n in ("train", "validation", "test")},
                       train_frac=defaults.train_frac, validation_frac=defaults.validation_frac,
                       embargo_bars=defaults.embargo_bars)
    out["run_dir"] = str(run_dir)
    out["resume"] = False
    out["train"] = dict(out["train"], report=write_report)
    return common.compose_run_from_saved(out)


def _date(ts: Any) -> str:
    text = str(np.datetime_as_string(np.datetime64(ts, "m"), unit="m"))
    return text.removesuffix("T00:00")


def run_fold(cfg: Mapping[str, Any], fold: Any, k: int, run_dir: Path, *,
             print_fn: Callable[[str], None] = print,
             set_by_user: Collection[str] | None = None) -> tuple[Any, str]:
    """Train fold k in `run_dir` and backtest it on its test window.

    Returns (jaxtrade.evaluate.walk_forward.FoldReport, the traded book's key). Every book is
    backtested on the fold's own market, whose statistics were fitted on its training bars.
    """
    from experiments import train as train_lib
    from jaxtrade.evaluate.backtest import agent_policy, backtest
    from jaxtrade.evaluate.baselines import run_baselines
    from jaxtrade.evaluate.walk_forward import FoldReport

    write_report = bool(cfg["train"]["report"]) and "train.report" in (set_by_user or ())
    fold_cfg = fold_config(cfg, fold, run_dir, write_report)
    train_lib.train(fold_cfg, command="walkforward", print_fn=print_fn, set_by_user=set_by_user)
    prep, restored, _ = train_lib.restore_run(run_dir, cfg["train"]["report_from"],
                                              command="walkforward")
    deterministic = bool(cfg["train"]["deterministic_eval"])
    books: dict[str, Any] = {}
    notes: dict[str, Any] = {"checkpoint": {"update": restored.step, "point": restored.point},
                             "run_dir": str(run_dir)}
    if prep.agent.members is not None:
        from agents.ensemble import COMBINE_RULES
        from jaxtrade.evaluate import ensemble as ensemble_eval

        names = list(prep.agent.members)
        found = ensemble_eval.evaluate_split(prep.agent, restored.params, prep.env,
                                             prep.env_params, "test", deterministic)
        combine = prep.agent.config.combine
        for rule in COMBINE_RULES:
            books[f"rule/{rule}"] = found.rules[rule]
        for name in names:
            books[f"member/{name}"] = found.members[name]
        policy = f"rule/{combine}"
        books[policy].columns = ensemble_eval.positions_columns(books[policy], names, combine)
        notes["winner"] = names[int(np.argmax(found.fitted["winner"]))]
        notes["router_table"] = np.asarray(found.fitted["router"]).tolist()
        notes["trade_prior_mean"] = {r: float(v) for r, v in
                                     found.fitted["trade_prior_mean"].items()}
    else:
        policy = f"policy/{cfg['agent']['name']}"
        books[policy] = backtest(prep.env, prep.env_params,
                                 agent_policy(prep.agent, restored.params), split="test",
                                 deterministic=deterministic)
    for name, by_split in run_baselines(prep.env, prep.env_params, splits=("test",)).items():
        if "test" in by_split:
            books[f"baseline/{name}"] = by_split["test"]
    stamps = np.asarray(prep.market.meta.timestamps)
    dates = {s: (_date(stamps[a]), _date(stamps[b - 1])) for s in ("train", "validation", "test")
             for a, b in [fold.bounds(s)] if b > a}
    return FoldReport(fold, dates, books, notes), policy


def walk_forward(cfg: dict[str, Any], settings: Mapping[str, Any], *,
                 print_fn: Callable[[str], None] = print,
                 set_by_user: Collection[str] | None = None) -> Path:
    """Run every fold, write RUN/report/ and print the summary; returns the report folder."""
    root = common.resolve_run_dir(cfg, "walkforward")
    if (root / "folds").exists() or (root / "report").exists():
        raise ConfigError(f"run_dir={str(root)!r} is not allowed: it already holds a "
                          "walk-forward; choose another run_dir")
    common.enable_compile_cache(cfg)
    frame = common.load_frame(cfg["data"])
    cfg["data"]["fingerprint"] = common.data_fingerprint(frame)
    num_bars = common.num_bars_per_symbol(frame)
    folds = fold_layout(cfg, settings, num_bars)
    lengths = {s: folds[0].bounds(s)[1] - folds[0].bounds(s)[0]
               for s in ("train", "validation", "test")}
    kind = "anchored" if settings["walkforward.anchored"] else "rolling"
    print_fn(f"walk-forward of {cfg['agent']['name']} on {common.data_label(cfg['data'])}: "
             f"{plural(len(folds), 'fold')} ({kind}), each {lengths['train']} training"
             f"{' (first fold)' if kind == 'anchored' else ''}, {lengths['validation']} "
             f"validation and {lengths['test']} test bars -> {root}")
    reports, policy = [], ""
    for k, fold in enumerate(folds):
        print_fn(f"fold {k + 1}/{len(folds)}: train bars [{fold.train[0]}, {fold.train[1]}), "
                 f"validation [{fold.validation[0]}, {fold.validation[1]}), test "
                 f"[{fold.test[0]}, {fold.test[1]})")
        report, policy = run_fold(cfg, fold, k, root / "folds" / str(k), print_fn=print_fn,
                                  set_by_user=set_by_user)
        reports.append(report)
        result = report.books[policy]
        print_fn(f"fold {k + 1}/{len(folds)} test {report.dates['test'][0]} .. "
                 f"{report.dates['test'][1]}: {policy} Sharpe "
                 f"{_num(result.metrics.get('sharpe'))}, return "
                 f"{_num(result.metrics.get('total_return'), pct=True)}")
    return write_report(cfg, settings, folds, reports, policy, root, print_fn)


def write_report(cfg: Mapping[str, Any], settings: Mapping[str, Any], folds: Sequence[Any],
                 reports: Sequence[Any], policy: str, root: Path,
                 print_fn: Callable[[str], None] = print) -> Path:
    """RUN/report/: folds.csv, metrics.json, equity.png, positions.csv, summary.txt."""
    import polars as pl

    from jaxtrade.evaluate import walk_forward as wf

    folder = root / "report"
    folder.mkdir(parents=True, exist_ok=True)
    stitched = wf.stitch_books(reports)
    wf.fold_rows(reports).write_csv(folder / "folds.csv")
    metrics = wf.metrics_json(reports, stitched, policy)
    metrics["agent"] = cfg["agent"]["name"]
    metrics["settings"] = {
        "folds": len(folds), "anchored": bool(settings["walkforward.anchored"]),
        **{k: cfg["data"][k] for k in ("train_frac", "validation_frac", "embargo_bars")},
        **{f"{s}_bars": folds[0].bounds(s)[1] - folds[0].bounds(s)[0]
           for s in ("train", "validation", "test")},
        "data_fingerprint": cfg["data"]["fingerprint"]}
    lines = summary_table(reports, stitched, policy)
    lines += verdict_lines(metrics, stitched, policy)
    if policy.startswith("rule/"):
        from jaxtrade.evaluate.ensemble import walk_forward_verdict

        section, more = walk_forward_verdict(
            [r.books for r in reports], {b: s.metrics for b, s in stitched.items()},
            policy.split("/", 1)[1])
        metrics["ensemble"] = section
        lines += more
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False))
    frames = []
    for k, report in enumerate(reports):
        result = report.books[policy]
        frames.append(result.frame().select("timestamp", "symbol", "target_position",
                                            *result.columns)
                      .with_columns(pl.lit(k).alias("fold")))
    pl.concat(frames).write_csv(folder / "positions.csv")
    wf.plot_stitched(stitched, policy, [r.books[policy].timestamps[0] for r in reports],
                     folder / "equity.png")
    (folder / "summary.txt").write_text("\n".join(lines) + "\n")
    for line in lines:
        print_fn(line)
    print_fn(f"report: {folder}")
    return folder


def summary_table(reports: Sequence[Any], stitched: Mapping[str, Any], policy: str
                  ) -> list[str]:
    """Console table: each book's test Sharpe per fold, then its stitched Sharpe, return and
    max drawdown; the traded book first."""
    first, last = reports[0].books[policy], reports[-1].books[policy]
    bars = sum(len(r.books[policy].returns) for r in reports)
    lines = [f"walk-forward out of sample {_date(first.timestamps[0])} .. "
             f"{_date(last.timestamps[-1])} ({bars} test bars, "
             f"{plural(len(reports), 'fold')} retrained); test Sharpe per fold and stitched:"]
    books = [policy] + [b for b in stitched if b != policy]
    width = max(len(b) for b in books) + 2
    head = f"{'':{width}s}" + "".join(f"{'fold ' + str(k):>9s}" for k in range(len(reports)))
    lines.append(head + f"{'stitched':>10s}{'return':>10s}{'max DD':>9s}")
    for book in books:
        cells = "".join(f"{_num(r.books[book].metrics.get('sharpe')):>9s}" for r in reports)
        m = stitched[book].metrics
        lines.append(f"{book + (' *' if book == policy else ''):{width}s}{cells}"
                     f"{_num(m.get('sharpe')):>10s}{_num(m.get('total_return'), pct=True):>10s}"
                     f"{_num(m.get('max_drawdown'), pct=True):>9s}")
    lines.append("(* the traded book)")
    return lines


def verdict_lines(metrics: Mapping[str, Any], stitched: Mapping[str, Any], policy: str
                  ) -> list[str]:
    """The traded book's stitched Sharpe and its rank among the baselines."""
    def sharpe(book: str) -> float | None:
        value = stitched[book].metrics.get("sharpe")
        return float(value) if value is not None and np.isfinite(value) else None

    mine = sharpe(policy)
    baselines = {b: v for b in stitched if b.startswith("baseline/")
                 and (v := sharpe(b)) is not None}
    if mine is None or not baselines:
        return []
    best = max(baselines, key=baselines.get)
    rank = 1 + sum(v > mine for v in baselines.values())
    return [f"{policy} over the stitched period: Sharpe {mine:.2f} ranks {rank} of "
            f"{len(baselines) + 1} with the baselines (best baseline {best.split('/', 1)[1]} "
            f"{baselines[best]:.2f})"]


def _num(value: Any, pct: bool = False) -> str:
    if value is None or not isinstance(value, (int, float)) or not np.isfinite(value):
        return "-"
    return f"{100 * value:.1f}%" if pct else f"{value:.2f}"
