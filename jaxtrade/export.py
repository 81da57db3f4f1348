"""Write a trained policy as a bundle that a numpy-only runner trades.

`jaxtrade export run_dir=runs/x out=bundles/x [checkpoint=best|latest|STEP] [point=N]`
(experiments/export.py) restores a run and calls `write_bundle`.

BUNDLE/
  manifest.json          format version, how the training bars were read (`bars`: layout,
                         column mapping, timestamp rule; jaxtrade.data.describe_source),
                         feature spec + column order, normalization stats, regime model,
                         observation layout and window, action map, position limits, cost
                         model and risk rules, network description, the versions that trained
                         it, the run's config, sha256 of every weight file
  weights.safetensors    the actor's parameters (no pickle); an actor-critic's value head (and
                         critic torso, recurrent ones too: the runner carries their state)
                         for the state value the runner reports; a
                         replay actor-critic's (SAC, discrete SAC, TD3, DDPG) Q critics
                         under q_critics/<i>/, for the Q(s, pi(s)) it reports
  policy.onnx            with format=onnx (or formats=[numpy,onnx]): the same policy as an
                         ONNX graph for `runner.py --engine onnx` (jaxtrade/export_onnx.py:
                         inputs, outputs, and why it is built without JAX); needs the extra
                         `pip install -e ".[onnx]"`
  SHA256SUMS             sha256 of manifest.json, the weights and policy.onnx (`sha256sum -c
                         SHA256SUMS`); the runner refuses a bundle whose files differ from it
  runner.py              `python runner.py --bars bars.csv [--start T]`: numpy + stdlib only
  jaxtrade_live/         a copy of jaxtrade/live (the runner's code)

An ensemble run (agents/ensemble.py) exports every member (its actor or Q network, or an
mcts member's three heads and evaluation search settings as a standalone mcts bundle holds
them, under "<member>/" in the weights, with the action map of its own action mode; the env's
`reward` settings too when a member searches) and the combination:
the rule, the vote's window and prior, the router table and winner fitted on training and
validation bars (as the report fits them) and min_trade_probability, in the manifest's
`network` section (`family: ensemble`). The runner combines the members in numpy
(jaxtrade/live/ensemble.py): it updates the vote online from each member's paper returns and
prints the member weights and the trade probability beside the target; a run on several
symbols combines the members' target weight vectors per timestamp in the multi-asset runner
(jaxtrade/live/multi.py), as the backtest does.

An mcts run (agents/mcts.py, gumbel or stochastic search) exports its three heads (policy,
value, next-bar model) and its evaluation search settings (search, simulations, depth, gamma,
outcome buckets, the stochastic search's PUCT constant, no exploration noise) in the
manifest's `network` section plus the env's `reward` settings; the runner then runs the same
search in numpy (jaxtrade/live/mcts.py).

A run on several symbols (MarketData [T, A, F]) exports too: its manifest lists `symbols`,
and jaxtrade/live/multi.py's MultiAssetRunner trades it (one target weight per symbol per
timestamp). Refused with `ExportError` (never a half-written bundle): network kinds or
activations the runner cannot run. The numpy weights are always written: the runner's numpy
engine is the default, has no extra dependency, and its parity with training is tested bar for
bar; policy.onnx is checked against it on random observations before the bundle is published.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import platform
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jaxtrade.errors import ExportError
from jaxtrade.live import monitor as live_monitor
from jaxtrade.live import network as live_network
from jaxtrade.live.bars import Bar
from jaxtrade.live.bundle import (
    FORMAT_VERSION,
    MANIFEST,
    load_bundle,
    sha256_file,
    write_checksums,
)
from jaxtrade.live.errors import BundleError
from jaxtrade.live.formats import default_spec as default_bars_spec
from jaxtrade.live.tensors import write_safetensors

WEIGHTS = "weights.safetensors"
PACKAGE = "jaxtrade_live"

_RUNNER = '''#!/usr/bin/env python3
"""Run this exported jaxtrade policy: python runner.py --bars bars.csv [--start TIMESTAMP].

