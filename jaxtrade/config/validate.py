"""Validation of a composed run configuration, before anything is compiled.

Every problem raises `ConfigError` with one line naming the key, the value and what is
allowed; an unknown key gets the closest valid key suggested (difflib). Sections owned by
other packages are checked against their own schemas: `agent` against the agent's config
dataclass (`agents.AGENTS`), `network` against the agent's network dataclass, `env` against
the env's default overrides. When such a package is not importable its section is passed
through unchecked and the package itself rejects bad values when it is built.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from typing import Any

from jaxtrade.config.schema import DataConfig, LoggerConfig, SweepConfig, TrainConfig
from jaxtrade.errors import ConfigError

# Keys the experiment layer sets on the agent config itself (from env/train sections).
AGENT_KEYS_SET_ELSEWHERE = {
    "num_envs": "env.num_envs",
    "total_steps": "train.total_steps",
    "total_timesteps": "train.total_steps",
    "network": "network.<key>",
}

# Data sources read from data.path.
FILE_SOURCES = ("csv", "parquet")

TOP_LEVEL_KEYS = (
    "seed", "run_dir", "resume", "compile_cache", "compile_cache_dir", "compile_cache_max_gb",
    "data", "features", "env", "agent", "network", "train", "logger", "sweep",
    # Recorded by `jaxtrade train resume=fork` (experiments.common.compose_fork), not a setting.
    "forked_from",
)


def suggest(key: str, valid: typing.Iterable[str]) -> str:
    """' (did you mean X?)' for the closest valid key, or '' when nothing is close."""
    match = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f"; did you mean '{match[0]}'?" if match else ""


def unknown_key(path: str, value: Any, valid: typing.Iterable[str]) -> ConfigError:
    valid = sorted(valid)
    head, _, leaf = path.rpartition(".")
    prefix = head + "." if head else ""
    hint = suggest(leaf, valid)
    if hint:
        hint = hint.replace("'", "'" + prefix, 1)
    return ConfigError(
        f"unknown key '{path}' (value {_show(value)}){hint} "
        f"valid keys{' of ' + head if head else ''}: {', '.join(valid)}"
    )


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _bad(path: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{path}={_show(value)} is not allowed: {allowed}")


# ---------------------------------------------------------------------------- types


def coerce(value: Any, tp: Any, path: str) -> Any:
    """`value` converted to type `tp`, or ConfigError saying what type is expected."""
    if tp is Any or tp is typing.Any or tp is object:
        return value
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise _bad(path, value, f"expected {_type_name(tp)}")
        # Types we model first; an array annotation (`jax.Array | float`) last.
        ordered = sorted((a for a in args if a is not type(None)), key=lambda a: not _modelled(a))
        for arg in ordered:
            try:
                return coerce(value, arg, path)
            except ConfigError:
                pass
        named = [a for a in args if _modelled(a) or a is type(None)] or list(args)
        raise _bad(path, value, f"expected {' or '.join(_type_name(a) for a in named)}")
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise _bad(path, value, f"choose one of {', '.join(map(str, choices))}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise _bad(path, value, f"expected a mapping of {tp.__name__} keys")
        return validate_dataclass(value, tp, path)
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _bad(path, value, f"expected a list ({_type_name(tp)})")
        args = typing.get_args(tp)
        elem = args[0] if args else Any
        return [coerce(v, elem, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict or origin is Mapping:
        if not isinstance(value, Mapping):
            raise _bad(path, value, "expected a mapping")
        args = typing.get_args(tp)
        elem = args[1] if len(args) == 2 else Any
        return {str(k): coerce(v, elem, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _bad(path, value, "expected true or false")
    if tp is int:
        if isinstance(value, bool):
            raise _bad(path, value, "expected an integer")
        if isinstance(value, int):
            return value
        number = _as_number(value)
        if number is not None and math.isfinite(number) and float(number).is_integer():
            return int(number)
        raise _bad(path, value, "expected an integer")
    if tp is float:
        if isinstance(value, bool):
            raise _bad(path, value, "expected a number")
        number = _as_number(value)
        if number is None:
            raise _bad(path, value, "expected a number")
        return float(number)
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _bad(path, value, "expected a string")
    # A type we do not model (an array annotation in hparams / env params): numbers pass.
    if _numeric_tree(value):
        return value
    raise _bad(path, value, f"expected a number ({_type_name(tp)})")


def _modelled(tp: Any) -> bool:
    return tp in (bool, int, float, str, list, tuple, dict) or typing.get_origin(tp) in (
        list, tuple, dict, typing.Literal) or dataclasses.is_dataclass(tp)


def _numeric_tree(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_numeric_tree(v) for v in value)
    return isinstance(value, (int, float, bool))


def _as_number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def check_allowed(path: str, value: Any, allowed: Mapping[str, Any]) -> None:
    """Bounds (`ge`, `gt`, `le`, `lt`) and `choices` from a field's metadata."""
    if value is None:
        return
    if "choices" in allowed and value not in allowed["choices"]:
        raise _bad(path, value, f"choose one of {', '.join(map(str, allowed['choices']))}")
    bounds = []
    if "gt" in allowed:
        bounds.append(("gt", allowed["gt"], value > allowed["gt"], "> "))
    if "ge" in allowed:
        bounds.append(("ge", allowed["ge"], value >= allowed["ge"], ">= "))
    if "lt" in allowed:
        bounds.append(("lt", allowed["lt"], value < allowed["lt"], "< "))
    if "le" in allowed:
        bounds.append(("le", allowed["le"], value <= allowed["le"], "<= "))
    if any(not ok for _, _, ok, _ in bounds):
        rule = " and ".join(sym + str(bound) for _, bound, _, sym in bounds)
        raise _bad(path, value, f"must be {rule}")


