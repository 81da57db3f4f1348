"""Out-of-sample metrics of trained runs with and without observation noise injected.

For each run directory: restore its best checkpoint (as `jaxtrade backtest` does) and
backtest the split (default test) twice with the agent's deterministic policy: on clean
observations, and with noise injected: on each bar, with probability `--prob` (default 0.2)
the whole observation gets independent N(0, `--std`^2) noise per entry (`--std` 0.5, the
AdversarialWrapper's default; jaxtrade.evaluate.mcts.noisy_act, the injection the mcts
report runs). Fills, costs and the book are the env's, unchanged. Prints Sharpe, max
drawdown and total return per run and setting.

    python scripts/eval_noise.py RUN_DIR [RUN_DIR ...] [--prob 0.2] [--std 0.5] [--split test]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", help="trained run directories")
    parser.add_argument("--prob", type=float, default=0.2, help="chance a bar's obs is noisy")
    parser.add_argument("--std", type=float, default=0.5, help="noise std per entry")
    parser.add_argument("--split", default="test", help="train | validation | test")
    args = parser.parse_args(argv)

    from experiments.train import restore_run
    from jaxtrade.evaluate.backtest import AgentPolicy, backtest
    from jaxtrade.evaluate.mcts import noisy_act

    for run_dir in args.run_dirs:
        prep, restored, _ = restore_run(run_dir)
        agent = prep.agent
        noisy = noisy_act(agent.act, args.prob, args.std)
        for label, act in (("clean", agent.act), (f"noise {args.prob:.0%}", noisy)):
            result = backtest(prep.env, prep.env_params,
                              AgentPolicy(restored.params, act, agent.init_carry),
                              split=args.split)
            m = result.metrics
            print(f"{run_dir}  {args.split}  {label:>10}: Sharpe {m['sharpe']:6.2f}  "
                  f"max drawdown {m['max_drawdown']:7.1%}  return {m['total_return']:8.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
