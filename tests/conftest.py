"""Test-suite wide settings: how `make test` spreads the tests over its workers.

`make test` runs pytest-xdist workers with `--dist loadgroup`: every test gets its module
as its group unless it names one, so a module's tests (and its module-scoped fixtures, the
trained runs several tests share) stay on one worker. A long test that shares nothing with
its neighbours names its own group so the workers can run such tests side by side.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import jaxtrade  # noqa: F401  (first: sets XLA:CPU flags before a test module starts JAX)

DURATIONS = Path(__file__).with_name("durations.txt")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
    _longest_groups_first(items)
    path = config.getoption("--rerun-unpassed")
    if path:  # see "rerun after a worker crash" below
        with open(path, encoding="utf-8") as handle:
            passed = {line.strip() for line in handle if line.strip()}
        config.hook.pytest_deselected(items=[i for i in items if i.nodeid in passed])
        items[:] = [i for i in items if i.nodeid not in passed]


def _longest_groups_first(items: list[pytest.Item]) -> None:
    """Order the groups by their worker seconds in tests/durations.txt (`make durations` writes
    it from the last `make test`), longest first, so that the long single-test groups start
    early and the short modules fill the gaps at the end (`make test` passes
    --no-loadscope-reorder, which keeps this order). Unlisted tests keep their place after."""
    if not DURATIONS.exists():
        return
    seconds: dict[str, float] = {}
    for line in DURATIONS.read_text(encoding="utf-8").splitlines():
        value, _, nodeid = line.partition(" ")
        if nodeid:
            seconds[nodeid] = float(value)
    group_seconds: dict[str, float] = {}
    for item in items:
        group = item.get_closest_marker("xdist_group").args[0]
        nodeid = item.nodeid
        if nodeid.rfind("@") > nodeid.rfind("]"):  # pytest-xdist's "@group" suffix
            nodeid = nodeid[:nodeid.rfind("@")]
        group_seconds[group] = group_seconds.get(group, 0.0) + seconds.get(nodeid, 0.0)
    order = {item.nodeid: i for i, item in enumerate(items)}
    items.sort(key=lambda item: (-group_seconds[item.get_closest_marker("xdist_group").args[0]],
                                 order[item.nodeid]))


# --------------------------------------------------------------- rerun after a worker crash
# XLA:CPU (jaxlib 0.10.2) now and then segfaults inside a compile or an executable load, which
# takes a whole xdist worker down with the tests queued on it. pytest-xdist cannot replace it
# under `--dist loadgroup` (a restarted worker leaves the run waiting for ever), so a run with
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