def validate_dataclass(
    values: Mapping[str, Any], cls: type, path: str, skip: typing.Iterable[str] = ()
) -> dict[str, Any]:
    """Check `values` against dataclass `cls`; returns the values coerced to its types."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # unresolvable annotations in a foreign dataclass: check names only
        hints = {}
    skip = set(skip)
    out: dict[str, Any] = {}
    for key, value in values.items():
        key_path = f"{path}.{key}" if path else str(key)
        if key in skip:
            out[key] = value
            continue
        if key not in fields:
            raise unknown_key(key_path, value, [k for k in fields if k not in skip])
        coerced = coerce(value, hints.get(key, Any), key_path)
        check_allowed(key_path, coerced, fields[key].metadata)
        out[key] = coerced
    return out


# ------------------------------------------------------------------- foreign sections


def agent_config_class(name: str) -> type | None:
    """The config dataclass of agent `name` from `agents.AGENTS`, or None if unavailable."""
    try:
        import agents
    except Exception:
        return None
    registry = agents.AGENTS
    if name not in registry:
        raise ConfigError(
            f"agent.name={name!r} is not allowed: choose one of {', '.join(sorted(registry))}"
            + suggest(name, registry)
        )
    return registry[name].config_class


def network_config_class(agent_cls: type | None) -> type | None:
    if agent_cls is None:
        return None
    for f in dataclasses.fields(agent_cls):
        if f.name == "network":
            try:
                tp = typing.get_type_hints(agent_cls).get("network")
            except Exception:
                tp = None
            return tp if dataclasses.is_dataclass(tp) else None
    return None


def env_schema() -> tuple[dict[str, Any], dict[str, type]] | None:
    """(static settings with defaults, param groups with their dataclass) of the trading env."""
    try:
        import inspect

        from envs.trading import EnvParams, TradingEnv
    except Exception:
        return None
    static = {
        name: p.default for name, p in inspect.signature(TradingEnv.__init__).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    hints = typing.get_type_hints(EnvParams)
    groups = {f.name: hints[f.name] for f in dataclasses.fields(EnvParams)
              if dataclasses.is_dataclass(hints.get(f.name)) and f.name != "market"}
    return static, groups


# Env keys the experiment layer owns (the env package never sees name / num_envs; split and
# eval_mode are set per use: training on the train split, backtests on the others).
ENV_OWN_KEYS = ("name", "num_envs")
ENV_PARAM_KEYS = {"episode_bars": int}


# --------------------------------------------------------------------------- entry


def validate_run(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a composed (resolved, plain) run config; returns it with values coerced."""
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        if key not in TOP_LEVEL_KEYS:
            raise unknown_key(str(key), value, TOP_LEVEL_KEYS)
        out[key] = value
    out["seed"] = coerce(out.get("seed", 0), int, "seed")
    check_allowed("seed", out["seed"], {"ge": 0})
    out["resume"] = coerce(out.get("resume", False), bool, "resume")
    out["compile_cache"] = coerce(out.get("compile_cache"), bool | None, "compile_cache")
    for key in ("run_dir", "compile_cache_dir"):
        out[key] = coerce(out.get(key), str | None, key)
    out["compile_cache_max_gb"] = coerce(out.get("compile_cache_max_gb", 4.0), float,
                                         "compile_cache_max_gb")
    check_allowed("compile_cache_max_gb", out["compile_cache_max_gb"], {"gt": 0})
    out["data"] = validate_dataclass(out.get("data") or {}, DataConfig, "data")
    out["train"] = validate_dataclass(out.get("train") or {}, TrainConfig, "train")
    _check_devices(out["train"])
    out["logger"] = validate_dataclass(out.get("logger") or {}, LoggerConfig, "logger")
    out["sweep"] = validate_dataclass(out.get("sweep") or {}, SweepConfig, "sweep")
    out["env"] = _validate_env(out.get("env") or {})
    out["agent"], out["network"] = _validate_agent(
        out.get("agent") or {}, out.get("network") or {}
    )
    if out.get("forked_from") is not None:
        out["forked_from"] = _validate_fork_record(out["forked_from"])
    _cross_field(out)
    return out


