"""Training progress: a rich progress bar on a terminal, plain lines otherwise (CI logs).

Shows env steps done / total, steps per second, ETA, the latest episode return and the
latest validation Sharpe. Updated at chunk boundaries only (the host never sees steps).
"""

from __future__ import annotations

import math
import sys
import time
from typing import IO, Any


def _fmt_duration(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _fmt_num(value: float | None, fmt: str = "{:.3f}") -> str:
    return "-" if value is None or not math.isfinite(value) else fmt.format(value)


class Progress:
    """`with Progress(total_steps) as p: p.update(steps, episode_return=..., ...)`."""

    def __init__(self, total_steps: int, *, description: str = "train", start_steps: int = 0,
                 stream: IO[str] | None = None, rich: bool | None = None,
                 enabled: bool = True) -> None:
        self.total_steps = int(total_steps)
        self.description = description
        self.stream = stream or sys.stdout
        self.enabled = enabled
        self.rich = (self.stream.isatty() if rich is None else rich) and enabled
        self._start_steps = int(start_steps)
        self._steps = int(start_steps)
        self._t0 = time.perf_counter()
        self._episode_return: float | None = None
        self._val_sharpe: float | None = None
        self._live: Any = None
        self._task: Any = None
        self._compile_t0: float | None = None

    def compiling(self, cached: bool = True) -> None:
        """Say that the first chunk compiles (tens of seconds of silence otherwise); the
        first `update` says how long it took, and steps/s count from there. `cached`: the
        persistent compilation cache is on (later runs of this shape load the program)."""
        self._compile_t0 = time.perf_counter()
        if self.enabled:
            self.print("compiling (first run of this shape; later runs use the cache)" if cached
                       else "compiling")

    # -------------------------------------------------------------- numbers
    @property
    def steps_per_second(self) -> float:
        elapsed = time.perf_counter() - self._t0
        done = self._steps - self._start_steps
        return done / elapsed if elapsed > 0 and done > 0 else float("nan")

    @property
    def eta_seconds(self) -> float:
        rate = self.steps_per_second
        return (self.total_steps - self._steps) / rate if rate > 0 else float("nan")

    def line(self) -> str:
        pct = 100.0 * self._steps / max(self.total_steps, 1)
        return (
            f"{self.description}: steps {self._steps}/{self.total_steps} ({pct:.0f}%) | "
            f"{_fmt_num(self.steps_per_second, '{:,.0f}')} steps/s | "
            f"ETA {_fmt_duration(self.eta_seconds)} | "
            f"return {_fmt_num(self._episode_return, '{:.4g}')} | "
            f"val Sharpe {_fmt_num(self._val_sharpe, '{:.3f}')}"
        )

    # -------------------------------------------------------------- display
    def __enter__(self) -> Progress:
        if self.rich:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._live = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} steps/s"),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("return {task.fields[ret]}  val Sharpe {task.fields[sharpe]}"),
                console=Console(file=self.stream),
                transient=False,
            )
            self._live.__enter__()
            self._task = self._live.add_task(
                self.description, total=self.total_steps, completed=self._steps,
                rate="-", ret="-", sharpe="-",
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None

    def print(self, text: str) -> None:
        """Print a message without breaking the progress display."""
        if self._live is not None:
            self._live.console.print(text, highlight=False, markup=False)
        else:
            print(text, file=self.stream, flush=True)

    def update(self, steps: int, *, episode_return: float | None = None,
               validation_sharpe: float | None = None) -> None:
        if self._compile_t0 is not None:
            now = time.perf_counter()
            if self.enabled:
                self.print(f"compiled and ran the first chunk in {now - self._compile_t0:.1f} s")
            # The rate and ETA are of training, not of compiling.
            self._compile_t0, self._t0, self._start_steps = None, now, int(steps)
        self._steps = int(steps)
        if episode_return is not None:
            self._episode_return = float(episode_return)
        if validation_sharpe is not None:
            self._val_sharpe = float(validation_sharpe)
        if not self.enabled:
            return
        if self._live is not None:
            self._live.update(
                self._task, completed=self._steps,
                rate=_fmt_num(self.steps_per_second, "{:,.0f}"),
                ret=_fmt_num(self._episode_return, "{:.4g}"),
                sharpe=_fmt_num(self._val_sharpe, "{:.3f}"),
            )
        else:
            print(self.line(), file=self.stream, flush=True)
