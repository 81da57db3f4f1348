"""Trained runs shared by test modules: the same `jaxtrade train` trained once per test session.

Several modules check different things about the same small run (the ensemble's report, its
causality, its export). `shared_run` trains it once: the first module to ask trains it into a
folder beside the workers' own temporary folders (or in $JAXTRADE_SHARED_RUNS, which
`make test` sets for all its runs), under a file lock, and every later caller,
on any pytest-xdist worker, waits for that lock and reads the same run. A shared run is
read-only for its users: `jaxtrade backtest data.path=NEW` writes under RUN/backtests/<NEW's
name>/, so give each test's bars a name of its own; a test that changes the run copies it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def _shared_root(factory: pytest.TempPathFactory) -> Path:
    # `make test` names a folder of its own, kept over its reruns after a worker crash, so
    # that a rerun reads the runs trained before the crash instead of training them again.
    fixed = os.environ.get("JAXTRADE_SHARED_RUNS")
    if fixed:
        Path(fixed).mkdir(parents=True, exist_ok=True)
        return Path(fixed)
    base = factory.getbasetemp()
    # under pytest-xdist each worker's base is <session>/popen-gwN: share <session>
    return base.parent if base.name.startswith("popen-gw") else base


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def shared_run(factory: pytest.TempPathFactory, name: str, args: list[str],
               write_data: Callable[[Path], list[str]]) -> tuple[Path, Path]:
    """(run_dir, folder): `jaxtrade train *args *write_data(folder) run_dir=folder/run`,
    trained once per session for these `args` and `name`. `write_data(folder)` writes the
    bars into `folder` and returns the arguments that name them (e.g. `data.path=...`)."""
    from jaxtrade.cli import main

    digest = hashlib.sha1("\0".join([name, *args]).encode()).hexdigest()[:12]
    folder = _shared_root(factory) / f"shared-{name}-{digest}"
    with _locked(folder.with_suffix(".lock")):
        if not (folder / "trained").exists():
            shutil.rmtree(folder, ignore_errors=True)  # a half-trained run of a crashed worker
            folder.mkdir(parents=True)
            data_args = write_data(folder)
            with contextlib.redirect_stdout(io.StringIO()):
                assert main([*args, *data_args, f"run_dir={folder / 'run'}"]) == 0
            (folder / "trained").write_text("\n".join(args))
    return folder / "run", folder
