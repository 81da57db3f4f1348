"""Wiring shared by the experiment entry points: config -> data -> market -> env -> agent.

Every step raises a jaxtrade error (one CLI line) for user mistakes, before anything is
compiled: the config is validated when composed, the data when loaded, the window against
the training split here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from jaxtrade.config import check_eval_splits, check_window, compose_run
from jaxtrade.config.auto import auto_num_envs
from jaxtrade.config.compose import compose_raw
from jaxtrade.errors import ConfigError
from jaxtrade.logging import scrub, to_jsonable

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("jaxtrade", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "polars",
            "hydra-core", "wandb", "numpy")


def wants_help(argv: Sequence[str]) -> bool:
    return any(a in ("-h", "--help") for a in argv)


def split_flags(argv: Sequence[str]) -> list[str]:
    """Overrides only; a `--flag` the command does not define is a user error."""
    flags = [a for a in argv if a.startswith("--")]
    if flags:
        raise ConfigError(f"unknown option {flags[0]}; give settings as key=value overrides "
                          "(see --help)")
    return list(argv)


def chunk_update_interval(every_updates: int, updates_per_chunk: int) -> int:
    """Checkpoint interval rounded up to a whole number of chunks."""
    return max(1, math.ceil(every_updates / updates_per_chunk)) * updates_per_chunk


def override_keys(argv: Sequence[str]) -> set[str]:
    """The dotted keys of the `key=value` overrides in argv (`+key`, `~key` included)."""
    return {a.split("=", 1)[0].lstrip("+~") for a in argv if "=" in a and not a.startswith("-")}


# ------------------------------------------------------------------------ environment


def default_cache_dir() -> Path:
    """JAX's compilation cache inside jaxtrade's cache folder (see `paths.cache_dir`)."""
    from jaxtrade.paths import cache_dir

    return cache_dir() / "jax_cache"


def enable_compile_cache(cfg: Mapping[str, Any]) -> Path | None:
    """Turn on JAX's persistent compilation cache (on by default on every backend;
    `compile_cache=false` turns it off). Returns its folder, or None when off.

    On CPU too: a later run, backtest, export or walk-forward fold of the same shapes loads its
    programs instead of compiling them again (scripts/bench_compile_cache.py; BENCHMARKS.md,
    "The persistent compilation cache on CPU"). It was off on CPU for a while because XLA:CPU
    aborted now and then while loading an entry; those aborts were the process running out of
    memory maps (`vm.max_map_count`), which every kept program holds, loaded or compiled
    (measured at a lowered limit), not the cache: `jaxtrade.xla.module_jit` bounds them now.

    The cache is bounded (`compile_cache_max_gb`, least recently used entries go first) and,
    being bounded, every read and write holds a file lock. That lock is what makes the cache
    safe to share: without it JAX writes an entry in place, and another process (a second
    sweep job, a test worker) that reads the half-written file crashes in deserialization.
    """
    import jax

    if cfg.get("compile_cache") is False:  # None (older configs): the default, on
        return None

    path = Path(cfg.get("compile_cache_dir") or default_cache_dir()).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        _backfill_access_times(path)
        probe = path / f".write-check-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:  # a read-only home, a full disk: run, compiling everything
        print(f"warning: compilation cache off: cannot write {path} ({err.strerror}); set "
              "compile_cache_dir to a writable folder or compile_cache=false", file=sys.stderr)
        return None
    max_bytes = int(float(cfg.get("compile_cache_max_gb", 4.0)) * 2**30)
    if max_bytes <= 0:
        raise ConfigError("compile_cache_max_gb must be > 0 (turn the cache off with "
                          "compile_cache=false)")
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_compilation_cache_max_size", max_bytes)
    # Programs that took 0.5 s or more to compile. Keeping every program saved a smoke run
    # more (`jaxtrade backtest` 17.6 -> 13.0 s, against 17.4 -> 16.6 s), but each write of the
    # bounded cache reads every entry's access time under the lock: with thousands of small
    # entries the test suite ran at less than half its speed (BENCHMARKS.md).
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def _backfill_access_times(path: Path) -> None:
    """Give entries written without eviction (no `-atime` file) an access time of now.

    The bounded cache reads every entry's access time when it evicts; an entry without one
    (written by an unbounded cache) would make every later write fail.
    """
    stamp = time.time_ns().to_bytes(8, "little")
    for entry in path.glob("*-cache"):
        atime = entry.with_name(entry.name.removesuffix("-cache") + "-atime")
        if not atime.exists():
            atime.write_bytes(stamp)


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return found


def device_info(mesh: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The machine, and the device mesh the run's points are sharded over (when given:
    jaxtrade.sharding.PointMesh.describe, with devices, shape and axis names)."""
    import jax

    from jaxtrade import hugepages

    devices = jax.devices()
    info = {"platform": devices[0].platform, "device_kind": devices[0].device_kind,
            "device_count": len(devices), "local_device_count": jax.local_device_count(),
            "process_count": jax.process_count(), "host": platform.node(),
            "hugepage_malloc": hugepages.enabled()}
    if mesh is not None:
        info["mesh"] = dict(mesh)
    return info