def _validate_fork_record(record: Any) -> dict[str, Any]:
    """forked_from: {run_dir, update, data_fingerprint, changes} of a forked run."""
    if not isinstance(record, Mapping) or not isinstance(record.get("run_dir"), str) or not (
            isinstance(record.get("update"), int) and record["update"] >= 0):
        raise ConfigError(f"forked_from={record!r} is not allowed: a fork's record holds the "
                          "run_dir and update it started from (written by resume=fork)")
    return dict(record)


def _validate_env(env: Mapping[str, Any]) -> dict[str, Any]:
    env = dict(env)
    num_envs = env.get("num_envs", "auto")
    if num_envs != "auto":
        num_envs = coerce(num_envs, int, "env.num_envs")
        check_allowed("env.num_envs", num_envs, {"ge": 1})
    env["num_envs"] = num_envs
    env["name"] = coerce(env.get("name", "trading"), str, "env.name")
    schema = env_schema()
    if schema is None:
        return env
    static, groups = schema
    valid = [*ENV_OWN_KEYS, *static, *groups, *ENV_PARAM_KEYS]
    for key, value in env.items():
        path = f"env.{key}"
        if key in ENV_OWN_KEYS:
            continue
        if key in static:
            default = static[key]
            if isinstance(default, bool):
                env[key] = coerce(value, bool, path)
            elif isinstance(default, int):
                env[key] = coerce(value, int, path)
                check_allowed(path, env[key], {"ge": 1})
            elif isinstance(default, float):
                env[key] = coerce(value, float, path)
            elif isinstance(default, tuple):
                env[key] = coerce(value, list[float], path)
            elif isinstance(default, str):
                env[key] = coerce(value, str, path)
        elif key in groups:
            env[key] = validate_dataclass(value or {}, groups[key], path)
        elif key in ENV_PARAM_KEYS:
            env[key] = coerce(value, ENV_PARAM_KEYS[key], path)
            check_allowed(path, env[key], {"ge": 1})
        else:
            raise unknown_key(path, value, valid)
    return env


