"""Out-of-sample evaluation: backtests, baselines, walk-forward, Monte Carlo, gate, reports."""

from jaxtrade.evaluate.backtest import BacktestResult, backtest, backtest_all_splits

__all__ = ["BacktestResult", "backtest", "backtest_all_splits"]
