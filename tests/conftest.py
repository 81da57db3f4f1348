"""Test-suite wide settings: how `make test` spreads the tests over its workers.

`make test` runs pytest-xdist workers with `--dist loadgroup`: every test gets its module
as its group unless it names one, so a module's tests (and its module-scoped fixtures, the
trained runs several tests share) stay on one worker. A long test that shares nothing with
its neighbours names its own group so the workers can run such tests side by side.
"""

from __future__ import annotations

import pytest

import jaxtrade  # noqa: F401  (first: sets XLA:CPU flags before a test module starts JAX)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
