"""`jaxtrade export`: restore a run's checkpoint and write its numpy-only bundle.

    jaxtrade export run_dir=runs/x out=bundles/x [checkpoint=best|latest|STEP] [point=N]
                    [format=numpy|onnx] [formats=[numpy,onnx]]
                    [combine=vote|router|winner|equal] [min_trade_probability=P]

format=onnx (or formats=[numpy,onnx]) also writes policy.onnx, for `runner.py --engine onnx`;
it needs the extra `pip install -e ".[onnx]"`. The numpy weights are always written.

The checkpoint and point are chosen as for `jaxtrade backtest` (jaxtrade.runs), so a bundle
trades like the backtest of the same checkpoint. What a bundle holds and what is refused is
described in jaxtrade/export.py. An ensemble run exports its own rule (`agent.combine`) and
threshold (`agent.min_trade_probability`) unless `combine=` / `min_trade_probability=` choose
others (the report compares every rule on the same checkpoint).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experiments.train import restore_run
from jaxtrade.errors import ConfigError
from jaxtrade.export import __doc__ as BUNDLE_DOC
from jaxtrade.export import check_ensemble_members, write_bundle
from jaxtrade.runs import point_params

HELP = __doc__ + "\n" + (BUNDLE_DOC or "")


def _to_host(tree: Any) -> Any:
    """Host numpy copy of a pytree of arrays."""
    import jax

    return jax.tree.map(np.asarray, tree)


FORMATS = ("numpy", "onnx")


def export(
    run_dir: str | Path, out: str | Path, checkpoint: str | int = "best", point: int | None = None,
    *, bars: Mapping[str, Any] | None = None, formats: Sequence[str] = ("numpy",),
    combine: str | None = None, min_trade_probability: float | None = None,
) -> Path:
    """Restore a run's checkpoint and write its bundle (the best sweep point by default).

    The checkpoint and point are chosen by jaxtrade.runs.restore_point, as for `jaxtrade
    backtest`, so a bundle trades like the backtest of the same checkpoint. `bars`: how the
    runner reads its sources (default: as the run read its bars; `jaxtrade retrain` keeps the
    deployed bundle's, since its candidates train on bars it stored canonically). `formats`:
    "onnx" among them also writes policy.onnx. `combine`, `min_trade_probability`: an
    ensemble's rule and threshold in the bundle (default: the run's).
    """
    check_combination(combine, min_trade_probability)
    check_exportable(run_dir)
    prep, restored, _ = restore_run(run_dir, checkpoint, point, command="export")
    if prep.agent.members is not None:  # an ensemble: members + the combination
        params, network_config, head = ensemble_params(
            prep, restored.params, combine, min_trade_probability), prep.agent_config, \
            {"family": "ensemble"}
    else:
        if combine is not None or min_trade_probability is not None:
            raise ConfigError("combine= and min_trade_probability= apply to an ensemble run "
                              f"only; {run_dir} trained agent={prep.cfg['agent']['name']}")
        params, network_config, head = restored.params, prep.agent_config.network, \
            prep.agent_config.export_head()
    params = _to_host(params)
    critic = None
    if head.get("family") == "actor_critic" and hasattr(restored.state, "critic_params"):
        # A replay actor-critic (SAC, TD3, DDPG): its critics go along for Q(s, pi(s)).
        critic = _to_host(point_params(restored.state, restored.point,
                                       lambda state: state.critic_params))
    symbol = prep.market.meta.symbols[0]
    return write_bundle(
        out,
        params=params,
        network_config=network_config,
        head=head,
        onnx="onnx" in formats,
        critic_params=critic,
        env=prep.env,
        env_params=prep.env_params,
        run_config=prep.cfg,
        bars=bars if bars is not None else bars_spec(prep.cfg["data"], symbol),
        monitor=report_drawdown(Path(run_dir)),
        source={
            "run_dir": str(Path(run_dir).resolve()),
            "checkpoint": str(checkpoint),
            "update": restored.step,
            "point": restored.point,
        },
    )


def check_exportable(run_dir: str | Path) -> None:
    """ExportError (one line, exit 2) for a run the bundle's runner cannot trade, read from
    its config.yaml before anything is restored or fitted: a config whose export_head
    refuses, an ensemble with a member that has no bundle."""
    import agents
    from experiments.common import compose_run_from_saved, read_run_config

    config = agents.config_from_dict(dict(compose_run_from_saved(read_run_config(run_dir))
                                          ["agent"]))
    if getattr(config, "members", None) is not None:
        check_ensemble_members(config)
    else:
        config.export_head()


def check_combination(combine: str | None, min_trade_probability: float | None) -> None:
    """Refuse an unknown rule or a threshold outside [0, 1) before anything is restored."""
    from agents.ensemble import COMBINE_RULES

    if combine is not None and combine not in COMBINE_RULES:
        raise ConfigError(f"combine={combine!r} is not a rule: use {', '.join(COMBINE_RULES)}")
    if min_trade_probability is not None and not 0.0 <= min_trade_probability < 1.0:
        raise ConfigError("min_trade_probability must be in [0, 1)")


def ensemble_params(prep: Any, params: Any, combine: str | None = None,
                    min_trade_probability: float | None = None) -> Any:
    """An ensemble's policy params as its report backtests them: the run's rule (or
    `combine`), with the router and winner fitted on training + validation bars
    (jaxtrade.evaluate.ensemble), and `min_trade_probability` when given."""
    from jaxtrade.evaluate import ensemble as ensemble_eval

    check_combination(combine, min_trade_probability)
    rule = prep.agent.config.combine if combine is None else combine
    deterministic = bool(prep.cfg["train"]["deterministic_eval"])
    fitted = ensemble_eval.fit(prep.agent, params, prep.env, prep.env_params, deterministic)
    return ensemble_eval.with_rule(params, rule, fitted, min_trade_probability)


def report_drawdown(run_dir: Path) -> dict[str, Any]:
    """The worst max drawdown of the policy over the splits of the run's report (the runner's
    drawdown alert threshold), when the run has a report."""
    import json
    import math

    path = run_dir / "report" / "metrics.json"
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    found = [float(v) for s in ("train", "validation", "test")
             if isinstance(v := (metrics.get(s) or {}).get("max_drawdown"), (int, float))
             and math.isfinite(v)]
    return {"backtest_max_drawdown": min(found)} if found else {}


def bars_spec(data_cfg: Mapping[str, Any], symbol: str | None = None) -> dict[str, Any]:
    """How the run's bars were read, from its data section as `common.load_frame` reads it."""
    from jaxtrade.data.loaders import describe_source

    source = data_cfg["source"]
    options = {k: v for k, v in dict(data_cfg.get("options") or {}).items()
               if k not in ("symbol",)}
    if data_cfg.get("columns"):
        options["columns"] = dict(data_cfg["columns"])
    if source in ("csv", "parquet"):
        return describe_source(Path(data_cfg["path"]).expanduser(), format=source,
                               symbol=symbol, **options)
    return describe_source(data_cfg.get("path") or source, symbol=symbol, **options)