def run_info(data_fingerprint: str | None = None,
             mesh: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What W&B and checkpoint metadata record about where and how a run was made."""
    return {"git_commit": git_commit(), "versions": versions(), "device": device_info(mesh),
            "data_fingerprint": data_fingerprint, "command": " ".join(sys.argv[:1] + [
                a for a in sys.argv[1:] if not any(s in a.lower() for s in ("key", "token"))])}


def resolve_run_dir(cfg: Mapping[str, Any], command: str = "train") -> Path:
    if cfg.get("run_dir"):
        return Path(cfg["run_dir"]).expanduser().resolve()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    data = Path(data_label(cfg["data"])).stem
    name = f"{cfg['agent'].get('name', 'agent')}-{data}-{stamp}"
    return (Path("runs") / (name if command == "train" else f"{command}-{name}")).resolve()


def write_config(run_dir: Path, cfg: Mapping[str, Any]) -> Path:
    """run_dir/config.yaml: the resolved config (nothing secret is ever in it)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "config.yaml"
    path.write_text(yaml.safe_dump(to_jsonable(scrub(dict(cfg))), sort_keys=False))
    return path


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"run_dir={str(run_dir)!r} is not allowed: no config.yaml there "
                          "(is it a training run directory?)")
    return yaml.safe_load(path.read_text())


# ------------------------------------------------------------------------------ data


def load_frame(data_cfg: Mapping[str, Any]) -> Any:
    """The bars of the data section; refused when `data.fingerprint` is set and they hash
    otherwise (a run's config.yaml records the bars it trained on)."""
    from jaxtrade.data import load_ohlcv
    from jaxtrade.errors import DataError

    source = data_cfg["source"]
    options = dict(data_cfg.get("options") or {})
    if data_cfg.get("columns"):
        options["columns"] = dict(data_cfg["columns"])
    if data_cfg.get("adjust"):
        options["adjust"] = True
    if source in ("csv", "parquet"):
        frame = load_ohlcv(Path(data_cfg["path"]).expanduser(), format=source, **options)
    else:
        frame = load_ohlcv(source, **options)
    expected = data_cfg.get("fingerprint")
    if expected and expected != (found := data_fingerprint(frame)):
        raise DataError(f"the bars changed since training: they hash to {found}, the run "
                        f"recorded data.fingerprint={expected}",
                        path=str(data_cfg["path"]) if source in ("csv", "parquet") else source)
    return frame


def data_label(data_cfg: Mapping[str, Any]) -> str:
    """What a run trained on, in words: the file name for file sources, else the source."""
    if data_cfg["source"] in ("csv", "parquet") and data_cfg.get("path"):
        return Path(str(data_cfg["path"])).name
    return str(data_cfg["source"])


def data_fingerprint(frame: Any) -> str:
    """sha256 (first 16 hex) over column names and values: same bars, same fingerprint."""
    digest = hashlib.sha256()
    for name in frame.columns:
        digest.update(name.encode())
        column = frame[name]
        values = column.to_numpy()
        if values.dtype == object:
            values = np.asarray(column.cast(str).to_list(), dtype=str)
        digest.update(np.ascontiguousarray(values).tobytes())
    return digest.hexdigest()[:16]


def num_bars_per_symbol(frame: Any) -> int:
    if "symbol" in frame.columns:
        return int(frame.group_by("symbol").len()["len"].min())
    return int(frame.height)


