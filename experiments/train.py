"""`jaxtrade train`: train an agent on a market, with progress, logs, checkpoints and a report.

    jaxtrade train agent=ppo data=sp500_daily env.num_envs=64 train.total_steps=2e5 \
        seed=0 run_dir=runs/x logger=wandb

Order of work: compose + validate the config (no compile yet) -> load data, build features
and the market, make the env and the agent (all checked) -> write run_dir/config.yaml ->
train in chunks (progress, metrics.jsonl / W&B, NaN checks, validation Sharpe, orbax
checkpoints) -> backtest report -> print the report path and a metrics table.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from experiments import common
from experiments.common import chunk_update_interval
from jaxtrade.errors import CheckpointError, ConfigError
from jaxtrade.logging import plural

# JAX, the agents and the training loop are imported where they are used, after the config
# is validated: a typo is reported in about a second, not after the imports.
if TYPE_CHECKING:
    from experiments.loop import LoopResult
    from jaxtrade.runs import RestoredPoint

__all__ = ["Prepared", "TrainSummary", "chunk_notice", "main", "make_validation",
           "point_hparams", "point_list", "prepare", "restore_run", "train", "write_report"]


def point_list(cfg: Mapping[str, Any], hparam_points: Sequence[Mapping[str, Any]] = ()
               ) -> list[dict[str, Any]]:
    """jaxtrade.runs.point_list (imported on call: it starts JAX)."""
    from jaxtrade import runs

    return runs.point_list(cfg, hparam_points)

HELP = """usage: jaxtrade train [key=value ...]

Train an agent; every setting is a Hydra override of configs/config.yaml. An agent's
defaults (its network and, for sac/td3/ddpg, env.action_mode=continuous included) are its
config dataclass's: `jaxtrade train agent=<name> [key=value ...] --help` prints the
settings that command line trains with.

