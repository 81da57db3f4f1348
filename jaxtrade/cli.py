"""`jaxtrade` command line: dispatches subcommands, turns jaxtrade errors into one line."""

from __future__ import annotations

import sys

from jaxtrade.errors import JaxTradeError

USAGE = """usage: jaxtrade <command> [options] [key=value ...]

commands:
  train      train an agent (Hydra overrides, e.g. agent=ppo env.num_envs=1024)
  backtest   evaluate a run directory out of sample against baselines
  sweep      hyperparameter sweep (numeric axes vmapped in one program)
  export     export a run to a numpy-only bundle
  live       run an exported bundle on a bar source (paper trading)
  data       list / inspect / validate / convert datasets, list features
  bench      run the benchmark scripts
  compare    compare run directories

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


if __name__ == "__main__":
    sys.exit(main())
