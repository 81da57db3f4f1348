"""Out-of-sample evaluation: backtests, baselines, walk-forward, Monte Carlo, gate, reports.

Modules (import the functions from them, e.g. `from jaxtrade.evaluate.backtest import
backtest`; the package does not rebind the module names):
  backtest      backtest(env, env_params, policy_fn, split=...) -> BacktestResult
  baselines     supervised (logistic regression) baseline, run_baselines(...)
  walk_forward  walk_forward(env, env_params, folds, train_fn) -> WalkForwardResult
  montecarlo    bootstrap(returns, bars_per_year, ...) -> MonteCarloResult, stress_tests(...)
  gate          compare_runs(new_run_dir, old_run_dir, factor=1.05) -> Decision
  report        write_report(run_dir, results_by_split, baselines, ...)
  compare       compare_runs(run_dirs) -> polars.DataFrame, main_compare(argv)
  seeds         interquartile_mean, bootstrap_ci, seed_summary (every seed and the aggregate)
  pipeline      evaluate_policy(run_dir, env, env_params, policy_fn, ...) -> report.html
"""