groups:    agent=<name> (below)  data=sp500_daily|eurusd_1h|synthetic|csv|parquet
           network=mlp|cnn|gru|lstm|attention (default: the agent's own network)
           logger=none|console|wandb
           experiment=smoke|gpu|cvar_sp500
keys:      seed=0  run_dir=runs/x  resume=true  env.num_envs=64|auto
           train.total_steps=2e5  train.num_seeds=4  train.checkpoint_every_updates=50
           train.checkpoint_every_steps=1e5  train.eval_every_steps=2e4 (env steps: the same
           clock for every agent; they replace the *_every_updates settings when set)
           train.keep_last=2  train.stop_after_updates=N  agent.hparams.learning_rate=3e-4
           train.devices=auto|N (shard the points, seeds x sweep points, over N devices;
           auto: all of them, at most one per point)
           train.distributed.coordinator_address=HOST:PORT  train.distributed.num_processes=2
           train.distributed.process_id=0 (multi-host; or JAX_COORDINATOR_ADDRESS, ...)
           train.fast_compile=true (CPU: compile the training chunk ~40 % faster, train up
           to ~20 % slower; for short runs; experiment=smoke sets it)
           data.path=bars.csv  env.window_bars=32  env.costs.fee_bps=1.0  ...
           env.final_observation=true (default: truncated episode ends bootstrap with the
           value of the pre-reset observation; false treats them as terminal)

agents:
{agents}

examples:
  jaxtrade train
  jaxtrade train agent=dqn agent.n_step=3 agent.prioritized=true
  jaxtrade train agent=cvar_ppo data=eurusd_1h env.num_envs=256 train.total_steps=2e6
  jaxtrade train data=csv data.path=bars.csv logger=wandb run_dir=runs/mine
  jaxtrade train run_dir=runs/mine resume=true
  jaxtrade train resume=fork from_run=runs/mine run_dir=runs/more train.total_steps=4e6

The run directory gets config.yaml (resolved), metrics.jsonl, checkpoints/ (orbax: every
train.checkpoint_every_updates updates, keep-last-N plus the best by validation Sharpe),
and report/ at the end. resume=true continues from the latest checkpoint exactly, with the
run's own config.yaml: overrides may change logging, checkpointing, reporting and devices;
one that changes what the run is (data, seed, sizes, hyperparameters) is refused.
resume=fork from_run=R run_dir=NEW starts a new run from R's latest checkpoint with R's config
and the overrides (all but seed and the state's shapes may change), recorded in
NEW/config.yaml as forked_from; R is only read.
Exit codes: 0 ok, 2 bad config or data, 1 internal error (e.g. training diverged).
"""


@dataclasses.dataclass
class Prepared:
    """Everything built from a config before the first compile."""

    cfg: dict[str, Any]
    run_dir: Path
    frame: Any
    fingerprint: str
    market: Any
    env: Any
    env_params: Any
    agent: Any
    agent_config: Any
    compile_cache: Path | None = None  # the persistent compilation cache's folder, if on


@dataclasses.dataclass
class TrainSummary:
    run_dir: Path
    points: list[dict[str, Any]]
    validation_sharpe: list[float]
    best_point: int
    report_dir: Path | None
    loop: LoopResult


def help_text() -> str:
    """HELP with the agents `agent=` can choose: configs/agent/*.yaml, each with the first
    sentence of its header comment (read from the files: --help imports no JAX)."""
    import re

    from jaxtrade.config.compose import config_dir, group_options

    names = group_options("agent")
    width = max((len(n) for n in names), default=0)
    lines = []
    for name in names:
        text = (config_dir() / "agent" / f"{name}.yaml").read_text()
        comment = " ".join(line.lstrip("# ").strip() for line in text.splitlines()
                           if line.startswith("#"))
        summary = re.sub(r"\s*\(agents/[^)]*\)", "", comment).split(". ")[0].split("; ")[0]
        if len(summary) > 72:
            summary = summary[:69].rsplit(" ", 1)[0].rstrip(",:") + " ..."
        lines.append(f"  {name:<{width}}  {summary}")
    return HELP.format(agents="\n".join(lines))


def effective_settings(argv: Sequence[str]) -> str:
    """The agent, network and run sizes a command line trains with, as YAML: each agent's
    defaults come from its config dataclass, so this is where a reader sees their values."""
    import yaml

    overrides = [a for a in argv if a not in ("-h", "--help")]
    cfg = common.compose(overrides)
    shown = {"agent": cfg["agent"], "network": cfg["network"],
             "env": {"num_envs": cfg["env"].get("num_envs"),
                     "action_mode": cfg["env"].get("action_mode")},
             "train": {"total_steps": cfg["train"]["total_steps"]}}
    return (f"effective settings of `jaxtrade train {' '.join(overrides)}`:\n"
            + yaml.safe_dump(shown, sort_keys=False, default_flow_style=None).rstrip())


def main(argv: Sequence[str]) -> int:
    if common.wants_help(argv):
        print(help_text())
        if any("=" in a for a in argv):  # settings asked about: compose them (loads the agents)
            print()
            print(effective_settings(argv))
        return 0
    start_distributed(argv)
    cfg = common.compose(argv)
    train(cfg, set_by_user=common.override_keys(argv))
    return 0


def start_distributed(argv: Sequence[str]) -> bool:
    """`jax.distributed` from train.distributed (or the environment), started before the
    config is validated: validation imports the env package, whose gymnax import starts
    JAX, and jax.distributed must start first. A no-op without a coordinator."""
    import os

    from jaxtrade.config.compose import compose_raw, parse_overrides

    overrides = common.split_flags(argv)
    if not (common.resume_asked(overrides) or common.fork_asked(overrides)):
        common.refuse_fork_keys(overrides)
        distributed = (compose_raw(overrides).get("train") or {}).get("distributed")
    else:
        # A resume's (or fork's) other settings come from a run's config.yaml, which composing
        # them on the defaults could not; train.distributed is this command's alone
        # (common.PER_INVOCATION).
        distributed = {ov.key_or_group.rsplit(".", 1)[1]: ov.value()
                       for ov in parse_overrides(overrides)
                       if ov.key_or_group.startswith("train.distributed.")} or None
    if not (distributed or {}).get("coordinator_address") and not os.environ.get(
            "JAX_COORDINATOR_ADDRESS"):
        return False  # nothing to start; JAX is not imported for it
    from jaxtrade import sharding

    return sharding.initialize_distributed(distributed)


def prepare(cfg: dict[str, Any], command: str = "train") -> Prepared:
    import agents
    from jaxtrade.logging import silence_expected_orbax_warnings

    silence_expected_orbax_warnings()  # a clean resume printed orbax warnings like a failure
    compile_cache = common.enable_compile_cache(cfg)
    run_dir = common.resolve_run_dir(cfg, command)
    frame = common.load_frame(cfg["data"])
    # config.yaml, W&B and the report record the bars trained on.
    cfg["data"]["fingerprint"] = common.data_fingerprint(frame)
    market = common.build_market(cfg, frame)
    env, env_params = common.build_env(cfg, market)
    num_envs = common.resolve_num_envs(cfg, env, env_params)
    agent_cfg = common.agent_config(cfg, env, env_params, num_envs)
    agent = agents.make_agent(agent_cfg, env, env_params)
    return Prepared(cfg, run_dir, frame, cfg["data"]["fingerprint"], market, env,
                    env_params, agent, agent_cfg, compile_cache)


def point_hparams(prep: Prepared, points: Sequence[Mapping[str, Any]]) -> Any:
    """The agent's hyperparameters stacked over sweep points (their `agent.hparams.*` keys)."""
    from agents import stack_hparams

    base = prep.agent_config.hparams
    if isinstance(base, Mapping):  # a composite agent: {member: hparams}, agent.<m>.hparams.*
        return stack_hparams([
            {member: common.replace_hparams(hp, {
                k.rsplit(".", 1)[-1]: v for k, v in p.items()
                if k != "seed" and k.split(".")[1] == member})
             for member, hp in base.items()}
            for p in points
        ])
    return stack_hparams([
        common.replace_hparams(base, {
            k.rsplit(".", 1)[-1]: v for k, v in p.items() if k != "seed"})
        for p in points
    ])


def train(cfg: dict[str, Any], *, hparam_points: Sequence[Mapping[str, float]] = (),
          command: str = "train", print_fn: Callable[[str], None] = print,
          set_by_user: Collection[str] | None = None) -> TrainSummary:
    """Train `cfg`'s points. `set_by_user`: the dotted keys the user gave (command-line
    overrides); interval rounding is noticed only for those (None: for every key)."""
    from experiments.loop import run_loop
    from jaxtrade import sharding
    from jaxtrade.checkpoint import CheckpointManager, saved_steps
    from jaxtrade.logging import RunLogger
    from jaxtrade.progress import Progress
    from jaxtrade.runs import init_points, point_keys, restore_point, resume_points

    # Started by `main` already; a direct caller with a coordinator and JAX not started yet
    # gets it here; a no-op without a coordinator (train.distributed).
    sharding.initialize_distributed(cfg["train"].get("distributed"))
    prep = prepare(cfg, command)
    run_dir, agent = prep.run_dir, prep.agent
    # Devices beyond the points split each point's envs when the agent marks its env axis.
    num_envs = getattr(agent.config, "num_envs", None) if agent.env_axis is not None else None
    num_points = int(cfg["train"]["num_seeds"]) * max(1, len(hparam_points))
    mesh = sharding.point_mesh(cfg["train"].get("devices", "auto"), num_points, num_envs)
    # Before the run directory is written or any state allocated.
    common.check_memory(cfg, prep.env, prep.env_params, prep.agent_config, mesh,
                        len(hparam_points))
    ckpt_dir = run_dir / "checkpoints"
    resume = bool(cfg["resume"])
    # Process 0 alone owns the run directory (config, metrics, checkpoints, report, W&B).
    primary = sharding.is_primary()
    # Complete checkpoints only: a kill during the first save leaves a half-written
    # temporary folder, which neither makes a run to protect nor one to resume.
    have_checkpoints = bool(saved_steps(ckpt_dir)) if primary else False
    # A fork (resume=fork) starts from its source run's checkpoint until it has one of its
    # own, also when resumed after a kill before its first save.
    fork = cfg.get("forked_from")
    fork_start = fork is not None and not have_checkpoints
    if primary and resume and not have_checkpoints:
        if not (run_dir / "config.yaml").is_file():
            raise CheckpointError(f"resume=true but {run_dir} holds no run to resume (no "
                                  "config.yaml, no checkpoints)")
        if fork is None:
            print_fn(f"{run_dir} has no complete checkpoint (stopped during its first save?): "
                     "starting it from update 0")
    if primary and not resume and have_checkpoints:
        raise ConfigError(f"run_dir={str(run_dir)!r} is not allowed: it already holds a run; "
                          "pass resume=true to continue it or choose another run_dir")
    if primary and resume:
        # The run's record stays what it trained with: a resume never rewrites config.yaml,
        # and refuses a config (e.g. other sweep points) that would make it another run.
        common.refuse_other_run(run_dir, common.run_differences(
            common.read_run_config(run_dir), cfg))
    elif primary and not fork_start:  # a fork's once its source checkpoint is restored
        common.write_config(run_dir, cfg)

    points = point_list(cfg, hparam_points)
    keys = point_keys(points)
    hparams = point_hparams(prep, points) if hparam_points else None
    info = common.run_info(prep.fingerprint, mesh=mesh.describe())
    metadata = {"config": cfg, "run_info": info, "points": points}

    state = init_points(agent, keys, hparams, prep.env_params, mesh)
    start_update = 0
    if fork_start:  # before anything is written to the fork's run_dir
        state, start_update = start_fork(fork, agent, state, mesh, primary)
    checkpoints = CheckpointManager(ckpt_dir, keep_last=cfg["train"]["keep_last"],
                                    keep_best=cfg["train"]["keep_best"]) if primary else None
    if fork_start:
        if primary:
            if not resume:
                common.write_config(run_dir, cfg)
            copy_fork_metrics(Path(fork["run_dir"]), run_dir)
            changed = "; ".join(fork.get("changes") or []) or "no setting changed"
            print_fn(f"forking {fork['run_dir']} at update {start_update} -> {run_dir} "
                     f"({changed})")
    elif resume:
        state, start_update = resume_points(checkpoints, state, mesh, agent.env_axis)
        if primary:
            print_fn(f"resuming {run_dir} from update {start_update}")

    market = mesh.replicate(prep.env_params)  # one copy per device, for training and validation
    evaluate = make_validation(prep, deterministic=cfg["train"]["deterministic_eval"],
                               env_params=market)
    log_cfg = cfg["logger"]
    total_steps = agent.num_updates * agent.steps_per_update
    with Progress(total_steps, start_steps=start_update * agent.steps_per_update,
                  enabled=primary and log_cfg["kind"] != "none") as progress, RunLogger(
        run_dir, kind=log_cfg["kind"], config=cfg, points=points, run_info=info,
        project=log_cfg["project"], entity=log_cfg["entity"], group=log_cfg["group"],
        mode=log_cfg["mode"], tags=log_cfg["tags"],
        resume_after_update=start_update if resume or fork_start else None,
        print_fn=progress.print, write=primary, verbose=log_cfg["verbose"],
    ) as logger:
        if start_update == 0 and primary:
            split = f" (envs split over {mesh.env_shards})" if mesh.env_shards > 1 else ""
            progress.print(f"training {plural(len(points), 'point')} x "
                           f"{plural(agent.num_updates, 'update')} x "
                           f"{agent.steps_per_update} env steps ({cfg['env']['num_envs']} envs)"
                           f" on {plural(mesh.num_devices, 'device')}{split} -> {run_dir}")
            if mesh.padding:
                progress.print(f"{plural(mesh.padding, 'padding point')} (copies of the last "
                               "point, "
                               f"never logged or saved) fill {mesh.num_devices} devices")
        if primary and (notice := chunk_notice(cfg["train"], agent, set_by_user)):
            progress.print(notice)
        progress.compiling(cached=prep.compile_cache is not None)
        loop = run_loop(
            agent, market, state, start_update=start_update, logger=logger,
            checkpoints=checkpoints,
            checkpoint_every_updates=interval_updates(cfg["train"], "checkpoint", agent),
            eval_every_updates=interval_updates(cfg["train"], "eval", agent),
            metadata=metadata, evaluate=evaluate, progress=progress,
            stop_after_updates=cfg["train"].get("stop_after_updates"), mesh=mesh,
            fast_compile=bool(cfg["train"].get("fast_compile", False)),
        )
        sharpe = loop.validation.get("validation_sharpe")
        sharpe_list = [float(x) for x in sharpe] if sharpe is not None else []
        best = int(np.nanargmax(sharpe)) if sharpe is not None and np.isfinite(
            sharpe).any() else 0
        report_dir = None
        if loop.finished and cfg["train"]["report"] and checkpoints is not None:
            variance = None
            if len(points) > 1 and sharpe is not None:
                variance = _per_bar_sharpe_variance(loop.validation.get("validation_returns"))
            # The report is for a saved checkpoint (the best by validation Sharpe, model
            # selection that leaves the test split unseen, or the latest), restored and
            # backtested exactly as `jaxtrade backtest checkpoint=...` does: same numbers.
            which = cfg["train"]["report_from"]
            restored = restore_point(checkpoints, loop.state, which,
                                     policy_params=agent.policy_params)
            report_dir = write_report(prep, restored, points, requested=which,
                                      print_fn=progress.print, sweep_sharpe_variance=variance)
            if log_cfg["log_artifacts"]:
                logger.log_artifact(report_dir, f"report-{run_dir.name}", "report", point=best)
        if log_cfg["log_artifacts"] and log_cfg["kind"] == "wandb" and checkpoints is not None:
            step = checkpoints.latest_step()
            if step is not None:
                logger.log_artifact(checkpoints.step_dir(step), f"checkpoint-{run_dir.name}",
                                    "checkpoint", point=best)
        for point, value in enumerate(sharpe_list):  # each point's run its own figure
            logger.summary({"validation_sharpe": value}, point=point)
        if report_dir is not None:
            log_seeds(logger, report_dir / "metrics.json")
    if checkpoints is not None:
        checkpoints.close()
    if not loop.finished and primary:
        print_fn(f"stopped after update {loop.updates_done} of {agent.num_updates}; "
                 f"continue with resume=true run_dir={run_dir}")
    return TrainSummary(run_dir, points, sharpe_list, best, report_dir, loop)


def start_fork(fork: Mapping[str, Any], agent: Any, like: Any, mesh: Any, primary: bool
               ) -> tuple[Any, int]:
    """(the fork's source checkpoint restored like `like`, its update): the state of
    `forked_from.run_dir` at `forked_from.update`, read only, with this config's
    hyperparameters when the fork changes them (the state carries its own)."""
    from jaxtrade.checkpoint import CheckpointManager
    from jaxtrade.runs import resume_points

    changed_hparams = [c for c in fork.get("changes") or [] if c.startswith("agent.hparams.")]
    if changed_hparams and agent.with_hparams_of is None:
        raise ConfigError(f"resume=fork cannot change {', '.join(changed_hparams)}: this "
                          "agent's state does not let its hyperparameters be replaced")
    source = Path(fork["run_dir"]) / "checkpoints"
    manager = CheckpointManager(source, read_only=True) if primary else None
    try:
        state, update = resume_points(manager, like, mesh, agent.env_axis,
                                      step=int(fork["update"]))
    finally:
        if manager is not None:
            manager.close()
    if changed_hparams:
        state = agent.with_hparams_of(state, like)
    return state, update


def copy_fork_metrics(source: Path, run_dir: Path) -> None:
    """The source run's metrics.jsonl into the fork's, whose RunLogger then keeps the rows up
    to the fork's first update: the fork's record holds every update it builds on."""
    import shutil

    if (source / "metrics.jsonl").is_file():
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / "metrics.jsonl", run_dir / "metrics.jsonl")


def log_seeds(logger: Any, metrics_json: Path) -> None:
    """W&B: each point's run gets its own report figures, and a run of several points one
    summary run in its group with the aggregate over seeds (report/metrics.json "seeds")."""
    import json

    from jaxtrade.evaluate.seeds import group_summary, point_summary

    seeds = json.loads(metrics_json.read_text()).get("seeds")
    if not seeds:
        return
    for row in seeds["points"]:
        logger.summary(point_summary(row), point=row["point"])
    if len(seeds["points"]) > 1:
        logger.group_summary(group_summary(seeds))


def interval_updates(train_cfg: Mapping[str, Any], which: str, agent: Any) -> int:
    """train.<which>_every_steps in whole updates of this agent when set (env steps are the
    clock every agent shares), else train.<which>_every_updates."""
    steps = train_cfg.get(f"{which}_every_steps")
    if steps:
        return max(1, math.ceil(int(steps) / int(agent.steps_per_update)))
    return int(train_cfg[f"{which}_every_updates"])


def chunk_notice(train_cfg: Mapping[str, Any], agent: Any,
                 set_by_user: Collection[str] | None = None) -> str | None:
    """One line when the host acts later than the user asked: checkpoints, validation and
    `stop_after_updates` happen between chunks of `agent.updates_per_chunk` compiled updates,
    so an interval that is not a whole number of chunks is rounded up to one.

    Only for keys in `set_by_user` (all when None): the default 20-update checkpoint interval
    of a 1,000-update DQN chunk is the defaults' doing, and a notice about it on every run
    would be noise."""
    per_chunk = int(agent.updates_per_chunk)
    rounded = []
    for which, what in (("checkpoint", "checkpoints"), ("eval", "validation")):
        asked = interval_updates(train_cfg, which, agent)
        key = (f"{which}_every_steps" if train_cfg.get(f"{which}_every_steps")
               else f"{which}_every_updates")
        if asked % per_chunk and (set_by_user is None or f"train.{key}" in set_by_user):
            rounded.append(f"{what} every {chunk_update_interval(asked, per_chunk)} updates "
                           f"(train.{key}={train_cfg[key]})")
    stop = train_cfg.get("stop_after_updates")
    if stop and stop % per_chunk and stop < int(agent.num_updates):
        rounded.append(f"a stop after {chunk_update_interval(stop, per_chunk)} updates "
                       f"(train.stop_after_updates={stop})")
    if not rounded:
        return None
    return (f"note: {'; '.join(rounded)}: rounded up to whole chunks of "
            f"agent.updates_per_chunk={per_chunk} (set it to a divisor of the interval for "
            "exact intervals)")


# ------------------------------------------------------------------------ evaluation


def _per_bar_sharpe_variance(returns: np.ndarray | None) -> float | None:
    """Variance across points of the per-bar validation Sharpe (for the Deflated Sharpe)."""
    if returns is None or returns.shape[0] < 2:
        return None
    std = returns.std(axis=1, ddof=1)
    per_bar = np.where(std > 0, returns.mean(axis=1) / np.where(std > 0, std, 1.0), 0.0)
    return float(per_bar.var(ddof=1))


def make_validation(prep: Prepared, deterministic: bool = True, env_params: Any = None
                    ) -> Callable[[Any], dict[str, Any]] | None:
    """Validation-split metrics of every point's policy, all points in one compiled program.

    The backtest's own walk (jaxtrade.evaluate.backtest.walk: eval mode from the split's
    first bar to its last, fills and costs by the env, recurrent state carried from the
    split's start, the book frozen after a bankruptcy), vmapped over the points' parameters,
    which are traced inputs so evaluating after every checkpoint interval compiles once.
    `env_params`: the market as training placed it (replicated over the device mesh);
    default `prep.env_params`. Results are device arrays, sharded like the points.
    """
    import jax
    import jax.numpy as jnp

    from jaxtrade.evaluate.backtest import agent_policy, eval_bounds, eval_params, walk
    from jaxtrade.metrics import max_drawdown, sharpe_ratio, total_return
    from jaxtrade.xla import compile_options

    env, agent = prep.env, prep.agent
    placed = prep.env_params if env_params is None else env_params
    start, end = prep.market.split_bounds("validation")
    if end - start < 3:
        return None
    first, last = eval_bounds(env, prep.env_params, "validation")
    bars_per_year = float(prep.market.meta.bars_per_year)
    key = jax.random.PRNGKey(0)

    def one_point(agent_params: Any, env_params: Any) -> dict[str, jax.Array]:
        rec = walk(env, eval_params(env_params, "validation"), agent_policy(agent, agent_params),
                   last - first, key, deterministic)
        equity = jnp.concatenate([rec["initial_equity"][None], rec["equity"]])
        returns = jnp.nan_to_num(equity[1:] / jnp.where(equity[:-1] != 0, equity[:-1],
                                                        jnp.nan) - 1.0)
        return {"validation_sharpe": sharpe_ratio(returns, bars_per_year),
                "validation_total_return": total_return(returns),
                "validation_max_drawdown": max_drawdown(returns),
                "validation_returns": returns}

    # The market goes in as an argument, not as constants baked into the program.
    evaluate = jax.jit(jax.vmap(one_point, in_axes=(0, None)),
                       compiler_options=compile_options())
    return lambda state: evaluate(agent.policy_params(state), placed)


def write_report(prep: Prepared, restored: RestoredPoint, points: Sequence[Mapping[str, Any]],
                 requested: str | int | None = None, print_fn: Callable[[str], None] = print,
                 sweep_sharpe_variance: float | None = None) -> Path:
    """Backtest one point of a restored checkpoint on every split beside the baselines and
    write run_dir/report/; metrics.json's "checkpoint" names the update and point used, and
    its "seeds" every point's validation and test figures with their aggregate over seeds
    (jaxtrade.evaluate.seeds), shown on the console and in report.html for several points.

    `jaxtrade train` (its final report) and `jaxtrade backtest` both come here with a
    checkpoint restored by jaxtrade.runs.restore_point, so the same checkpoint gives the same
    report, positions.csv included.
    """
    import json

    from jaxtrade.evaluate.backtest import agent_policy, backtest_all_splits, costs_description
    from jaxtrade.evaluate.baselines import run_baselines
    from jaxtrade.evaluate.montecarlo import bootstrap
    from jaxtrade.evaluate.report import write_report as write_report_files
    from jaxtrade.evaluate.seeds import seed_summary, seed_tables

    deterministic = bool(prep.cfg["train"]["deterministic_eval"])
    ensemble = None
    if prep.agent.members is not None:  # a composite agent: fit its rules, compare them
        from jaxtrade.evaluate import ensemble as ensemble_eval

        ensemble = ensemble_eval.evaluate(prep.agent, restored.params, prep.env,
                                          prep.env_params, deterministic=deterministic)
        rule = prep.agent.config.combine
        results = ensemble.rules[rule]
        names = list(prep.agent.members)
        for result in results.values():
            result.columns = ensemble_eval.positions_columns(result, names, rule)
    else:
        policy = agent_policy(prep.agent, restored.params)
        results = backtest_all_splits(prep.env, prep.env_params, policy,
                                      deterministic=deterministic)
    seeds = seed_summary(per_point_metrics(prep, restored, len(points), results),
                         points, restored.point, restored.step)
    baselines = run_baselines(prep.env, prep.env_params, splits=tuple(results))
    test = results.get("test")
    mc = None
    if test is not None and test.num_bars > 20:
        mc = bootstrap(test.returns[1:], test.bars_per_year, num_paths=1000,
                       exposure=test.positions[1:])
    source = {"update": restored.step, "point": restored.point,
              "requested": str(requested if requested is not None else restored.step),
              **{k: v for k, v in points[restored.point].items()}}
    page = write_report_files(
        prep.run_dir, results, baselines, mc=mc, sweep_trials=len(points),
        costs_description=costs_description(prep.env_params),
        sweep_sharpe_variance=sweep_sharpe_variance, seeds=seeds,
        symbol_names=plot_symbol_names(prep.market.meta.symbols, prep.cfg["data"]),
        title=f"jaxtrade: {prep.cfg['agent']['name']} on {common.data_label(prep.cfg['data'])} "
              f"(bars {prep.fingerprint}), checkpoint of update {restored.step}, "
              f"point {restored.point}",
    )
    report_dir = Path(page).parent
    metrics_path = report_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics["checkpoint"] = source
    metrics["agent"] = prep.cfg["agent"]["name"]  # `jaxtrade compare` shows it
    if ensemble is not None:
        metrics["ensemble"] = ensemble.summary(list(prep.agent.members))
        page.write_text(page.read_text(encoding="utf-8").replace(
            "</body>", ensemble_eval.html_section(metrics["ensemble"]) + "</body>"),
            encoding="utf-8")
    if prep.agent.family == "mcts" and "test" in results:
        from jaxtrade.evaluate import mcts as mcts_eval

        metrics["mcts"] = mcts_eval.evaluate(
            prep.agent, restored.params, prep.env, prep.env_params,
            adversarial=prep.agent.config.adversarial, searched=results["test"],
            deterministic=deterministic)
        page.write_text(page.read_text(encoding="utf-8").replace(
            "</body>", mcts_eval.html_section(metrics["mcts"]) + "</body>"), encoding="utf-8")
    training = training_metrics(prep.run_dir, restored.point, restored.step,
                                warn=lambda message: print_fn(f"warning: {message}"))
    if training:
        metrics["training"] = training
    metrics_path.write_text(json.dumps(metrics, indent=2, allow_nan=False))
    seed = points[restored.point].get("seed")
    print_fn(f"report of checkpoint {restored.step} ({source['requested']}), point "
             f"{restored.point}" + (f" (seed {seed}), one of {plural(len(points), 'point')} "
                                    "(all of them below)" if len(points) > 1 else ""))
    print_fn(metrics_table(metrics_path))
    for line in verdict(metrics_path):
        print_fn(line)
    if ensemble is not None:
        for line in ensemble_lines(metrics["ensemble"]):
            print_fn(line)
    if "mcts" in metrics:
        from jaxtrade.evaluate import mcts as mcts_eval

        for line in mcts_eval.lines(metrics["mcts"]):
            print_fn(line)
    if len(points) > 1:
        for line in seed_tables(seeds):
            print_fn(line)
    print_fn(f"report: {page}")
    return report_dir


def ensemble_lines(summary: Mapping[str, Any]) -> list[str]:
    """Console lines of an ensemble report: each rule's and member's Sharpe per split."""
    lines = ["ensemble (Sharpe train / validation / test; router and winner fitted on train "
             "+ validation):"]
    for kind, entries in (("rule", summary["rules"]), ("member", summary["members"])):
        for name, by_split in entries.items():
            cells = " / ".join(_num((by_split.get(s) or {}).get("sharpe"))
                               for s in ("train", "validation", "test"))
            lines.append(f"  {kind} {name:<12s} {cells}")
    lines.append(f"  best rule on test: {summary['best_rule_on_test']}; winner-takes-all picks "
                 f"{summary['winner']}; trade probability ECE (test): "
                 f"{_num(summary['ece_test'])}")
    gate = summary.get("min_trade_probability_test") or {}
    if gate:
        lines.append("  min_trade_probability on test (Sharpe, turnover): " + "; ".join(
            f"{t}: {_num(g['sharpe'])}, {_num(g['turnover'])}" for t, g in gate.items()))
    return lines


def per_point_metrics(prep: Prepared, restored: RestoredPoint, num_points: int,
                      results: Mapping[str, Any]) -> list[dict[str, dict[str, float]]]:
    """Every point's validation and test metrics at the restored checkpoint, each from the
    same backtest `jaxtrade backtest point=P` runs (one compiled walk serves every point);
    the reported point's are `results`, its backtest on all splits."""
    from jaxtrade.evaluate.backtest import agent_policy, backtest
    from jaxtrade.evaluate.seeds import SEED_SPLITS
    from jaxtrade.runs import point_params

    deterministic = bool(prep.cfg["train"]["deterministic_eval"])
    splits = [s for s in SEED_SPLITS if s in results]
    rows = []
    for point in range(num_points):
        if point == restored.point:
            rows.append({s: dict(results[s].metrics) for s in splits})
            continue
        policy = agent_policy(prep.agent, point_params(restored.state, point,
                                                       restored.policy_params))
        rows.append({s: backtest(prep.env, prep.env_params, policy, split=s,
                                 deterministic=deterministic).metrics for s in splits})
    return rows


def plot_symbol_names(symbols: Sequence[str], data_cfg: Mapping[str, Any]) -> list[str]:
    """The market's symbols, with the name a single-symbol source without a symbol column
    gets (`asset0`) replaced by what the run trained on (the file's stem, the dataset)."""
    if tuple(symbols) == ("asset0",):
        return [Path(common.data_label(data_cfg)).stem]
    return list(symbols)


def training_metrics(run_dir: Path, point: int, update: int,
                     warn: Callable[[str], None] | None = None) -> dict[str, float]:
    """The training metrics logged for `point` at the reported checkpoint's update (or the
    last before it): the agent's own figures, e.g. QR-DQN's return quantiles, in the report.
    Torn or garbage lines of metrics.jsonl are skipped and reported through `warn`."""
    from jaxtrade.logging import read_metrics

    found: dict[str, float] = {}
    for row in read_metrics(run_dir, warn):
        if row.get("point") == point and row["update"] <= update:
            found = {k: v for k, v in row.items() if k not in ("point", "time_s")
                     and isinstance(v, (int, float)) and math.isfinite(v)}
    return found


def restore_run(run_dir: str | Path, checkpoint: str | int = "best", point: int | None = None,
                command: str = "backtest"
                ) -> tuple[Prepared, RestoredPoint, list[dict[str, Any]]]:
    """Rebuild a run from its config.yaml and restore a checkpoint (jaxtrade.runs).

    Returns (prepared run, the restored checkpoint and chosen point, all points); the point
    defaults to the best by validation Sharpe at that checkpoint.
    """
    from jaxtrade.runs import abstract_points, point_keys, restore_point

    run_dir = Path(run_dir)
    cfg = common.read_run_config(run_dir)
    cfg["run_dir"] = str(run_dir)
    cfg = common.compose_run_from_saved(cfg)
    prep = prepare(cfg, command)
    prep.run_dir = run_dir.resolve()
    hparam_points = cfg["sweep"].get("points") or []
    points = point_list(cfg, hparam_points)
    hparams = point_hparams(prep, points) if hparam_points else None
    # Shapes only: the checkpoint gives the values, so `agent.init` is neither compiled nor run.
    like = abstract_points(prep.agent, point_keys(points), hparams, prep.env_params)
    restored = restore_point(run_dir / "checkpoints", like, checkpoint, point,
                             policy_params=prep.agent.policy_params)
    check_training_bars(prep, restored.meta)
    return prep, restored, points


def check_training_bars(prep: Prepared, checkpoint_meta: Mapping[str, Any]) -> None:
    """DataError unless the bars read for the run now are the ones it trained on (by the data
    fingerprint saved with the checkpoint): backtest, export and their fitted normalization
    and regimes are rebuilt from them, so edited bars would silently give another policy's
    inputs."""
    from jaxtrade.errors import DataError

    saved = (checkpoint_meta.get("run_info") or {}).get("data_fingerprint")
    if saved and saved != prep.fingerprint:
        data = prep.cfg["data"]
        raise DataError(
            f"the run's training bars changed since training (fingerprint {prep.fingerprint} "
            f"now, {saved} in the checkpoint): the normalization and regimes fitted at "
            "training cannot be rebuilt; restore the file the run trained on",
            path=str(data.get("path") or data["source"]))


def metrics_table(metrics_json: Path) -> str:
    """A short table: the policy's Sharpe / return / drawdown per split beside baselines."""
    import json

    data = json.loads(Path(metrics_json).read_text())
    rows = [("policy", data)] + [(name, by_split) for name, by_split in
                                 (data.get("baselines") or {}).items()]
    splits = [s for s in ("train", "validation", "test") if s in data]
    from jaxtrade.evaluate.report import short_splits

    short = short_splits(data)  # marked with * (verdict says why)
    header = f"{'':18s}" + "".join(
        f"{s + ' Sharpe' + ('*' if s in short else ''):>20s}" for s in splits) + \
        f"{'test return':>14s}{'test max DD':>14s}"
    lines = [header]
    for name, by_split in rows:
        cells = "".join(f"{_num((by_split.get(s) or {}).get('sharpe')):>20s}" for s in splits)
        test = by_split.get("test") or {}
        lines.append(f"{name:18s}{cells}{_num(test.get('total_return'), pct=True):>14s}"
                     f"{_num(test.get('max_drawdown'), pct=True):>14s}")
    return "\n".join(lines)


def verdict(metrics_json: Path) -> list[str]:
    """Plain-language lines under the table: where the policy ranks out of sample.

    Per split outside training: the policy's Sharpe, its rank among the policy and the
    baselines, and the best baseline; then a warning when the train Sharpe exceeds the
    validation Sharpe by more than 1 (annualized), the usual sign of overfitting.
    """
    import json

    from jaxtrade.evaluate.report import sharpe_standard_error, short_splits

    data = json.loads(Path(metrics_json).read_text())
    baselines = data.get("baselines") or {}
    short = short_splits(data)
    significance = data.get("significance") or {}
    lines = []

    def sharpe(by_split: dict[str, Any], split: str) -> float | None:
        value = (by_split.get(split) or {}).get("sharpe")
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None

    for split in ("validation", "test"):
        mine = sharpe(data, split)
        others = {n: v for n, b in baselines.items() if (v := sharpe(b, split)) is not None}
        if mine is None or not others:
            continue
        rank = 1 + sum(v > mine for v in others.values())
        best = max(others, key=others.get)
        lines.append(f"{split}: policy Sharpe {mine:.2f} ranks {rank} of {len(others) + 1} "
                     f"(best baseline {best} {others[best]:.2f})"
                     + (f" [short sample: {short[split]} bars]" if split in short else ""))
    if short:
        per_year = float(data["bars_per_year"])
        psr = "; ".join(
            f"{s} {_num(significance.get(f'psr_{s}'))} on n={significance.get(f'psr_{s}_bars', n)}"
            for s, n in short.items())
        lines.append(
            f"caution: {' and '.join(f'{s} ({n} bars)' for s, n in short.items())} rest on "
            f"fewer than {data.get('min_reliable_bars', math.ceil(per_year))} bars (a year at "
            f"{per_year:g} bars per year): a Sharpe ratio from {min(short.values())} bars has a "
            f"standard error of about "
            f"{sharpe_standard_error(per_year, min(short.values())):.1f}; PSR {psr}")
    train, validation = sharpe(data, "train"), sharpe(data, "validation")
    if train is not None and validation is not None and train - validation > 1.0:
        lines.append(f"warning: train Sharpe {train:.2f} vs validation {validation:.2f}: the "
                     "policy fits the training bars far better than unseen ones (overfitting)")
    return lines


def _num(value: Any, pct: bool = False) -> str:
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "-"
    return f"{100 * value:.1f}%" if pct else f"{value:.2f}"
