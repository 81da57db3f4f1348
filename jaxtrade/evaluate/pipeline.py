"""One call from a trained policy to a full report: what `jaxtrade backtest` runs.

    from jaxtrade.evaluate.pipeline import evaluate_policy
    html = evaluate_policy("runs/x", env, env_params, policy_fn, sweep_trials=16)

Backtests the policy on train / validation / test with the env's costs, runs every baseline
on the same splits and costs (the env's rule-based ones plus the logistic-regression
baseline), bootstraps the out-of-sample returns with crash days, re-runs the policy with
doubled costs and delayed fills, and writes run_dir/report/.

For a trained agent pass `policy_fn=agent_policy(agent, params)` (jaxtrade.evaluate.backtest):
recurrent networks then carry their hidden state through each split from its first bar.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxtrade.evaluate import montecarlo
from jaxtrade.evaluate.backtest import backtest_all_splits, costs_description
from jaxtrade.evaluate.baselines import run_baselines
from jaxtrade.evaluate.report import write_report


def evaluate_policy(
    run_dir: str | Path,
    env: Any,
    env_params: Any,
    policy_fn: Any,
    *,
    sweep_trials: int = 1,
    sweep_sharpe_variance: float | None = None,
    deterministic: bool = True,
    num_paths: int = 1000,
    mean_block_bars: float | None = None,
    num_crashes: int = 3,
    crash_move: float = -0.1,
    cost_factor: float = 2.0,
    delay_bars: int = 1,
    baselines: bool = True,
    baseline_policies: dict[str, Any] | None = None,
    key: jax.Array | None = None,
    title: str = "jaxtrade backtest report",
) -> Path:
    """Evaluate `policy_fn` out of sample and write the report; returns report.html's path.

    `baseline_policies` replaces the env's rule-based baselines (the logistic-regression
    baseline is always added when `baselines` is True).
    """
    key = jax.random.PRNGKey(0) if key is None else key
    results = backtest_all_splits(env, env_params, policy_fn, deterministic=deterministic,
                                  key=key)
    if not results:
        raise ValueError("no split of the market has a bar to trade")
    by_baseline = {}
    if baselines:
        by_baseline = run_baselines(env, env_params, splits=tuple(results),
                                    policies=baseline_policies, key=key)
    oos_split = "test" if "test" in results else list(results)[-1]
    oos = results[oos_split]
    mc = None
    if oos.num_bars > 3:
        mc = montecarlo.bootstrap(
            oos.returns[1:], oos.bars_per_year, key=key, num_paths=num_paths,
            mean_block_bars=mean_block_bars,
            exposure=np.sum(oos.target_positions[:-1], axis=1),
            num_crashes=min(num_crashes, oos.num_bars - 1), crash_move=crash_move,
        )
        mc.stress = montecarlo.stress_tests(env, env_params, policy_fn, split=oos_split,
                                            cost_factor=cost_factor, delay_bars=delay_bars,
                                            deterministic=deterministic, key=key)
    return write_report(run_dir, results, by_baseline, mc=mc, sweep_trials=sweep_trials,
                        costs_description=costs_description(env_params),
                        sweep_sharpe_variance=sweep_sharpe_variance, title=title)
