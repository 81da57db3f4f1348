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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experiments import common
from experiments.loop import LoopResult, init_points, run_loop
from jaxtrade.errors import CheckpointError, ConfigError

HELP = """usage: jaxtrade train [key=value ...]

Train an agent; every setting is a Hydra override of configs/config.yaml.

groups:    agent=ppo|cvar_ppo  data=sp500_daily|eurusd_1h|synthetic|csv|parquet
           network=mlp|cnn|gru|lstm|attention  logger=none|console|wandb
           experiment=smoke|gpu|cvar_sp500
keys:      seed=0  run_dir=runs/x  resume=true  env.num_envs=64|auto
           train.total_steps=2e5  train.num_seeds=4  train.checkpoint_every_updates=50
           train.keep_last=2  train.stop_after_updates=N  agent.hparams.learning_rate=3e-4
           data.path=bars.csv  env.window_bars=32  env.costs.fee_bps=1.0  ...

examples:
  jaxtrade train
  jaxtrade train agent=cvar_ppo data=eurusd_1h env.num_envs=256 train.total_steps=2e6
  jaxtrade train data=csv data.path=bars.csv logger=wandb run_dir=runs/mine
  jaxtrade train run_dir=runs/mine resume=true

The run directory gets config.yaml (resolved), metrics.jsonl, checkpoints/ (orbax: every
train.checkpoint_every_updates updates, keep-last-N plus the best by validation Sharpe),
and report/ at the end. resume=true continues from the latest checkpoint exactly.
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


@dataclasses.dataclass
class TrainSummary:
    run_dir: Path
    points: list[dict[str, Any]]
    validation_sharpe: list[float]
    best_point: int
    report_dir: Path | None
    loop: LoopResult


def main(argv: Sequence[str]) -> int:
    if common.wants_help(argv):
        print(HELP)
        return 0
    cfg = common.compose(argv)
    train(cfg)
    return 0


def prepare(cfg: dict[str, Any], command: str = "train") -> Prepared:
    import agents

    common.enable_compile_cache(cfg)
    run_dir = common.resolve_run_dir(cfg, command)
    frame = common.load_frame(cfg["data"])
    market = common.build_market(cfg, frame)
    env, env_params = common.build_env(cfg, market)
    num_envs = common.resolve_num_envs(cfg, env, env_params)
    agent_cfg = common.agent_config(cfg, env, num_envs)
    agent = agents.make_agent(agent_cfg, env, env_params)
    return Prepared(cfg, run_dir, frame, common.data_fingerprint(frame), market, env,
                    env_params, agent, agent_cfg)


def point_list(cfg: Mapping[str, Any], hparam_points: Sequence[Mapping[str, float]] = ()
               ) -> list[dict[str, Any]]:
    """Seeds x hyperparameter points, seed-major: [{"seed": s, "agent.hparams.x": v}, ...]."""
    seeds = [int(cfg["seed"]) + i for i in range(int(cfg["train"]["num_seeds"]))]
    hps = list(hparam_points) or [{}]
    return [dict(seed=s, **hp) for hp in hps for s in seeds]


def train(cfg: dict[str, Any], *, hparam_points: Sequence[Mapping[str, float]] = (),
          command: str = "train", print_fn: Callable[[str], None] = print) -> TrainSummary:
    import jax

    from agents import stack_hparams
    from jaxtrade.checkpoint import CheckpointManager
    from jaxtrade.logging import RunLogger
    from jaxtrade.progress import Progress

    prep = prepare(cfg, command)
    run_dir, agent = prep.run_dir, prep.agent
    ckpt_dir = run_dir / "checkpoints"
    resume = bool(cfg["resume"])
    if resume and not ckpt_dir.is_dir():
        raise CheckpointError(f"resume=true but {ckpt_dir} has no checkpoints to resume from")
    if not resume and ckpt_dir.is_dir() and any(ckpt_dir.iterdir()):
        raise ConfigError(f"run_dir={str(run_dir)!r} is not allowed: it already holds a run; "
                          "pass resume=true to continue it or choose another run_dir")
    common.write_config(run_dir, cfg)

    points = point_list(cfg, hparam_points)
    keys = jax.numpy.stack([jax.random.key(p["seed"]) for p in points])
    hparams = None
    if any(len(p) > 1 for p in points):
        hparams = stack_hparams([
            common.replace_hparams(prep.agent_config.hparams, {
                k.rsplit(".", 1)[-1]: v for k, v in p.items() if k != "seed"})
            for p in points
        ])
    info = common.run_info(prep.fingerprint)
    metadata = {"config": cfg, "run_info": info, "points": points}

    checkpoints = CheckpointManager(ckpt_dir, keep_last=cfg["train"]["keep_last"],
                                    keep_best=cfg["train"]["keep_best"])
    state = init_points(agent, keys, hparams, prep.env_params)
    start_update = 0
    if resume:
        state, saved = checkpoints.restore(state)
        start_update = int(saved["update"])
        print_fn(f"resuming {run_dir} from update {start_update}")

    evaluate = make_validation(prep, deterministic=cfg["train"]["deterministic_eval"])
    log_cfg = cfg["logger"]
    total_steps = agent.num_updates * agent.steps_per_update
    with Progress(total_steps, start_steps=start_update * agent.steps_per_update,
                  enabled=log_cfg["kind"] != "none") as progress, RunLogger(
        run_dir, kind=log_cfg["kind"], config=cfg, points=points, run_info=info,
        project=log_cfg["project"], entity=log_cfg["entity"], group=log_cfg["group"],
        mode=log_cfg["mode"], tags=log_cfg["tags"],
        resume_after_update=start_update if resume else None,
        print_fn=progress.print,
    ) as logger:
        if start_update == 0:
            progress.print(f"training {len(points)} point(s) x {agent.num_updates} updates x "
                           f"{agent.steps_per_update} env steps ({cfg['env']['num_envs']} envs)"
                           f" -> {run_dir}")
        try:
            loop = run_loop(
                agent, prep.env_params, state, start_update=start_update, logger=logger,
                checkpoints=checkpoints,
                checkpoint_every_updates=cfg["train"]["checkpoint_every_updates"],
                metadata=metadata, evaluate=evaluate, progress=progress,
                stop_after_updates=cfg["train"].get("stop_after_updates"),
            )
        finally:
            checkpoints.close()
        sharpe = loop.validation.get("validation_sharpe")
        sharpe_list = [float(x) for x in sharpe] if sharpe is not None else []
        best = int(np.nanargmax(sharpe)) if sharpe is not None and np.isfinite(
            sharpe).any() else 0
        report_dir = None
        if loop.finished and cfg["train"]["report"]:
            report_dir = write_report(prep, loop.state, best, points, print_fn=progress.print)
            if log_cfg["log_artifacts"]:
                logger.log_artifact(report_dir, f"report-{run_dir.name}", "report", point=best)
        if log_cfg["log_artifacts"] and log_cfg["kind"] == "wandb":
            latest = CheckpointManager(ckpt_dir, read_only=True)
            step = latest.latest_step()
            if step is not None:
                logger.log_artifact(latest.step_dir(step), f"checkpoint-{run_dir.name}",
                                    "checkpoint", point=best)
            latest.close()
        logger.summary({"validation_sharpe": sharpe_list[best]} if sharpe_list else {})
    if not loop.finished:
        print_fn(f"stopped after update {loop.updates_done} of {agent.num_updates}; "
                 f"continue with resume=true run_dir={run_dir}")
    return TrainSummary(run_dir, points, sharpe_list, best, report_dir, loop)


# ------------------------------------------------------------------------ evaluation


def make_validation(prep: Prepared, deterministic: bool = True
                    ) -> Callable[[Any], dict[str, np.ndarray]] | None:
    """Validation-split Sharpe of every point's greedy policy, all points in one program."""
    import jax
    import jax.numpy as jnp

    from jaxtrade.evaluate import backtest as backtest_lib
    from jaxtrade.metrics import max_drawdown, sharpe_ratio, total_return

    env, env_params, agent = prep.env, prep.env_params, prep.agent
    start, end = prep.market.split_bounds("validation")
    if end - start < 3 or getattr(prep.agent_config.network, "recurrent", False):
        return None
    first, last = backtest_lib.eval_bounds(env, env_params, "validation")
    num_steps = last - first
    params = env_params.replace(split=jnp.asarray(1, jnp.int32), eval_mode=jnp.asarray(True))
    bars_per_year = float(prep.market.meta.bars_per_year)

    def one_point(agent_params: Any) -> dict[str, jax.Array]:
        def policy(key: Any, obs: Any, state: Any, env_p: Any) -> Any:
            return agent.act(agent_params, obs, key, deterministic)

        rec = backtest_lib._rollout_impl(env, num_steps, 0, policy, None, params,
                                         jax.random.key(0))
        equity = jnp.concatenate([rec["initial_equity"][None], rec["equity"]])
        returns = equity[1:] / jnp.where(equity[:-1] != 0, equity[:-1], jnp.nan) - 1.0
        returns = jnp.nan_to_num(returns)
        return {"validation_sharpe": sharpe_ratio(returns, bars_per_year),
                "validation_total_return": total_return(returns),
                "validation_max_drawdown": max_drawdown(returns),
                "validation_returns": returns}

    evaluate = jax.jit(jax.vmap(one_point))
    return lambda state: {k: np.asarray(v) for k, v in evaluate(state.params).items()}