def _validate_agent(
    agent: Mapping[str, Any], network: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    agent = dict(agent)
    name = coerce(agent.get("name", "ppo"), str, "agent.name")
    agent["name"] = name
    cls = agent_config_class(name)
    if cls is None:
        return agent, dict(network)
    for key, where in AGENT_KEYS_SET_ELSEWHERE.items():
        if key in agent:
            raise ConfigError(f"agent.{key}={_show(agent[key])} is not allowed: set {where}")
    checked = validate_dataclass(
        {k: v for k, v in agent.items() if k != "name"}, cls, "agent",
        skip=AGENT_KEYS_SET_ELSEWHERE,
    )
    net_cls = network_config_class(cls)
    net = validate_dataclass(network, net_cls, "network") if net_cls else dict(network)
    # The dataclasses' own checks (choices such as network.torso) run on construction.
    from_dict = getattr(cls, "from_dict", None)
    if from_dict is not None:
        from_dict({**checked, "network": net})
    return {"name": name, **checked}, net


def _check_devices(train: dict[str, Any]) -> None:
    """train.devices: "auto" or a device count >= 1 (checked against the machine at start)."""
    devices = train.get("devices", "auto")
    if devices != "auto" and (not isinstance(devices, int) or devices < 1):
        raise _bad("train.devices", devices, "auto or a device count >= 1")


def _cross_field(cfg: dict[str, Any]) -> None:
    data = cfg["data"]
    total = data["train_frac"] + data["validation_frac"]
    if total >= 1.0:
        raise ConfigError(
            f"data.train_frac + data.validation_frac = {total:g} is not allowed: must be < 1 "
            "so a test split remains"
        )
    if data["source"] in FILE_SOURCES and not data.get("path"):
        raise ConfigError(f"data.path=None is not allowed with data.source={data['source']}: "
                          "give the file, e.g. data.path=bars.csv")
    if data.get("adjust") and data["source"] not in FILE_SOURCES:
        raise ConfigError(f"data.adjust=true is not allowed with data={data['source']}: it "
                          "scales a file's prices to its Adj Close column (data=csv or parquet)")
    if data["source"] not in FILE_SOURCES and data.get("path"):
        # Training on the file while the run records the other source would mislabel it.
        kind = "parquet" if str(data["path"]).lower().endswith((".parquet", ".pq")) else "csv"
        what = "the generator" if data["source"] == "synthetic" else "an embedded dataset"
        raise ConfigError(f"data.path={str(data['path'])!r} is not allowed with "
                          f"data={data['source']} ({what}): add data={kind} to train on the file")
    _check_explicit_splits(data)
    _check_sizes(cfg)
    num_envs = cfg["env"]["num_envs"]
    agent_cls = agent_config_class(cfg["agent"].get("name", "ppo"))
    if isinstance(num_envs, int) and agent_cls is not None:
        # The agent's own size rules (batch divisibility, buffer rows, ...), before compiling.
        agent_cls.from_dict(dict(cfg["agent"])).check_num_envs(num_envs)
    _check_sweep(cfg)


def _check_explicit_splits(data: dict[str, Any]) -> None:
    """data.splits: three ordered `[start, end)` ranges, train and test non-empty; the
    fractions and the embargo it replaces left at their defaults (set, they would be
    ignored). Ranges past the last bar are refused when the bars are loaded."""
    ranges = data.get("splits")
    if not ranges:
        return
    names = ("train", "validation", "test")
    shown = f"data.splits={_show(ranges)} is not allowed"
    if not isinstance(ranges, Mapping) or sorted(ranges) != sorted(names) or any(
            not isinstance(ranges[n], (list, tuple)) or len(ranges[n]) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in ranges[n])
            for n in names):
        raise ConfigError(f"{shown}: give {{train: [start, end], validation: [start, end], "
                          "test: [start, end]} in whole bars (an empty validation: start == "
                          "end)")
    (t0, t1), (v0, v1), (s0, s1) = (ranges[n] for n in names)
    if not (0 <= t0 < t1 and v0 <= v1 and s0 < s1 and t1 <= s0
            and (v0 == v1 or (t1 <= v0 and v1 <= s0))):
        raise ConfigError(f"{shown}: the ranges must be ordered train, validation, test "
                          "without overlapping, train and test non-empty")
    defaults = DataConfig()
    changed = [k for k in ("train_frac", "validation_frac", "embargo_bars")
               if data[k] != getattr(defaults, k)]
    if changed:
        key = changed[0]
        raise ConfigError(f"data.{key}={data[key]!r} is not allowed with data.splits: the "
                          "explicit ranges replace the fractions and the embargo (leave their "
                          f"gaps in the ranges and set data.{key}={getattr(defaults, key)!r})")
    data["splits"] = {n: [int(a), int(b)] for n, (a, b) in zip(names, (
        (t0, t1), (v0, v1), (s0, s1)), strict=True)}