Needs only Python 3.10+ and numpy. `python runner.py --help` lists sources, sinks and the
replay store options.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from jaxtrade_live.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(default_bundle=str(HERE)))
'''


def _plain(value: Any) -> Any:
    """JSON-able copy of config values (arrays to lists, tuples to lists)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        array = np.asarray(value)
        if array.dtype == bool:
            return array.tolist()
        return array.astype(float).tolist() if array.dtype.kind == "f" else array.tolist()
    if isinstance(value, (np.generic,)):
        return value.item()
    return value


def _struct_dict(struct: Any) -> dict[str, Any]:
    return {f.name: _plain(getattr(struct, f.name)) for f in dataclasses.fields(struct)}


def flatten_actor_params(params: Any, keep_value_head: bool = False) -> dict[str, np.ndarray]:
    """Actor parameters flattened with "/" (the critic torso and value head are dropped,
    unless `keep_value_head`: the runner reports an actor-critic's value, the mcts search
    reads its value head)."""
    import jax

    tree = params["params"] if isinstance(params, Mapping) and "params" in params else params
    flat: dict[str, np.ndarray] = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        name = "/".join(str(getattr(p, "key", getattr(p, "name", p))) for p in path)
        if name.startswith(("critic_torso", "value_head")) and not keep_value_head:
            continue
        flat[name] = np.asarray(leaf, dtype=np.float32)
    return flat


def flatten_q_critics(critic_params: Any) -> tuple[dict[str, np.ndarray], int]:
    """The stacked critics of a `CriticEnsemble` (agents.common.networks; leading axis: the
    critic) as one weight set per critic, "q_critics/<i>/<name>", and their count."""
    import jax

    tree = critic_params["params"] if "params" in critic_params else critic_params
    flat: dict[str, np.ndarray] = {}
    counts = set()
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree["critics"]):
        name = "/".join(str(getattr(p, "key", getattr(p, "name", p))) for p in path)
        stacked = np.asarray(leaf, dtype=np.float32)
        counts.add(stacked.shape[0])
        for i, one in enumerate(stacked):
            flat[f"q_critics/{i}/{name}"] = one
    if len(counts) != 1:
        raise ExportError("the critics' parameters are not stacked on one leading axis")
    return flat, counts.pop()


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("jaxtrade", "jax", "flax", "numpy", "polars"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def _feature_section(market: Any, spec: Any, normalizer: Any, regimes: Any) -> dict[str, Any]:
    extra = dict(getattr(market.meta, "extra", {}) or {})
    spec = spec if spec is not None else extra.get("feature_spec", extra.get("spec"))
    normalizer = normalizer if normalizer is not None else extra.get("normalizer")
    if normalizer is None and "normalizer" in extra:  # built with normalization="none"
        count = len(market.meta.feature_names)
        normalizer = {
            "method": "none",
            "clip": None,
            "feature_names": list(market.meta.feature_names),
            "center": [0.0] * count,
            "scale": [1.0] * count,
        }
    regimes = regimes if regimes is not None else extra.get("regimes", extra.get("regime_model"))
    if spec is None or normalizer is None:
        raise ExportError(
            "the market carries no feature spec / normalization statistics "
            "(build it with jaxtrade.market.build, or pass feature_spec= and normalizer=)"
        )
    spec = spec.to_dict() if hasattr(spec, "to_dict") else dict(spec)
    normalizer = normalizer.to_dict() if hasattr(normalizer, "to_dict") else dict(normalizer)
    regimes = regimes.to_dict() if hasattr(regimes, "to_dict") else regimes
    names = list(market.meta.feature_names)
    if list(normalizer.get("feature_names", names)) != names:
        raise ExportError("the normalizer's feature names differ from the market's features")
    regime_columns = [n for n in names if n.startswith("regime_")]
    stamps = np.asarray(market.meta.timestamps).astype("datetime64[us]").astype(np.int64)
    steps = np.diff(stamps)
    steps = steps[steps > 0]
    return {
        "spec": spec,
        # `timeframe` entries: a coarse bar closes for the fine bar t once t + this reaches its
        # close (jaxtrade.features.timeframe.bar_spacing; one day for a single bar, as there).
        "bar_spacing_seconds": float(steps.min()) / 1e6 if steps.size else 86_400.0,
        "columns": names,
        "normalizer": normalizer,
        "regimes": regimes,
        "regime_columns_in_features": len(regime_columns) if regimes else 0,
    }


def _monitor_section(market: Any, monitor: Mapping[str, Any] | None) -> dict[str, Any]:
    """What the runner's drift and degradation alerts compare against: the training split's
    close-to-close log returns as deciles and shares, plus the given thresholds."""
    section = _plain(dict(monitor or {}))
    start, end = market.split_bounds("train")
    close = np.asarray(market.close, dtype=np.float64)[start:end, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        returns = np.diff(np.log(close))
    try:
        section["returns"] = live_monitor.reference_bins(returns)
    except ValueError:  # too few training bars to say what is usual
        pass
    # The policy's normalized inputs on the training split (every symbol's valid bars).
    features = np.asarray(market.features, dtype=np.float64)[start:end]
    valid = np.asarray(market.valid, dtype=bool)[start:end]
    rows = features[valid]
    if rows.shape[0] >= 50:
        section["features"] = live_monitor.reference_feature_bins(
            rows, list(market.meta.feature_names))
    return section


def _check_network(net: Mapping[str, Any]) -> None:
    if net.get("torso") not in live_network.TORSOS:
        raise ExportError(f"network torso {net.get('torso')!r} cannot be exported yet")
    if net.get("activation", "tanh") not in live_network.ACTIVATIONS:
        raise ExportError(f"activation {net.get('activation')!r} cannot be exported yet")
    if net.get("observe") and not net.get("observe_columns"):
        # The runner applies observe_columns; names alone would be a selection it ignores.
        raise ExportError(f"network.observe={net['observe']} was not resolved to "
                          "observe_columns (export a run's resolved agent config)")


def _action_section(env: Any, env_params: Any, net: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest's action map of `env` (its action mode) for a network described by
    `net` (its continuous squash)."""
    if env.action_mode == "discrete":
        return {"mode": "discrete", "discrete_levels": list(env.discrete_levels)}
    space = env.action_space(env_params)
    return {
        "mode": "continuous",
        "low": np.broadcast_to(np.asarray(space.low, np.float32), space.shape).tolist(),
        "high": np.broadcast_to(np.asarray(space.high, np.float32), space.shape).tolist(),
        "squash": net.get("continuous_squash", "clip"),
    }


ENSEMBLE_MEMBER_FAMILIES = ("actor_critic", "q", "mcts")


def _member_family(member_config: Any) -> str | None:
    """The bundle family of an agent config's export head (None: it has no bundle)."""
    from jaxtrade.errors import JaxTradeError

    try:
        return dict(member_config.export_head()).get("family", "actor_critic")
    except JaxTradeError:
        return None


def check_ensemble_members(config: Any) -> None:
    """ExportError, in one line, when an ensemble's member has no network the runner can
    combine (jaxtrade/live/ensemble.py runs actor-critic and Q-network members, and mcts
    members with either search: jaxtrade/live/mcts.py). Checked before the combination is
    fitted (that backtests every member over the training and validation bars)."""
    for name in config.members:
        family = _member_family(getattr(config, name))
        if family not in ENSEMBLE_MEMBER_FAMILIES:
            exportable = [n for n in config.agent_fields()
                          if _member_family(getattr(config, n)) in ENSEMBLE_MEMBER_FAMILIES]
            raise ExportError(
                f"ensemble member {name!r} ({family or 'no bundle'}) cannot be exported: the "
                "runner combines members with an actor, a Q network or an mcts search "
                f"({', '.join(exportable)}); `jaxtrade backtest` evaluates this ensemble, "
                f"and one trained without {name} exports")


def search_head(head: Mapping[str, Any], hparams: Any) -> dict[str, Any]:
    """An mcts export head with the checkpoint's search hyperparameters (numeric leaves of
    its state): gamma, and the stochastic search's PUCT constant."""
    out = {**head, "gamma": float(np.asarray(hparams.gamma))}
    if out.get("search") == "stochastic":
        out["pb_c_init"] = float(np.asarray(hparams.pb_c_init))
    return out


def _has_search_member(config: Any) -> bool:
    """Whether an ensemble config has an mcts member (its bundle then needs `reward`)."""
    return any(_member_family(getattr(config, n)) == "mcts" for n in config.members)


def ensemble_network(params: Any, config: Any, env: Any, env_params: Any
                     ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The manifest's `network` section and the flat weights of an ensemble (agents/ensemble.py).

    `params` are its policy parameters as the backtest uses them: {"members": {name: that
    member's policy params}, "combine": {rule, min_trade_probability, router, winner}} (the
    fitted router and winner set, jaxtrade.evaluate.ensemble.with_rule); `config` the
    ensemble's config. Each member is exported as it would be alone (its export_head, its
    network, the action map of its own action mode), its weights under "<member>/"; the
    combination keeps its rule, vote window and prior, router table [R, M], winner [M] and
    min_trade_probability (jaxtrade/live/ensemble.py runs it).
    """
    from agents.ensemble import COMBINE_RULES

    check_ensemble_members(config)
    members, flat = [], {}
    for name in config.members:
        member = getattr(config, name)
        head = _plain(dict(member.export_head()))
        member_params = params["members"][name]
        search = head.get("family") == "mcts"
        if search:  # SearchParams: the three heads, and the checkpoint's gamma (as alone)
            head = search_head(head, member_params.hparams)
            member_params = member_params.network
        net = _plain(member.network)
        _check_network(net)
        member_env = env.with_action_mode(getattr(type(member), "env_action_mode", "discrete"))
        members.append({"name": name, **head, "config": net,
                        "obs_shape": list(env.observation_shape),
                        "action": _action_section(member_env, env_params, net)})
        for key, value in flatten_actor_params(member_params, keep_value_head=search).items():
            flat[f"{name}/{key}"] = value
    combine = params["combine"]
    section = {
        "family": "ensemble",
        "members": members,
        "combine": {
            "rule": COMBINE_RULES[int(np.asarray(combine["rule"]))],
            "vote_window_bars": int(config.vote_window_bars),
            "vote_prior_bars": float(config.vote_prior_bars),
            "min_trade_probability": float(np.asarray(combine["min_trade_probability"])),
            "trade_prior_mean": float(np.asarray(combine["trade_prior_mean"])),
            "router": np.asarray(combine["router"], np.float32).astype(float).tolist(),
            "winner": np.asarray(combine["winner"], np.float32).astype(float).tolist(),
        },
        "obs_shape": list(env.observation_shape),
        "exported": "every member's actor (or Q network, or an mcts member's three heads "
                    "and search settings) and the combination state; the runner combines "
                    "them per bar (jaxtrade/live/ensemble.py)",
    }
    return section, flat


def missing_bars_rule(run_config: Mapping[str, Any] | None) -> str:
    """How a run's symbols met at a timestamp where some had no bar, for the runner to repeat.

    "drop": the timestamp is not on the training timeline (a CLI run's loader aligns symbols
    with `data.options.align="inner"` by default, keeping only timestamps every symbol has);
    "flat": the missing bar was a flat one at the previous close with zero volume (`align=
    "outer"`, forward-filled; before every symbol's first bar, timestamps are dropped too);
    "mask": the market was built from a frame with gaps (`jaxtrade.market.build` in Python:
    carried prices, a zero feature row, no fill), which a bundle without a run config gets.
    """
    if not run_config:
        return "mask"
    options = dict((run_config.get("data") or {}).get("options") or {})
    return "flat" if options.get("align", "inner") == "outer" else "drop"


def write_bundle(
    out: str | Path,
    *,
    params: Any,
    network_config: Any,
    env: Any,
    env_params: Any,
    feature_spec: Any = None,
    normalizer: Any = None,
    regimes: Any = None,
    run_config: Mapping[str, Any] | None = None,
    source: Mapping[str, Any] | None = None,
    bars: Mapping[str, Any] | None = None,
    head: Mapping[str, Any] | None = None,
    monitor: Mapping[str, Any] | None = None,
    onnx: bool = False,
    critic_params: Any = None,
) -> Path:
    """Write a bundle for `params` of an ActorCritic(network_config) trained on `env`, or of a
    Q network when `head` says so (the agent config's `export_head()`), or of an ensemble
    when `head` is {"family": "ensemble"} (`network_config`: the ensemble's config;
    `ensemble_network`).

    `bars` is how the training bars were read (`jaxtrade.data.describe_source`); the runner
    reads its sources the same way. None: canonical columns, ISO 8601 or epoch timestamps.
    `monitor`: thresholds for the runner's alerts (e.g. `backtest_max_drawdown`); the
    training split's return distribution is added to it (jaxtrade/live/monitor.py).
    `onnx`: also write policy.onnx (the `onnx` extra; jaxtrade/export_onnx.py).
    `critic_params`: a replay actor-critic's critics (its state's `critic_params` at the
    exported point, a `CriticEnsemble` tree): the bundle then holds them and the runner
    reports Q(s, pi(s)), the minimum over the critics at the actor's action (SAC learns its
    actor and targets on that minimum, TD3 its targets; DDPG has one critic).
    """
    if onnx:
        from jaxtrade.export_onnx import require_onnx

        require_onnx()  # before anything is written
    mcts = (head or {}).get("family") == "mcts"
    ensemble = (head or {}).get("family") == "ensemble"
    # The search's accounting (standalone, or an ensemble's mcts member) needs the reward.
    searches = mcts or (ensemble and _has_search_member(network_config))
    if searches and (float(env_params.reward.w_dsr) != 0
                     or float(env_params.reward.w_ddr) != 0):
        raise ExportError("an mcts bundle cannot carry reward.w_dsr / reward.w_ddr: the "
                          "runner's search does not track the differential Sharpe moments")
    if mcts:  # SearchParams: the network, and the hyperparameters of the checkpoint
        head = search_head(head, params.hparams)
        params = params.network
    market = env_params.market
    symbols = [str(s) for s in market.meta.symbols]
    if len(symbols) != market.num_assets:
        raise ExportError(f"the market names {len(symbols)} symbols for its "
                          f"{market.num_assets} assets")
    if ensemble:
        if onnx:
            raise ExportError("an ensemble bundle has no ONNX graph: its runner combines the "
                              "members in numpy (use format=numpy)")
        network, flat = ensemble_network(params, network_config, env, env_params)
        net = {}
    else:
        net = _plain(network_config)
        _check_network(net)
    # The critic goes along (a recurrent one with its own torso too: the runner carries its
    # state beside the actor's).
    keep_value = mcts or (head or {}).get("family", "actor_critic") == "actor_critic"
    q_critic, critic_flat = None, {}
    if critic_params is not None:
        if (head or {}).get("family", "actor_critic") != "actor_critic" or mcts or ensemble:
            raise ExportError("critic_params= belong to a replay actor-critic (SAC, TD3, DDPG)")
        if net.get("torso") in ("gru", "lstm"):
            raise ExportError("Q critics are exported with feed-forward torsos only")
        critic_flat, count = flatten_q_critics(critic_params)
        q_critic = {"num_critics": count, "reduce": "min",
                    "takes_action": env.action_mode == "continuous",
                    "reports": "min over the critics of Q(s, a) at the action the exported "
                               "actor takes (the unit action tanh(mean), or the argmax)"}
    features = _feature_section(market, feature_spec, normalizer, regimes)
    action = _action_section(env, env_params, net)
    stamps = np.asarray(market.meta.timestamps).astype("datetime64[us]").astype(np.int64)
    gaps = np.diff(stamps) / 1e6
    interval = float(np.median(gaps)) if gaps.size else 0.0
    # Longer than any pause seen in training (weekends, holidays) is worth a log line.
    gap_threshold = max(float(gaps.max()), 3.0 * interval) if gaps.size else 0.0
    manifest = {
        "format_version": FORMAT_VERSION,
        "kind": "jaxtrade-policy-bundle",
        "created_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        # One symbol: runner.py / Runner; several: MultiAssetRunner (jaxtrade/live/multi.py).
        "symbol": symbols[0] if len(symbols) == 1 else None,
        "symbols": symbols,
        # Several symbols: what the runner does at a timestamp where some have no bar, as the
        # run's data loading did (`missing_bars_rule`).
        "missing_bars": missing_bars_rule(run_config) if len(symbols) > 1 else None,
        "bars_per_year": float(market.meta.bars_per_year),
        "bar_interval_seconds": interval,
        "gap_threshold_seconds": gap_threshold,
        "bars": _plain(dict(bars)) if bars is not None else default_bars_spec(),
        "features": features,
        "market": {"atr_window": 14, "volatility_window": 20},
        "observation": {
            "window_bars": int(env.window_bars),
            "layout": env.obs_layout,
            "include_portfolio": bool(env.include_portfolio),
            "portfolio": [
                "weight",
                "unrealized_pnl",
                "log1p_bars_in_position",
                "drawdown",
                "cash_fraction",
            ]
            if env.include_portfolio
            else [],
            "shape": list(env.observation_shape),
            "dtype": "float32",
        },
        "action": action,
        "trading": _struct_dict(env_params.trading),
        "costs": _struct_dict(env_params.costs),
        "risk": _struct_dict(env_params.risk),
        **({"reward": _struct_dict(env_params.reward)} if searches else {}),
        "network": network if ensemble else {
            "family": "actor_critic",
            **_plain(dict(head or {})),
            "config": net,
            "obs_shape": list(env.observation_shape),
            **({"q_critic": q_critic} if q_critic else {}),
            "exported": "actor (torso + policy head)" + (
                f" and its {q_critic['num_critics']} Q critic(s)" if q_critic else
                " and, where the agent has one, the critic's state-value head")
            if (head or {}).get("family", "actor_critic") == "actor_critic"
            else "torso, policy, value and next-bar model heads; the runner searches "
            "(jaxtrade/live/mcts.py)" if mcts
            else "Q network (torso + value head); greedy action = argmax",
        },
        "weights": {},
        "monitor": _monitor_section(market, monitor),
        "versions": _versions(),
        "source": _plain(dict(source or {})),
        "run_config": _plain(dict(run_config or {})),
    }
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"out={str(out)!r} exists and is not empty")
    # Build in a sibling temp dir and rename: a failed export leaves nothing behind.
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out.parent))
    try:
        if not ensemble:
            flat = {**flatten_actor_params(params, keep_value_head=keep_value), **critic_flat}
        write_safetensors(staging / WEIGHTS, flat, {"format": "jaxtrade-actor"})
        manifest["weights"] = {WEIGHTS: sha256_file(staging / WEIGHTS)}
        files = [MANIFEST, WEIGHTS]
        if onnx:
            from jaxtrade.export_onnx import write_policy_onnx

            manifest["onnx"] = write_policy_onnx(staging, manifest, flat)
            files.append(manifest["onnx"]["file"])
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, allow_nan=False))
        write_checksums(staging, files)
        package = Path(live_network.__file__).resolve().parent
        shutil.copytree(
            package, staging / PACKAGE, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
        (staging / "runner.py").write_text(_RUNNER)
        try:  # the runner must accept what was written before the bundle is published
            from jaxtrade.live.engine import Runner
            from jaxtrade.live.multi import MultiAssetRunner

            # One real bar through the features: the column count must match the statistics.
            def first_bar(a: int) -> Bar:
                prices = [float(np.asarray(getattr(market, k))[0, a])
                          for k in ("open", "high", "low", "close")]
                return Bar(int(stamps[0]), *prices, 0.0)

            if len(symbols) == 1:
                Runner(load_bundle(staging), max_jump_seconds=0).process(first_bar(0),
                                                                         trade=False)
            else:
                MultiAssetRunner(load_bundle(staging)).step(
                    int(stamps[0]), {a: first_bar(a) for a in range(len(symbols))}, trade=False
                )
            if onnx:
                from jaxtrade.export_onnx import check_against_numpy

                check_against_numpy(staging)
        except BundleError as err:
            raise ExportError(f"the exported bundle does not load in the runner: {err}") from None
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out

