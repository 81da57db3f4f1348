"""Where decisions go: one JSON object per bar to stdout, a file, or a webhook.

A sink receives the decision dict the runner built (timestamp, target_position, probabilities,
confidence, latency, ...). `StdoutSink` flushes every line, because a printed line is the
runner's acknowledgement that the bar is safely in the replay store. The webhook URL is read
from an environment variable so that no secret ends up in a command line or a bundle.
"""

from __future__ import annotations

import abc
import json
import os
import sys
import urllib.request
from pathlib import Path
from typing import TextIO

from .errors import BundleError


class Sink(abc.ABC):
    """Base class: `emit(decision)` once per bar, `close()` once at the end."""

    @abc.abstractmethod
    def emit(self, decision: dict) -> None:
        """Deliver one bar's decision (a JSON-able dict)."""

    def close(self) -> None:  # noqa: B027 - optional hook: most sinks hold nothing to release
        """Called once when the runner stops."""


def _line(decision: dict) -> str:
    return json.dumps(decision, separators=(",", ":"), allow_nan=False)


class StdoutSink(Sink):
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout

    def emit(self, decision: dict) -> None:
        self.stream.write(_line(decision) + "\n")
        self.stream.flush()


class FileSink(Sink):
    """Appends JSON lines to a file (flushed per line)."""

    def __init__(self, path: str | Path) -> None:
        self.handle = Path(path).open("a", encoding="utf-8")

    def emit(self, decision: dict) -> None:
        self.handle.write(_line(decision) + "\n")
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


class WebhookSink(Sink):
    """POSTs each decision as JSON to the URL held in an environment variable.

    `only_on_change` sends only when the target position changes (alerts, not a firehose).
    Delivery failures are reported through `on_error` and never stop the runner.
    """

    def __init__(
        self,
        env_var: str = "JAXTRADE_WEBHOOK_URL",
        *,
        only_on_change: bool = True,
        timeout_seconds: float = 5.0,
        on_error=None,
    ) -> None:
        url = os.environ.get(env_var, "")
        if not url.startswith(("http://", "https://")):
            raise BundleError(f"webhook sink: environment variable {env_var} holds no http(s) URL")
        self.url = url
        self.only_on_change = only_on_change
        self.timeout_seconds = timeout_seconds
        self.on_error = on_error or (lambda message: print(message, file=sys.stderr))
        self._last_target: object = None

    def emit(self, decision: dict) -> None:
        target = decision.get("target_position")
        if self.only_on_change and target == self._last_target:
            return
        self._last_target = target
        request = urllib.request.Request(
            self.url,
            data=_line(decision).encode("utf-8"),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                response.read()
        except OSError as err:
            self.on_error(f"webhook sink: delivery failed: {err}")


class MultiSink(Sink):
    def __init__(self, sinks: list[Sink]) -> None:
        self.sinks = sinks

    def emit(self, decision: dict) -> None:
        for sink in self.sinks:
            sink.emit(decision)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