# One point's env batch (a lower bound of its memory, see _check_sizes) above this fits no
# accelerator and no ordinary host: such a size is a typo, refused before JAX allocates it.
MAX_ENV_BATCH_BYTES = 2**40
# Updates are counted in int32 on the device (JAX's default integers).
MAX_UPDATES = 2**31 - 1
# The fewest envs `env.num_envs=auto` picks (jaxtrade/config/auto.py, CPU_RANGE).
AUTO_MIN_ENVS = 8


def _check_sizes(cfg: dict[str, Any]) -> None:
    """Sizes no run can have, refused in one line before anything is built.

    Memory: one point's env batch holds at least its observations for a rollout plus the
    current one, num_envs * (rollout_len + 1) * window_bars * feature columns float32 values
    (portfolio state, actions, network activations and the replay buffer come on top).
    Length: train.total_steps in updates of num_envs * rollout_len env steps must fit the
    device's int32 update counter (and TD3's minibatch-step counter); with env.num_envs=auto,
    for the fewest envs auto picks. The env steps of one update must fit int32 too.
    What this machine can hold is checked once the env is built (experiments/common.py,
    check_memory, from jaxtrade/config/memory.py's estimate)."""
    num_envs = cfg["env"]["num_envs"]
    rollout_len = int(cfg["agent"].get("rollout_len", 1) or 1)
    total_steps = int(cfg["train"]["total_steps"])
    if isinstance(num_envs, int):
        window = int(cfg["env"].get("window_bars", 1) or 1)
        values = num_envs * (rollout_len + 1) * window * _feature_columns(cfg.get("features"))
        if 4 * values > MAX_ENV_BATCH_BYTES:
            raise ConfigError(
                f"env.num_envs={num_envs} is not allowed: its envs need at least "
                f"{_bytes(4 * values)} ({num_envs} envs x {rollout_len + 1} observations of "
                f"{window} bars x {values // (num_envs * (rollout_len + 1) * window)} features,"
                f" float32), above the {_bytes(MAX_ENV_BATCH_BYTES)} one point's envs may hold; "
                "lower it or use env.num_envs=auto")
        if total_steps < num_envs * rollout_len:
            raise ConfigError(
                f"train.total_steps={total_steps} is not allowed: less than one update "
                f"(env.num_envs * agent.rollout_len = {num_envs}*{rollout_len} = "
                f"{num_envs * rollout_len} env steps)")
        if num_envs * rollout_len > MAX_UPDATES:
            raise ConfigError(
                f"env.num_envs={num_envs} is not allowed: env.num_envs * agent.rollout_len = "
                f"{num_envs}*{rollout_len} = {num_envs * rollout_len} env steps per update do "
                f"not fit the device's int32 step arithmetic (at most {MAX_UPDATES}); lower it")
    envs = num_envs if isinstance(num_envs, int) else AUTO_MIN_ENVS
    updates = total_steps // (envs * rollout_len)
    if updates > MAX_UPDATES:
        how = (f"env.num_envs={num_envs}" if isinstance(num_envs, int) else
               f"env.num_envs=auto, which may pick {AUTO_MIN_ENVS} envs")
        raise ConfigError(
            f"train.total_steps={total_steps} is not allowed: {updates:.3g} updates of "
            f"{envs * rollout_len} env steps ({how}, agent.rollout_len={rollout_len}) overflow "
            f"the device's update counter (at most {MAX_UPDATES}); lower it or raise "
            "env.num_envs")
    gradient_steps = int(cfg["agent"].get("gradient_steps", 1) or 1)
    if _counts_gradient_steps(cfg["agent"]) and updates * gradient_steps > MAX_UPDATES:
        raise ConfigError(
            f"train.total_steps={total_steps} is not allowed: {updates:.3g} updates x "
            f"agent.gradient_steps={gradient_steps} overflow {cfg['agent']['name']}'s int32 "
            f"counter of minibatch steps (at most {MAX_UPDATES}); lower it, "
            "agent.gradient_steps or raise env.num_envs")


def _counts_gradient_steps(agent: Mapping[str, Any]) -> bool:
    """Whether the agent counts its minibatch steps on the device (TD3 and DDPG: the clock of
    the delayed actor, `policy_delay`)."""
    cls = agent_config_class(str(agent.get("name", "ppo")))
    return cls is not None and "policy_delay" in {f.name for f in dataclasses.fields(cls)}


