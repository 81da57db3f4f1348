"""One exception hierarchy for every user-facing failure.

The CLI turns a `JaxTradeError` into one line on stderr and a non-zero exit code
(`exit_code`: 2 for user mistakes such as bad data or config, 1 for internal failures).
"""

from __future__ import annotations


class JaxTradeError(Exception):
    """Base of every error jaxtrade raises on purpose."""

    exit_code: int = 1


class DataError(JaxTradeError):
    """Bad or unusable market data: names the file, the row and the problem."""

    exit_code = 2

    def __init__(self, problem: str, *, path: str | None = None, row: int | None = None) -> None:
        self.problem = problem
        self.path = path
        self.row = row
        where = []
        if path is not None:
            where.append(str(path))
        if row is not None:
            where.append(f"row {row}")
        prefix = (", ".join(where) + ": ") if where else ""
        super().__init__(prefix + problem)


class ConfigError(JaxTradeError):
    """A configuration key, value or combination that is not allowed."""

    exit_code = 2


class FeatureError(JaxTradeError):
    """An unknown feature name or bad feature parameters."""

    exit_code = 2


class TrainingError(JaxTradeError):
    """Training diverged (NaN/inf) or could not continue."""

    exit_code = 1


class CheckpointError(JaxTradeError):
    """A checkpoint is missing, incomplete or incompatible."""

    exit_code = 2


class ExportError(JaxTradeError):
    """A run cannot be exported (unsupported network, missing checkpoint)."""

    exit_code = 2
