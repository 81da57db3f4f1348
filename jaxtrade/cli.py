"""`jaxtrade` command line: dispatches subcommands, turns jaxtrade errors into one line."""

from __future__ import annotations

import os
import sys

from jaxtrade.errors import JaxTradeError

USAGE = """usage: jaxtrade <command> [options] [key=value ...]

commands:
  train      train an agent (Hydra overrides, e.g. agent=ppo env.num_envs=1024)
  backtest   evaluate a run directory out of sample against baselines
  sweep      hyperparameter sweep (numeric axes vmapped in one program)
  export     export a run to a numpy-only bundle (format=onnx adds policy.onnx)
  retrain    continue a run on new bars, promote it behind a deploy gate (--history R)
  walkforward  retrain per fold, test each fold out of sample, stitch (walkforward.folds=4)
  live       run an exported bundle on a bar source (paper trading)
  data       list / inspect / validate / convert datasets, list features
  bench      run the benchmark scripts
  compare    compare run directories
  cloud      W&B sweeps on RunPod pods (sweep / status / stop), see jaxtrade cloud --help

`jaxtrade <command> --help` describes each command.
"""


def _commands() -> dict:
    # Imported lazily so `jaxtrade --help` and errors stay fast.
    from experiments import registry

    return registry.COMMANDS


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    try:
        commands = _commands()
        if command not in commands:
            raise _UsageError(f"unknown command '{command}'; choose one of {', '.join(commands)}")
        if command == "train":
            _reject_sweep_syntax(rest)
        return int(commands[command](rest) or 0)
    except _UsageError as err:
        print(f"jaxtrade: error: {err}", file=sys.stderr)
        return 2
    except JaxTradeError as err:
        print(f"jaxtrade: {type(err).__name__}: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("jaxtrade: interrupted", file=sys.stderr)
        return 130


class _UsageError(Exception):
    pass


def _reject_sweep_syntax(argv: list[str]) -> None:
    """`jaxtrade train` runs one configuration; Hydra's multirun habits belong to `sweep`.

    Without this, `-m` fails to parse and a comma list reaches the validator as a sweep object,
    and neither message says where sweeps live.
    """
    if any(a in ("-m", "--multirun") for a in argv):
        raise _UsageError("jaxtrade train runs one configuration and has no -m/--multirun; give "
                          "the same overrides to `jaxtrade sweep` (see jaxtrade sweep --help)")
    if any(a in ("-h", "--help") for a in argv):
        return
    from jaxtrade.config.compose import parse_overrides

    overrides = [a for a in argv if not a.startswith("-")]
    for text, override in zip(overrides, parse_overrides(overrides), strict=True):
        if override.is_sweep_override():
            raise _UsageError(f"'{text}' is a sweep and jaxtrade train runs one configuration; "
                              f"run `jaxtrade sweep {text} ...` instead (agent.hparams.* lists "
                              "train in one program, other lists one process per value)")


def entry() -> int:
    """The `jaxtrade` command: huge-page malloc on (jaxtrade/hugepages.py), then `main`."""
    from jaxtrade.hugepages import reexec_with_hugepages

    reexec_with_hugepages()
    try:
        return main()
    except BrokenPipeError:  # `jaxtrade ... | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(entry())
