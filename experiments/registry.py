"""`jaxtrade <command>` -> entry point. Each takes its argv (after the command) -> exit code."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from jaxtrade.errors import JaxTradeError


class MissingFeature(JaxTradeError):
    """A command whose implementation is not installed in this build."""

    exit_code = 2


def _call(target: Callable[[list[str]], int | None], argv: list[str]) -> int:
    # argparse-based entry points exit on --help or a usage error: turn that into a code.
    try:
        return int(target(argv) or 0)
    except SystemExit as done:
        if isinstance(done.code, str):
            raise MissingFeature(done.code) from None
        return int(done.code or 0)


def _lazy(module: str, function: str = "main") -> Callable[[list[str]], int]:
    # Import on call: `jaxtrade data list` must not pay for importing the agents.
    def run(argv: list[str]) -> int:
        return _call(getattr(importlib.import_module(module), function), argv)

    run.__name__ = f"{module}.{function}"
    return run


def _optional(module: str, function: str, what: str) -> Callable[[list[str]], int]:
    """Delegate to `module.function(argv)` if that module exists, else one clear line."""

    def run(argv: list[str]) -> int:
        try:
            target = getattr(importlib.import_module(module), function)
        except (ImportError, AttributeError):
            raise MissingFeature(f"`jaxtrade {what}` is not available in this build "
                                 f"({module}.{function} is missing)") from None
        return _call(target, argv)

    return run


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "train": _lazy("experiments.train"),
    "backtest": _lazy("experiments.backtest"),
    "sweep": _lazy("experiments.sweep"),
    "export": _lazy("experiments.export"),
    "retrain": _lazy("experiments.retrain"),
    "walkforward": _lazy("experiments.walkforward"),
    "live": _optional("jaxtrade.live.cli", "main", "live"),
    "data": _lazy("experiments.data"),
    "bench": _lazy("experiments.bench"),
    "cloud": _lazy("experiments.cloud"),
    "compare": _optional("jaxtrade.evaluate.compare", "main_compare", "compare"),
}
