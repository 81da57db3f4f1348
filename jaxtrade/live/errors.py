"""Errors of the live runner (standard library only, so a bundle carries them without jaxtrade)."""

from __future__ import annotations


class BundleError(Exception):
    """A bundle that cannot be trusted or run: tampered weights, bad manifest, unknown network."""

    exit_code = 2


class BarRejected(ValueError):
    """One input bar is unusable; `reason` is logged and the runner goes on with the next bar."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)