def make_data_splits(cfg: Mapping[str, Any], num_bars: int) -> Any:
    """The run's splits: `data.splits` when set (checked against the bars), else the
    fractions of `num_bars` with the embargo."""
    from jaxtrade.data.splits import Splits, make_splits

    data = cfg["data"]
    if data.get("splits"):
        ranges = {name: tuple(int(x) for x in bounds) for name, bounds in data["splits"].items()}
        if ranges["test"][1] > num_bars:
            raise ConfigError(f"data.splits={data['splits']!r} is not allowed: the test range "
                              f"ends after the last of the {num_bars} bars")
        return Splits(**ranges)
    return make_splits(num_bars, data["train_frac"], data["validation_frac"],
                       embargo_bars=data["embargo_bars"])


def feature_spec(cfg: Mapping[str, Any]) -> Any:
    from jaxtrade import features

    spec = cfg.get("features")
    if not spec:
        return features.default_spec()
    return features.FeatureSpec.from_dict(spec)


def has_volume(frame: Any) -> bool:
    """Whether every symbol traded some volume: a file without a volume column loads with
    volume 0 (jaxtrade.data.formats), and volume features of it are constants or 0/0."""
    import polars as pl

    traded = pl.col("volume") != 0
    if "symbol" in frame.columns:
        return bool(frame.group_by("symbol").agg(traded.any())["volume"].all())
    return bool(frame.select(traded.any()).item())


def volume_free_spec(spec: Any, frame: Any, notify: Callable[[str], None] = print) -> Any:
    """`spec` less the features that need volume when the bars have none, with one line
    naming them."""
    if has_volume(frame):
        return spec
    spec, dropped = spec.without_volume()
    if dropped:
        notify(f"note: the bars have no volume; left out the feature(s) that need it: "
               f"{', '.join(e.label() for e in dropped)}")
    return spec


def build_market(cfg: Mapping[str, Any], frame: Any) -> Any:
    """Features + MarketData; checks the observation window against the training split."""
    from jaxtrade import market as market_lib

    num_bars = num_bars_per_symbol(frame)
    splits = make_data_splits(cfg, num_bars)
    check_eval_splits(splits, num_bars, cfg["data"])
    train_start, train_end = splits.train
    window = int(cfg["env"].get("window_bars", 1))
    check_window(window, train_end - train_start)
    return market_lib.build(frame, volume_free_spec(feature_spec(cfg), frame), splits,
                            regimes=bool(cfg["data"].get("regimes", False)))


def env_overrides(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cfg["env"].items() if k not in ("name", "num_envs")}


def build_env(cfg: Mapping[str, Any], market: Any, **extra: Any) -> tuple[Any, Any]:
    import envs

    return envs.make(cfg["env"].get("name", "trading"), market,
                     **dict(env_overrides(cfg), **extra))


def observation_size(env: Any, env_params: Any) -> int:
    import jax

    obs = jax.eval_shape(lambda k: env.reset(k, env_params)[0], jax.random.key(0))
    return int(np.prod(obs.shape))


def resolve_num_envs(cfg: dict[str, Any], env: Any, env_params: Any) -> int:
    """env.num_envs, with `auto` replaced by the device rule (jaxtrade/config/auto.py) fed
    with the chosen agent's own memory figures; then the agent's size checks."""
    import agents

    agent_cfg = agents.config_from_dict(dict(cfg["agent"]))
    num_envs = cfg["env"]["num_envs"]
    if num_envs == "auto":
        num_envs = auto_num_envs(observation_size(env, env_params),
                                 **agent_cfg.auto_sizing(env, env_params))
        cfg["env"]["num_envs"] = num_envs
    agent_cfg.check_num_envs(int(num_envs))
    return int(num_envs)


def _tree_bytes(tree: Any) -> int:
    """Bytes of the arrays (or shapes) in `tree`; a PRNG key counts as its 8 bytes of data."""
    import jax

    total = 0
    for leaf in jax.tree.leaves(tree):
        itemsize = 8 if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key) else (
            np.dtype(leaf.dtype).itemsize)
        total += int(np.prod(leaf.shape)) * itemsize
    return total