def point_params(state: Any, point: int) -> Any:
    import jax

    return jax.tree_util.tree_map(lambda x: x[point], state.params)


def write_report(prep: Prepared, state: Any, point: int, points: Sequence[Mapping[str, Any]],
                 print_fn: Callable[[str], None] = print) -> Path:
    """Backtest the chosen point on every split beside the baselines; write run_dir/report/."""
    from jaxtrade import evaluate as evaluate_lib

    params = point_params(state, point)
    agent = prep.agent

    def policy(key: Any, obs: Any, env_state: Any, env_params: Any,
               deterministic: bool = True) -> Any:
        return agent.act(params, obs, key, deterministic)

    report_dir = evaluate_lib.write_report(
        prep.run_dir, env=prep.env, env_params=prep.env_params, policy_fn=policy,
        config=prep.cfg, num_trials=len(points),
    )
    report_dir = Path(report_dir) if report_dir else prep.run_dir / "report"
    print_fn(metrics_table(report_dir / "metrics.json"))
    print_fn(f"report: {report_dir / 'report.html'}")
    return report_dir


def metrics_table(metrics_json: Path) -> str:
    """A short table: the policy's Sharpe / return / drawdown per split beside baselines."""
    import json

    data = json.loads(Path(metrics_json).read_text())
    rows = [("policy", data)] + [(name, by_split) for name, by_split in
                                 (data.get("baselines") or {}).items()]
    splits = [s for s in ("train", "validation", "test") if s in data]
    header = f"{'':18s}" + "".join(f"{s + ' Sharpe':>18s}" for s in splits) + \
        f"{'test return':>14s}{'test max DD':>14s}"
    lines = [header]
    for name, by_split in rows:
        cells = "".join(f"{_num((by_split.get(s) or {}).get('sharpe')):>18s}" for s in splits)
        test = by_split.get("test") or {}
        lines.append(f"{name:18s}{cells}{_num(test.get('total_return'), pct=True):>14s}"
                     f"{_num(test.get('max_drawdown'), pct=True):>14s}")
    return "\n".join(lines)


def _num(value: Any, pct: bool = False) -> str:
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "-"
    return f"{100 * value:.1f}%" if pct else f"{value:.2f}"