def parse_formats(value: str) -> tuple[str, ...]:
    """`onnx`, `[numpy,onnx]` or `numpy,onnx` -> the formats, each checked."""
    names = [v.strip(" []'\"") for v in value.split(",") if v.strip(" []'\"")]
    for name in names:
        if name not in FORMATS:
            raise ConfigError(f"unknown export format {name!r}; use {', '.join(FORMATS)}")
    if not names:
        raise ConfigError("formats is empty; use numpy, onnx or [numpy,onnx]")
    return tuple(names)


KEYS = ("run_dir", "out", "checkpoint", "point", "format", "formats", "combine",
        "min_trade_probability")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help", "help") for a in argv):
        print(HELP)
        return 0
    args: dict[str, str] = {}
    for arg in argv:
        if "=" not in arg:
            raise ConfigError(f"expected key=value, got {arg!r} (see jaxtrade export --help)")
        key, value = arg.split("=", 1)
        if key not in KEYS:
            raise ConfigError(f"unknown key {key!r}; use {', '.join(KEYS)}")
        args[key] = value
    if "run_dir" not in args or "out" not in args:
        raise ConfigError("run_dir and out are required: jaxtrade export run_dir=runs/x out=B")
    point = int(args["point"]) if "point" in args else None
    formats = parse_formats(",".join(args[k] for k in ("format", "formats") if k in args)
                            or "numpy")
    threshold = args.get("min_trade_probability")
    try:
        threshold = float(threshold) if threshold is not None else None
    except ValueError:
        raise ConfigError(f"min_trade_probability={threshold!r} is not a number") from None
    path = export(args["run_dir"], args["out"], args.get("checkpoint", "best"), point,
                  formats=formats, combine=args.get("combine"), min_trade_probability=threshold)
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    print(
        f"exported {args['run_dir']} to {path} ({size / 1024:.0f} KiB); "
        f"run it with: python {path / 'runner.py'} --bars bars.csv"
        + (" [--engine onnx]" if "onnx" in formats else "")
    )
    return 0