def training_memory(env: Any, env_params: Any, agent_cfg: Any, mesh: Any) -> Any:
    """jaxtrade/config/memory.py's MemoryEstimate of what one device of `mesh` holds while
    training (on CPU: the host, for all this process's devices): every point's env states,
    observations, the agent's rollout storage and its replay buffer."""
    import jax

    from jaxtrade.config.auto import bytes_per_env
    from jaxtrade.config.memory import MemoryEstimate

    devices = list(mesh.mesh.devices.flat)
    obs, state = jax.eval_shape(lambda k: env.reset(k, env_params), jax.random.key(0))
    sizing = agent_cfg.auto_sizing(env, env_params)
    storage = sizing.get("per_env_bytes")
    if storage is None:
        storage = bytes_per_env(int(np.prod(obs.shape)), sizing["rollout_len"])
    num_envs, fixed = int(agent_cfg.num_envs), int(sizing.get("fixed_bytes", 0))
    if devices[0].platform == "cpu":
        # CPU devices share the host's memory: it holds every point of this process.
        local = sum(d.process_index == jax.process_index() for d in devices)
        points = -(-mesh.padded_points * local // len(devices))
    else:  # each device holds its share of the points, and of each point's envs
        points = mesh.padded_points // mesh.point_shards
        num_envs, fixed = -(-num_envs // mesh.env_shards), -(-fixed // mesh.env_shards)
    return MemoryEstimate(points=points, num_envs=num_envs, env_bytes=_tree_bytes((obs, state)),
                          storage_bytes=int(storage), fixed_bytes=fixed)


def check_memory(cfg: Mapping[str, Any], env: Any, env_params: Any, agent_cfg: Any,
                 mesh: Any, sweep_points: int = 1) -> None:
    """One-line ConfigError when training cannot fit: `training_memory` against what the
    mesh's device, or on CPU the host, has available (unchecked where that is unknown)."""
    from jaxtrade.config.memory import check_fits, device_available_bytes

    available = device_available_bytes(mesh.mesh.devices.flat[0])
    if available is None:
        return
    check_fits(training_memory(env, env_params, agent_cfg, mesh), *available,
               num_envs=cfg["env"]["num_envs"], num_seeds=int(cfg["train"]["num_seeds"]),
               sweep_points=max(1, sweep_points),
               buffer_size=getattr(agent_cfg, "buffer_size", None))


def agent_config(cfg: Mapping[str, Any], env: Any, env_params: Any, num_envs: int) -> Any:
    """The agent's config dataclass from the agent + network sections and the run sizes."""
    import agents

    section = dict(cfg["agent"])
    section["network"] = resolve_network(dict(cfg.get("network") or {}), env, env_params,
                                         "network")
    for name in section.get("members") or ():
        # An ensemble's members: each network is under agent.<member>.network.
        member = dict(section.get(name) or {})
        if member.get("network"):
            member["network"] = resolve_network(dict(member["network"]), env, env_params,
                                                f"agent.{name}.network")
            section[name] = member
    section["num_envs"] = num_envs
    section["total_steps"] = int(cfg["train"]["total_steps"])
    return agents.config_from_dict(section)


def resolve_network(network: dict[str, Any], env: Any, env_params: Any,
                    where: str) -> dict[str, Any]:
    """A network section with what the env decides filled in: the flat observation's window
    layout for window torsos and selections, and `observe` (feature names) resolved into
    `observe_columns` (agents/common/networks.py). The run's config.yaml keeps the names, so
    a backtest, export or resume of it resolves them again against the same features."""
    observe = [str(name) for name in network.get("observe") or ()]
    flat = getattr(env, "obs_layout", "flat") == "flat"
    if (network.get("torso", "mlp") != "mlp" or observe) and network.get(
            "window_shape") is None and flat and hasattr(env, "num_features"):
        # Window torsos read the flat observation as [W bars, F values] + portfolio state.
        width = env.num_assets * env.num_features
        network["window_shape"] = [env.window_bars, width]
        network["num_state_features"] = (observation_size(env, env_params)
                                         - env.window_bars * width)
    if observe:
        network["observe_columns"] = observe_columns(observe, env, env_params, where)
    return network


def observe_columns(observe: Sequence[str], env: Any, env_params: Any,
                    where: str) -> list[int]:
    """The columns of one bar's row of the observation window that hold the features named
    in `observe`, for every asset (rows are asset-major: asset a's feature f is column
    a F + f), and with the window layout the portfolio columns after them (which stay)."""
    market = getattr(env_params, "market", None)
    if market is None or not hasattr(env, "num_features"):
        raise ConfigError(f"{where}.observe={list(observe)} is not allowed: it selects market "
                          "features by name, which only the trading env has")
    names = list(market.meta.feature_names)
    unknown = [name for name in observe if name not in names]
    if unknown:
        raise ConfigError(f"{where}.observe names unknown feature(s) {unknown}; the market's "
                          f"features are: {', '.join(names)}")
    chosen = sorted(names.index(name) for name in observe)
    num_features = len(names)
    columns = [a * num_features + f for a in range(env.num_assets) for f in chosen]
    if getattr(env, "obs_layout", "flat") == "window":
        row = env.observation_shape[-1]
        columns += list(range(env.num_assets * num_features, row))
    return columns


def replace_hparams(hparams: Any, values: Mapping[str, float]) -> Any:
    """A copy of a hparams dataclass with `values` (names without the agent.hparams. prefix)."""
    return dataclasses.replace(hparams, **{k: float(v) for k, v in values.items()})


def compose(argv: Sequence[str]) -> dict[str, Any]:
    """The run config of a command line. With resume=true it is the run's own config
    (run_dir/config.yaml, see `compose_resume`), not the defaults."""
    overrides = split_flags(argv)
    if resume_asked(overrides):
        return compose_resume(overrides)
    if fork_asked(overrides):
        return compose_fork(overrides)
    refuse_fork_keys(overrides)
    return compose_run(overrides)


def refuse_fork_keys(overrides: Sequence[str]) -> None:
    """from_run= without resume=fork, or forked_from set by hand, is a ConfigError."""
    keys = override_keys(overrides)
    if recorded := sorted(k for k in keys if k.split(".")[0] in ("from_run", "forked_from")):
        raise ConfigError(f"{recorded[0]} is not allowed here: from_run=R goes with "
                          "resume=fork (train a new run from R's checkpoint), and forked_from is "
                          "what such a run records")


def _resume_value(overrides: Sequence[str]) -> str:
    """resume's value on a command line, lower case ('' when not given)."""
    from jaxtrade.config.compose import parse_overrides

    value: Any = ""
    for override in parse_overrides(overrides):
        if override.key_or_group == "resume":
            value = override.value()
    return "true" if value is True else str(value).strip().lower()


def resume_asked(overrides: Sequence[str]) -> bool:
    return _resume_value(overrides) in ("true", "1", "yes")


def fork_asked(overrides: Sequence[str]) -> bool:
    """`resume=fork`: a new run that starts from another run's checkpoint (`compose_fork`)."""
    return _resume_value(overrides) == "fork"


# What may change when a run continues: how it is logged, checkpointed, evaluated for
# progress, reported and where it runs. Anything else (data, seed, env, agent, network,
# sizes, hyperparameters, sweep points) is what the run is.
RESUME_MAY_CHANGE = (
    "run_dir", "resume", "compile_cache", "compile_cache_dir", "compile_cache_max_gb", "logger",
    "train.stop_after_updates", "train.report", "train.report_from", "train.devices",
    "train.distributed", "train.keep_last", "train.keep_best", "train.checkpoint_every_updates",
    "train.checkpoint_every_steps", "train.eval_every_updates", "train.eval_every_steps",
)
# Of those, what belongs to one invocation and the machine it runs on, not to the run: a
# resume takes them from its own command line (or their defaults), never from config.yaml.
PER_INVOCATION = ("train.stop_after_updates", "train.devices", "train.distributed")
# Records train writes into config.yaml rather than settings: left unset on a resume's command
# line they are not a change (the bars themselves are checked against the checkpoint on load);
# set to another value they are.
RECORDED_BY_TRAIN = ("data.fingerprint",)
_UNSET = object()


def _leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted path: value} of a plain config (lists are values)."""
    if not isinstance(tree, Mapping):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        out.update(_leaves(value, path) if isinstance(value, Mapping) and value else
                   {path: value})
    return out


def _may_change(path: str) -> bool:
    return any(path == key or path.startswith(key + ".") for key in RESUME_MAY_CHANGE)


def run_differences(saved: Mapping[str, Any], cfg: Mapping[str, Any]) -> list[str]:
    """'key: old -> new' for every setting that makes `cfg` another run than `saved`."""
    old = _leaves(to_jsonable(scrub(dict(saved))))
    new = _leaves(to_jsonable(scrub(dict(cfg))))
    lines = []
    # Shallow keys and names first: `seed` and `agent.name` lead a long list.
    for path in sorted(set(old) | set(new), key=lambda p: (
            p.count("."), not p.endswith((".name", ".source", ".path")), p)):
        a, b = old.get(path, _UNSET), new.get(path, _UNSET)
        if path in RECORDED_BY_TRAIN and b in (None, _UNSET):
            continue
        if a != b and not _may_change(path):
            show = lambda v: "unset" if v is _UNSET else repr(v)  # noqa: E731
            lines.append(f"{path}: {show(a)} -> {show(b)}")
    return lines


def refuse_other_run(run_dir: Path, differences: Sequence[str]) -> None:
    if not differences:
        return
    shown = ", ".join(differences[:6]) + (f" and {len(differences) - 6} more"
                                          if len(differences) > 6 else "")
    raise ConfigError(f"resume=true continues {run_dir} as it was configured "
                      f"({run_dir / 'config.yaml'}); these settings would make it another run: "
                      f"{shown}. Drop them, or train a new run in another run_dir")


def compose_resume(overrides: Sequence[str]) -> dict[str, Any]:
    """The config of `jaxtrade train run_dir=R resume=true [overrides]`: R/config.yaml, with
    the command's overrides applied to it; one that changes what the run is (anything outside
    RESUME_MAY_CHANGE: logging, checkpointing, reporting, devices) is a ConfigError listing
    the differences. PER_INVOCATION settings come from this command line or the defaults.

    Dotted keys are set on the run's config (a key the run does not have is an unknown key);
    a group choice (`logger=wandb`) sets what it sets on the defaults and the section it
    names, so repeating the run's original command line with resume=true is accepted.
    """
    from jaxtrade.config.compose import groups, parse_overrides
    from jaxtrade.errors import CheckpointError

    parsed = list(zip(overrides, parse_overrides(overrides), strict=True))
    names = set(groups())
    given = {ov.key_or_group: ov.value() for _, ov in parsed if ov.key_or_group not in names}
    if "from_run" in given:
        raise ConfigError("from_run=R goes with resume=fork (a new run from R's checkpoint); "
                          "resume=true continues run_dir itself")
    if not given.get("run_dir"):
        raise ConfigError("resume=true needs run_dir=R, the run to continue")
    run_dir = Path(str(given["run_dir"])).expanduser()
    if not (run_dir / "config.yaml").is_file():
        import jax

        if jax.process_index() != 0:
            # Process 0 alone writes the run directory, which another host of a multi-process
            # run may not see: it composes its command line, and process 0 checks the run.
            return compose_run(overrides)
        raise CheckpointError(f"resume=true but {run_dir} holds no run to resume (no "
                              "config.yaml, no checkpoints)")
    saved = read_run_config(run_dir)
    merged = _saved_with_overrides(saved, parsed, ("run_dir", "resume"))
    refuse_other_run(run_dir, run_differences(saved, merged))
    merged["run_dir"], merged["resume"] = str(given["run_dir"]), True
    return compose_run_from_saved(merged)


# What a fork cannot change: the checkpoint's state carries its random keys, so another seed
# would be recorded but not trained with.
FORK_MAY_NOT_CHANGE = ("seed",)


def compose_fork(overrides: Sequence[str]) -> dict[str, Any]:
    """The config of `jaxtrade train resume=fork from_run=R run_dir=NEW [overrides]`: a new
    run in NEW that starts from R's latest checkpoint (its update count, parameters,
    optimizer, env and replay state) with R's config.yaml and the command's overrides, which
    may change what the run is (more train.total_steps, other bars, costs, hyperparameters).
    NEW/config.yaml records `forked_from`: R, the checkpoint's update, R's data fingerprint
    and every setting that differs from R's. R is only read.

    Refused with one line: no from_run or run_dir, NEW being R, NEW already holding a run,
    R without config.yaml or a complete checkpoint, and a change the checkpoint's state
    cannot honour (FORK_MAY_NOT_CHANGE; a shape the state does not fit is refused when the
    checkpoint is restored, before NEW is written).
    """
    from jaxtrade.checkpoint import saved_steps
    from jaxtrade.config.compose import groups, parse_overrides
    from jaxtrade.errors import CheckpointError

    parsed = list(zip(overrides, parse_overrides(overrides), strict=True))
    names = set(groups())
    given = {ov.key_or_group: ov.value() for _, ov in parsed if ov.key_or_group not in names}
    if not given.get("from_run") or not given.get("run_dir"):
        raise ConfigError("resume=fork needs from_run=R (the run whose latest checkpoint the "
                          "new run starts from) and run_dir=NEW (the new run's directory)")
    source = Path(str(given["from_run"])).expanduser().resolve()
    target = Path(str(given["run_dir"])).expanduser().resolve()
    if source == target:
        raise ConfigError(f"resume=fork starts a new run: run_dir must be another directory "
                          f"than from_run={str(source)!r} (resume=true continues that run)")
    if not (source / "config.yaml").is_file():
        raise CheckpointError(f"from_run={str(source)!r} holds no run to fork (no config.yaml)")
    steps = saved_steps(source / "checkpoints")
    if not steps:
        raise CheckpointError(f"from_run={str(source)!r} has no complete checkpoint to fork")
    if saved_steps(target / "checkpoints"):
        raise ConfigError(f"run_dir={str(target)!r} is not allowed: it already holds a run; "
                          "resume=fork needs a new run_dir (resume=true continues that run)")
    saved = read_run_config(source)
    merged = _saved_with_overrides(saved, parsed, ("run_dir", "resume", "from_run"))
    merged.pop("forked_from", None)  # R's own provenance stays in R/config.yaml
    changes = run_differences({k: v for k, v in saved.items() if k != "forked_from"}, merged)
    refused = [c for c in changes if c.split(":", 1)[0] in FORK_MAY_NOT_CHANGE]
    if refused:
        raise ConfigError(f"resume=fork cannot change {', '.join(refused)}: the checkpoint's "
                          "state carries its random keys; train a new run for another seed")
    data = merged.get("data") or {}
    if any(c.startswith("data.") for c in changes):
        data["fingerprint"] = None  # other bars: train records theirs
    merged["run_dir"], merged["resume"] = str(given["run_dir"]), False
    merged["forked_from"] = {
        "run_dir": str(source),
        "update": int(steps[-1]),
        "data_fingerprint": (saved.get("data") or {}).get("fingerprint"),
        "changes": changes,
    }
    return compose_run_from_saved(merged)


def _saved_with_overrides(saved: Mapping[str, Any], parsed: Sequence[tuple[str, Any]],
                          skip: Sequence[str]) -> dict[str, Any]:
    """A run's saved config with a command line's overrides applied (see `compose_resume`);
    `skip`: keys of the command line that are not settings of the run."""
    from jaxtrade.config.compose import apply_override, groups

    names = set(groups())
    chosen = [text for text, ov in parsed if ov.key_or_group in names]
    merged = to_jsonable(dict(saved))
    if chosen:
        defaults = _leaves(to_jsonable(compose_run([])))
        values = [text for text, ov in parsed
                  if ov.key_or_group not in names and ov.key_or_group not in skip]
        try:  # a choice may need its keys to validate (data=csv data.path=...)
            composed = to_jsonable(compose_run(chosen + values))
        except ConfigError:  # or the keys may be the run's own, not the defaults'
            composed = to_jsonable(compose_run(chosen))
        leaves = _leaves(composed)
        sections = {ov.key_or_group for _, ov in parsed
                    if ov.key_or_group in names and ov.key_or_group in composed}
        for path, value in leaves.items():
            if path not in ("run_dir", "resume") and (
                    defaults.get(path, _UNSET) != value or _under(path, sections)):
                _set_path(merged, path, value)
        for path in _leaves(merged):
            # Keys the choice drops (agent=dqn has no PPO keys).
            if path not in leaves and (path in defaults or _under(path, sections)):
                _set_path(merged, path, _UNSET)
    fresh = to_jsonable(compose_raw([]))
    for path in PER_INVOCATION:
        section, key = path.split(".")
        merged[section][key] = fresh[section].get(key)
    for text, ov in parsed:
        if ov.key_or_group not in names and ov.key_or_group not in skip:
            apply_override(merged, ov.key_or_group, ov.value(), text)
    return merged


def _under(path: str, prefixes: set[str]) -> bool:
    return any(path == p or path.startswith(p + ".") for p in prefixes)


def _set_path(tree: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = tree
    for key in parents:
        if not isinstance(node.get(key), dict):
            if value is _UNSET:
                return
            node[key] = {}
        node = node[key]
    if value is _UNSET:
        node.pop(leaf, None)
    else:
        node[leaf] = value


def compose_run_from_saved(saved: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a config read back from a run's config.yaml (with num_envs already fixed)."""
    from jaxtrade.config import validate_run

    cfg = {k: v for k, v in saved.items() if k != "sweep"}
    sweep = dict(saved.get("sweep") or {})
    points = sweep.pop("points", None)
    cfg["sweep"] = sweep
    out = validate_run(cfg)
    if points:
        out["sweep"]["points"] = points
    return out
