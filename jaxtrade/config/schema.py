"""Dataclass schemas of the run configuration, registered in Hydra's ConfigStore.

The sections owned by the experiment layer (data, train, logger, sweep and the top level)
are typed here. The agent, network and env sections belong to their packages: their schema
is read from the agent's config dataclass and the env's defaults when those are importable
(`jaxtrade.config.validate`), so a new agent field needs no change here.

Field metadata states what is allowed: `ge`/`gt`/`le`/`lt` bounds and `choices`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from jaxtrade.defaults import TRAIN_FRAC, VALIDATION_FRAC

SCHEMA_NAME = "jaxtrade_schema"


def _f(default: Any, **allowed: Any) -> Any:
    """A field with a default and what is allowed (bounds, choices) in its metadata."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=allowed)
    return field(default=default, metadata=allowed)


@dataclass
class DataConfig:
    # An embedded dataset name, "synthetic", or "csv"/"parquet" with `path`.
    source: str = "sp500_daily"
    path: str | None = None
    # Column mapping for CSV/Parquet files: canonical name -> name in the file.
    columns: dict[str, str] | None = None
    # Extra keyword options passed to `jaxtrade.data.load_ohlcv` (e.g. synthetic num_bars).
    options: dict[str, Any] = _f({})
    # Files with an `Adj Close` column (Yahoo): its values as the close, open/high/low scaled
    # by Adj Close / Close (split- and dividend-adjusted history).
    adjust: bool = False
    train_frac: float = _f(TRAIN_FRAC, gt=0.0, lt=1.0)
    validation_frac: float = _f(VALIDATION_FRAC, ge=0.0, lt=1.0)
    embargo_bars: int = _f(0, ge=0)
    # Explicit `[start, end)` bar ranges {train: [s, e], validation: [s, e], test: [s, e]}
    # that replace the fractions (an empty validation has s == e). `jaxtrade walkforward`
    # records each fold's here, so `jaxtrade backtest` / `export` of a fold rebuild its market.
    splits: dict[str, Any] | None = None
    # Forward-filtered HMM regime probabilities as features (slower to build).
    regimes: bool = False
    # sha256 (16 hex) of the bars: `jaxtrade train` records the bars it trained on here in
    # run_dir/config.yaml; when set, bars that hash otherwise are refused (a file changed
    # since the run, or pin the data a run must train on).
    fingerprint: str | None = None


@dataclass
class DistributedConfig:
    # Multi-host training (jax.distributed): process 0's "host:port". Unset (and no
    # JAX_COORDINATOR_ADDRESS in the environment): one process, nothing is started.
    coordinator_address: str | None = None
    # Unset: JAX_NUM_PROCESSES / JAX_PROCESS_ID, else JAX's cluster detection (Slurm, MPI).
    num_processes: int | None = _f(None, ge=1)
    process_id: int | None = _f(None, ge=0)
    # This process's devices (default: all of its local devices; or JAX_LOCAL_DEVICE_IDS).
    local_device_ids: list[int] | None = None
    initialization_timeout_s: int = _f(300, ge=1)


@dataclass
class TrainConfig:
    # Environment steps per trained point (seed / hyperparameter point). Accepts 2e5.
    total_steps: int = _f(1_000_000, gt=0)
    # Seeds trained side by side in one program (vmapped).
    num_seeds: int = _f(1, ge=1)
    # Save a checkpoint (and compute validation Sharpe) every this many updates; rounded up
    # to a whole chunk of the agent's `updates_per_chunk` (train prints a notice when so).
    checkpoint_every_updates: int = _f(20, ge=1)
    # Backtest every point on the validation split (Sharpe for progress, W&B and best
    # checkpoint) every this many updates, rounded up to whole chunks; also at checkpoints.
    eval_every_updates: int = _f(10, ge=1)
    # The same two intervals in env steps, the clock every agent shares (an update is
    # 1,024 env steps for the default PPO and 10 for the default DQN); when set they replace
    # the *_updates settings (rounded up to whole updates, then to whole chunks).
    checkpoint_every_steps: int | None = _f(None, ge=1)
    eval_every_steps: int | None = _f(None, ge=1)
    # Checkpoints kept: the last `keep_last` plus the `keep_best` best by validation Sharpe.
    keep_last: int = _f(2, ge=1)
    keep_best: int = _f(1, ge=0)
    # Greedy actions in validation/test backtests.
    deterministic_eval: bool = True
    # Write run_dir/report/ at the end of training, for the checkpoint with the best
    # validation Sharpe ("best") or the final parameters ("latest").
    report: bool = True
    report_from: str = _f("best", choices=("best", "latest"))
    # Stop (as if interrupted) after this many updates in this process; resume=true continues.
    # For time-sliced or preemptible jobs. Rounded up to whole chunks, with a notice.
    stop_after_updates: int | None = _f(None, ge=1)
    # On CPU, compile the training chunk with XLA's faster-compiling options (jaxtrade/xla.py):
    # ~40 % less compile time, the same speed within +-10 % on the trading env, but up to 24 %
    # slower training elsewhere. For short runs, where compiling is most of the time
    # (experiment=smoke sets it).
    fast_compile: bool = False
    # Devices the points (seeds x sweep points) are sharded over: "auto" (one host: every
    # device, at most one per point; many hosts: every device of every process) or a count.
    # A point count that does not divide by it is padded with copies of the last point,
    # which train but are never logged, saved or reported.
    devices: int | str = "auto"
    distributed: DistributedConfig = field(default_factory=DistributedConfig)