def _feature_columns(features: Any) -> int:
    """Feature columns per bar of one asset (1 when the spec cannot be read here; its own
    error comes when the features are built)."""
    from jaxtrade.errors import JaxTradeError
    from jaxtrade.features.spec import FeatureSpec, default_spec

    try:
        spec = FeatureSpec.from_dict(features) if features else default_spec()
        return max(1, len(spec.columns(multi_asset=False)))
    except (JaxTradeError, TypeError, ValueError, KeyError):
        return 1


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} TB"


def check_batch_divisible(num_envs: int, rollout_len: int, rollout_key: str,
                          num_minibatches: int) -> None:
    batch = num_envs * rollout_len
    if batch % num_minibatches:
        raise ConfigError(
            f"agent.num_minibatches={num_minibatches} is not allowed: env.num_envs * "
            f"agent.{rollout_key} = {num_envs}*{rollout_len} = {batch} must be divisible by it"
        )


def check_window(window_bars: int, train_bars: int, key: str = "env.window_bars") -> None:
    """The observation window must fit (with room for an episode) in the training split."""
    if window_bars >= train_bars:
        raise ConfigError(
            f"{key}={window_bars} is not allowed: must be shorter than the training split "
            f"({train_bars} bars); use a smaller window or more data / data.train_frac"
        )


# Fewest bars in a validation or test split: below this a Sharpe ratio or a rank among
# baselines is noise (a 5-bar split once reported "validation Sharpe 14.02, PSR 0.995").
MIN_EVAL_BARS = 30


def check_eval_splits(splits: Any, num_bars: int, data: Mapping[str, Any]) -> None:
    """Validation (unless data.validation_frac=0 leaves none) and test splits of at least
    MIN_EVAL_BARS bars, else one ConfigError with the sizes and what sets them."""
    sizes = {name: end - start for name in ("validation", "test")
             for start, end in [splits.bounds(name)]}
    short = [n for n, size in sizes.items()
             if size < MIN_EVAL_BARS and not (n == "validation" and size == 0)]
    if short and data.get("splits"):
        raise ConfigError(
            f"the {' and '.join(short)} split(s) of data.splits are too short to judge a "
            f"policy: validation {sizes['validation']} bars, test {sizes['test']}; each needs "
            f"at least {MIN_EVAL_BARS}")
    if short:
        raise ConfigError(
            f"the {' and '.join(short)} split(s) are too short to judge a policy: validation "
            f"{sizes['validation']} bars, test {sizes['test']} of {num_bars} (data.train_frac="
            f"{data['train_frac']:g}, data.validation_frac={data['validation_frac']:g}, "
            f"data.embargo_bars={data['embargo_bars']}); each needs at least {MIN_EVAL_BARS}: "
            "use more bars or larger fractions")


def _check_sweep(cfg: dict[str, Any]) -> None:
    sweep = cfg["sweep"]
    if sweep["method"] == "none":
        return
    hparams = cfg["agent"].get("hparams")
    for i, param in enumerate(sweep["params"]):
        where = f"sweep.params[{i}]"
        key = param.get("key", "")
        parts = key.split(".")
        member = len(parts) == 4 and parts[0] == "agent" and parts[2] == "hparams"
        if not member and (len(parts) != 3 or parts[:2] != ["agent", "hparams"]):
            raise ConfigError(f"{where}.key={key!r} is not allowed: vmapped sweeps take numeric "
                              "agent.hparams.<name> keys (agent.<member>.hparams.<name> for "
                              "the ensemble); sweep shape-changing keys with comma lists on "
                              "the command line (multirun)")
        known = (cfg["agent"].get(parts[1]) or {}).get("hparams") if member else hparams
        if isinstance(known, Mapping) and parts[-1] not in known:
            raise unknown_key(key, param, [f"{k}" for k in known])
        if sweep["method"] == "grid" and not param.get("values"):
            raise ConfigError(f"{where}.values={param.get('values')!r} is not allowed: "
                              "a grid sweep needs a list of values")
        if sweep["method"] == "random" and not param.get("values"):
            low, high = param.get("low"), param.get("high")
            if low is None or high is None or not low < high:
                raise ConfigError(f"{where} low={low!r}, high={high!r} is not allowed: "
                                  "random sampling needs low < high")
            if param.get("log") and low <= 0:
                raise ConfigError(f"{where}.low={low!r} is not allowed: must be > 0 with log=true")
