"""Test-suite wide settings: how `make test` spreads the tests over its workers.

`make test` runs pytest-xdist workers with `--dist loadfile`: a module's tests (and its
module-scoped fixtures, the trained runs several tests share) stay on one worker. Long proofs
that share nothing live in modules of their own so the workers can run them side by side.
(Not `--dist loadgroup` with a group per module: pytest-xdist 3.8 marks a group by editing
`item._nodeid`, which pytest 9 no longer reads, so every test became its own group and a
module's fixtures were built again on each worker its tests landed on.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

import jaxtrade  # noqa: F401  (first: sets XLA:CPU flags before a test module starts JAX)

DURATIONS = Path(__file__).with_name("durations.txt")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _longest_modules_first(items)
    path = config.getoption("--rerun-unpassed")
    if path:  # see "rerun after a worker crash" below
        with open(path, encoding="utf-8") as handle:
            passed = {line.strip() for line in handle if line.strip()}
        config.hook.pytest_deselected(items=[i for i in items if i.nodeid in passed])
        items[:] = [i for i in items if i.nodeid not in passed]


def _module(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def _longest_modules_first(items: list[pytest.Item]) -> None:
    """Order the modules by their worker seconds in tests/durations.txt (`make durations`
    writes it from the last `make test`), longest first, so that the long learning proofs
    start early and the short modules fill the gaps at the end (`make test` passes
    --no-loadscope-reorder, which keeps this order). Unlisted modules keep their place after."""
    if not DURATIONS.exists():
        return
    seconds: dict[str, float] = {}
    for line in DURATIONS.read_text(encoding="utf-8").splitlines():
        value, _, nodeid = line.partition(" ")
        if nodeid:
            seconds[_module(nodeid)] = seconds.get(_module(nodeid), 0.0) + float(value)
    order = {item.nodeid: i for i, item in enumerate(items)}
    items.sort(key=lambda item: (-seconds.get(_module(item.nodeid), 0.0), order[item.nodeid]))


# --------------------------------------------------------------- rerun after a worker crash
# XLA:CPU (jaxlib 0.10.2) now and then segfaults inside a compile or an executable load, which
# takes a whole xdist worker down with the tests queued on it. pytest-xdist cannot replace it
# under its module schedulers (seen with loadgroup: a restarted worker leaves the run waiting
# for ever; loadfile is the same scheduler), so a run with
# `--max-worker-restart=0` stops as soon as a worker dies: the other workers finish the module
# they are on and take nothing new (otherwise the run would go on at half speed). `make test`
# then runs, in fresh workers, every test that did not pass (`--rerun-unpassed=FILE`); each run
# appends the tests that passed or were skipped to FILE (`--record-passed=FILE`).


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--record-passed", default=None,
                     help="append the node ids of tests that passed or were skipped to FILE")
    parser.addoption("--rerun-unpassed", default=None,
                     help="run only the tests whose node ids FILE does not list")
    parser.addoption("--record-durations", default=None,
                     help="append 'seconds phase node-id' of every test phase to FILE")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    config = _CONFIG.get("config")
    if config is None or hasattr(config, "workerinput"):  # the controller records, not workers
        return
    timings = config.getoption("--record-durations")
    if timings:
        with open(timings, "a", encoding="utf-8") as handle:
            handle.write(f"{report.duration:.2f} {report.when} {report.nodeid}\n")
    path = config.getoption("--record-passed")
    if not path:
        return
    done = (report.when == "call" and report.passed) or report.skipped
    if done:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(report.nodeid + "\n")



_CONFIG: dict[str, pytest.Config] = {}


def pytest_configure(config: pytest.Config) -> None:
    _CONFIG["config"] = config


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object | None) -> None:
    """A worker died: with restarts off, stop handing out modules before xdist re-queues the
    dead worker's ones (it would give the next module to a surviving worker first)."""
    config = _CONFIG.get("config")
    if error is None or config is None or str(config.getoption("maxworkerrestart", None)) != "0":
        return
    dsession = config.pluginmanager.getplugin("dsession")
    if dsession is not None:
        dsession.triggershutdown()