@dataclass
class LoggerConfig:
    kind: str = _f("console", choices=("none", "console", "wandb"))
    project: str = "jaxtrade"
    entity: str | None = None
    # W&B group; defaults to the run directory name so all points of a run share it.
    group: str | None = None
    # offline unless the user asks for online (and has logged in: keys never go in configs).
    mode: str = _f("offline", choices=("offline", "online", "disabled"))
    tags: list[str] = _f([])
    log_artifacts: bool = True
    # Every metric of every chunk on the console (they always go to metrics.jsonl); off: one
    # progress line per chunk (steps, steps/s, ETA, episode return, validation Sharpe).
    verbose: bool = False


@dataclass
class SweepParam:
    key: str = ""
    # Grid: explicit values. Random: `low`/`high` (log-uniform when `log`).
    values: list[float] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False


@dataclass
class SweepConfig:
    method: str = _f("none", choices=("none", "grid", "random"))
    # Random search: points sampled per parameter set.
    num_samples: int = _f(8, ge=1)
    sample_seed: int = 0
    params: list[SweepParam] = _f([])


@dataclass
class RunConfig:
    seed: int = _f(0, ge=0)
    # Default: runs/<agent>-<data>-<UTC time>.
    run_dir: str | None = None
    resume: bool = False
    # Persistent XLA compilation cache (default dir: ~/.cache/jaxtrade/jax_cache, under
    # $JAXTRADE_CACHE_DIR or $XDG_CACHE_HOME/jaxtrade when set).
    # On by default on every backend (experiments/common.py enable_compile_cache); None, as
    # older configs say, is the default.
    compile_cache: bool | None = True
    compile_cache_dir: str | None = None
    # Its size bound: least recently used entries are evicted past it, and a bounded cache
    # locks each read and write, so parallel jobs can share the folder safely.
    compile_cache_max_gb: float = 4.0
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    # Owned by their packages; validated against their schemas (see validate.py).
    env: dict[str, Any] = _f({})
    agent: dict[str, Any] = _f({})
    network: dict[str, Any] = _f({})
    features: Any = None


_registered = False


def register_configs() -> None:
    """Register the schemas so Hydra type-checks every composed config against them (once
    per process: the nodes do not change, and explaining a failure composes again)."""
    global _registered
    if _registered:
        return
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name=SCHEMA_NAME, node=RunConfig)
    cs.store(group="data", name="data_schema", node=DataConfig)
    cs.store(group="logger", name="logger_schema", node=LoggerConfig)
    cs.store(group="sweep", name="sweep_schema", node=SweepConfig)
    _register_agent_defaults(cs)
    _registered = True


def _register_agent_defaults(cs: Any) -> None:
    """The agents' defaults, written once in their config dataclasses, as config nodes:

      agent/_defaults_<name>    every default of agent <name> but those set by other groups
                                (configs/agent/<name>.yaml builds on it)
      network/_of_<name>        agent <name>'s own default network: the network of a run
                                whose command line chooses none (configs/config.yaml)
      network/_network_config   NetworkConfig's defaults (configs/network/<torso>.yaml)
      agent_env/<mode>          env.action_mode=<mode>, for agents that need one kind of
                                actions (an explicit env.action_mode on the command line wins,
                                and the agent then says it cannot act on it)

    They are read through `jaxtrade.config.agent_defaults`, which keeps them on disk per
    version of the sources: composing (and reporting a typo) then imports no JAX. Nothing is
    registered when the agents cannot be imported (a config check without them).
    """
    from jaxtrade.config import agent_defaults

    nodes = agent_defaults.load()
    if nodes is None:
        return
    for name, node in nodes["agents"].items():
        cs.store(group="agent", name=f"_defaults_{name}", node=node["defaults"])
        cs.store(group="network", name=f"_of_{name}", node=node["network"])
    cs.store(group="network", name="_network_config", node=nodes["network_config"])
    for mode in ("discrete", "continuous"):
        cs.store(group="agent_env", name=mode, node={"env": {"action_mode": mode}})


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]
