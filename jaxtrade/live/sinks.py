"""Where decisions go: one JSON object per bar to stdout, a file, or a webhook.

A sink receives the decision dict the runner built (timestamp, target_position, probabilities,
confidence, latency, ...). `StdoutSink` flushes every line, because a printed line is the
runner's acknowledgement that the bar is safely in the replay store. The webhook URL is read
from an environment variable so that no secret ends up in a command line or a bundle; its
alerts wait in an outbox (the replay store when there is one) until the receiver took them.
"""

from __future__ import annotations

import abc
import collections
import http.client
import json
import os
import sys
import time
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

    def alert(self, payload: dict) -> None:  # noqa: B027 - sinks without an alert channel
        """Deliver one alert (drift, degradation, a refused bundle). Only webhooks send them:
        stdout and files carry decisions alone (the runner logs every alert to stderr and
        stores it in the replay store's `events`)."""


def decision_line(decision: dict) -> str:
    """A decision as one line of strict JSON (what every sink writes)."""
    return json.dumps(decision, separators=(",", ":"), allow_nan=False)


class StdoutSink(Sink):
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout

    def emit(self, decision: dict) -> None:
        self.stream.write(decision_line(decision) + "\n")
        self.stream.flush()


class FileSink(Sink):
    """Appends JSON lines to a file (flushed per line)."""

    def __init__(self, path: str | Path) -> None:
        self.handle = Path(path).open("a", encoding="utf-8")

    def emit(self, decision: dict) -> None:
        self.handle.write(decision_line(decision) + "\n")
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def _target(decision: dict) -> object:
    """What a webhook compares to send changes only: the target weight, or the targets
    {symbol: weight} of a multi-asset decision."""
    return decision.get("target_position", decision.get("target_positions"))


class WebhookSink(Sink):
    """POSTs decisions as JSON to the URL held in an environment variable, in order, until
    each is delivered.

    `only_on_change` sends only when the target position changes (alerts, not a firehose).
    An alert goes into an outbox first (the replay store's `alerts` table when a store is
    given, so alerts still owed survive a restart; memory otherwise) and leaves it when the
    receiver answered 2xx. A failed delivery is retried after 0.5 s, doubling up to
    `max_backoff_seconds`; alerts are delivered strictly in order, so a newer one waits for an
    older one. Each `emit` waits at most `wait_seconds` for deliveries and `close` at most
    `close_wait_seconds`, so an unreachable receiver slows the runner by a bounded amount and
    never stops it; failures are reported through `on_error`. Delivery is at least once: a
    receiver that applied an alert whose answer was lost gets it again.
    """

    def __init__(
        self,
        env_var: str = "JAXTRADE_WEBHOOK_URL",
        *,
        only_on_change: bool = True,
        timeout_seconds: float = 5.0,
        on_error=None,
        store=None,
        first_backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 60.0,
        wait_seconds: float = 2.0,
        close_wait_seconds: float = 10.0,
        sleep=time.sleep,
        clock=time.monotonic,
    ) -> None:
        url = os.environ.get(env_var, "")
        if not url.startswith(("http://", "https://")):
            raise BundleError(f"webhook sink: environment variable {env_var} holds no http(s) URL")
        self.url = url
        self.only_on_change = only_on_change
        self.timeout_seconds = timeout_seconds
        self.on_error = on_error or (lambda message: print(message, file=sys.stderr))
        self.store = store
        self.first_backoff_seconds = first_backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.wait_seconds = wait_seconds
        self.close_wait_seconds = close_wait_seconds
        self.sleep, self.clock = sleep, clock
        self._memory: collections.deque[tuple[int, str]] = collections.deque()
        self._next_id = 0
        self._failures = 0
        self._retry_at = 0.0
        last = store.last_alert() if store is not None else None
        self._last_target: object = None if last is None else _target(json.loads(last))

    # --- the outbox ---------------------------------------------------------------------------
    def _enqueue(self, payload: str) -> None:
        if self.store is not None:
            self.store.add_alert(payload)
        else:
            self._next_id += 1
            self._memory.append((self._next_id, payload))

    def _pending(self) -> list[tuple[int, str]]:
        return self.store.pending_alerts() if self.store is not None else list(self._memory)

    def _delivered(self, alert_id: int) -> None:
        if self.store is not None:
            self.store.alert_delivered(alert_id)
        else:
            self._memory.popleft()

    def pending(self) -> int:
        """How many alerts wait for delivery."""
        return len(self._pending())

    def _post(self, payload: str) -> str | None:
        """None when delivered, else why not."""
        request = urllib.request.Request(
            self.url,
            data=payload.encode("utf-8"),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                response.read()
        except (OSError, http.client.HTTPException) as err:  # HTTPError (4xx/5xx) is an OSError
            return str(err)
        return None

    def flush(self, wait_seconds: float) -> int:
        """Delivers waiting alerts in order, retrying with backoff for up to `wait_seconds`;
        returns how many still wait."""
        deadline = self.clock() + wait_seconds
        pending = self._pending()
        while pending:
            delay = self._retry_at - self.clock()
            if delay > 0:
                if self.clock() + delay > deadline:
                    break
                self.sleep(delay)
            alert_id, payload = pending[0]
            error = self._post(payload)
            if error is None:
                self._delivered(alert_id)
                pending.pop(0)
                self._failures, self._retry_at = 0, 0.0
                continue
            self._failures += 1
            backoff = min(self.first_backoff_seconds * 2 ** (self._failures - 1),
                          self.max_backoff_seconds)
            self._retry_at = self.clock() + backoff
            self.on_error(f"webhook sink: delivery failed ({error}); {len(pending)} alert(s) "
                          f"waiting, next try in {backoff:.1f} s")
        return len(pending)

    def emit(self, decision: dict) -> None:
        target = _target(decision)
        if not (self.only_on_change and target == self._last_target):
            self._last_target = target
            self._enqueue(decision_line(decision))
        self.flush(self.wait_seconds)

    def alert(self, payload: dict) -> None:
        """Always sent (whatever `only_on_change`), in order with the decisions."""
        self._enqueue(decision_line({"alert": payload}))
        self.flush(self.wait_seconds)

    def close(self) -> None:
        left = self.flush(self.close_wait_seconds)
        if left:
            kept = "kept in the store for the next start" if self.store is not None else "lost"
            self.on_error(f"webhook sink: {left} alert(s) undelivered at exit, {kept}")


class MultiSink(Sink):
    def __init__(self, sinks: list[Sink]) -> None:
        self.sinks = sinks

    def emit(self, decision: dict) -> None:
        for sink in self.sinks:
            sink.emit(decision)

    def alert(self, payload: dict) -> None:
        for sink in self.sinks:
            sink.alert(payload)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
