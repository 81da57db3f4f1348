"""`jaxtrade cloud`: W&B sweep config, RunPod launch / partial failure / status / stop, the pod
agent, dry run, missing keys, and the SkyPilot task file.

RunPod is a fake GraphQL server on 127.0.0.1 (the runpod SDK posts to
$RUNPOD_API_BASE_URL/graphql); W&B sweep creation is replaced at `wandb.sweep`.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from jaxtrade.cli import main

REPO = Path(__file__).resolve().parents[1]
GPU = "NVIDIA H100 80GB HBM3"
WANDB_KEY = "wandb-secret-0123456789abcdef"
RUNPOD_KEY = "rpa_SECRET0123456789"


class FakeRunPod:
    """Answers the GraphQL calls the runpod SDK makes, and records them."""

    def __init__(self) -> None:
        self.calls: list[dict[str, str]] = []
        self.pods: dict[str, dict[str, Any]] = {}
        self.terminated: list[str] = []
        self.refuse_after: int | None = None  # refuse every pod after this many
        self.created = 0
        self.lock = threading.Lock()

    def kind(self, query: str) -> str:
        for kind in ("podFindAndDeployOnDemand", "podTerminate", "gpuTypes", "myPods"):
            if kind in query:
                return kind
        if "pod(input" in query:
            return "pod"
        return "myself" if "networkVolumes" in query else "unknown"

    def answer(self, query: str, auth: str) -> dict[str, Any]:
        kind = self.kind(query)
        with self.lock:
            self.calls.append({"kind": kind, "query": query, "auth": auth})
            pod_id = (re.findall(r'podId: "([^"]+)"', query) or [None])[0]
            if kind == "gpuTypes":
                wanted = re.search(r'id: "([^"]+)"', query).group(1)
                return {"data": {"gpuTypes": [{"id": wanted, "displayName": "H100",
                                               "memoryInGb": 80}] if wanted == GPU else []}}
            if kind == "podFindAndDeployOnDemand":
                if self.refuse_after is not None and self.created >= self.refuse_after:
                    return {"errors": [{"message": "There are no longer any instances "
                                                   "available with the requested "
                                                   "specifications."}]}
                self.created += 1
                new_id = f"pod{self.created:03d}"
                name = re.search(r'name: "([^"]+)"', query).group(1)
                self.pods[new_id] = {"id": new_id, "name": name, "desiredStatus": "RUNNING",
                                     "uptimeSeconds": 600, "costPerHr": 23.92}
                return {"data": {"podFindAndDeployOnDemand": {"id": new_id, "imageName": "x",
                                                              "env": [], "machineId": "m"}}}
            if kind == "podTerminate":
                self.pods.pop(pod_id, None)
                self.terminated.append(pod_id)
                return {"data": {"podTerminate": None}}
            if kind == "pod":
                return {"data": {"pod": self.pods.get(pod_id)}}
            if kind == "myPods":
                return {"data": {"myself": {"pods": list(self.pods.values())}}}
            if kind == "myself":
                return {"data": {"myself": {"id": "u", "pubKey": "", "networkVolumes": [
                    {"id": "vol123", "name": "ckpt", "size": 100, "dataCenterId": "EU-RO-1"}]}}}
            return {"errors": [{"message": f"fake server cannot answer {query[:60]!r}"}]}

    def created_pods(self) -> list[str]:
        return [c["query"] for c in self.calls if c["kind"] == "podFindAndDeployOnDemand"]


@pytest.fixture
def runpod_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRunPod]:
    fake = FakeRunPod()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            assert self.path == "/graphql"
            data = json.dumps(fake.answer(body["query"], self.headers.get("Authorization", "")))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data.encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("RUNPOD_API_BASE_URL", f"http://127.0.0.1:{server.server_port}")
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture
def wandb_sweeps(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    import wandb

    created: list[dict[str, Any]] = []

    def fake_sweep(sweep: dict[str, Any], entity: str | None = None,
                   project: str | None = None, prior_runs: Any = None) -> str:
        created.append({"config": sweep, "entity": entity, "project": project})
        return "abc123de"

    monkeypatch.setattr(wandb, "sweep", fake_sweep)
    return created


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", WANDB_KEY)
    monkeypatch.setenv("RUNPOD_API_KEY", RUNPOD_KEY)


def _field(query: str, name: str) -> str | None:
    found = re.search(rf'{name}: ("[^"]*"|\w+)', query)
    return found.group(1).strip('"') if found else None


SWEEP = ["agent.hparams.learning_rate=1e-4,3e-4", "env.num_envs=32,64", "data=synthetic"]


def test_launch_status_stop(runpod_api: FakeRunPod, wandb_sweeps: list, keys: None,
                            tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    records = tmp_path / "records"
    code = main(["cloud", "sweep", *SWEEP, "--pods", "2", "--gpus", "8", "--gpu-type", GPU,
                 "--entity", "team", "--network-volume", "vol123", "--records", str(records)])
    out = capsys.readouterr()
    assert code == 0, out.err

    # One W&B sweep: both axes (a vmapped hparam and a shape axis) are W&B grid parameters,
    # and each run is `jaxtrade train` with the fixed overrides and key=value parameters.
    assert len(wandb_sweeps) == 1
    sweep = wandb_sweeps[0]
    assert (sweep["entity"], sweep["project"]) == ("team", "jaxtrade")
    config = sweep["config"]
    assert config["method"] == "grid"
    assert config["parameters"] == {"agent.hparams.learning_rate": {"values": [1e-4, 3e-4]},
                                    "env.num_envs": {"values": [32, 64]}}
    assert config["metric"] == {"name": "validation_sharpe", "goal": "maximize"}
    assert config["command"][1:4] == ["jaxtrade", "train", "data=synthetic"]
    assert config["command"][-1] == "${args_no_hyphens}"
    assert "logger=wandb" in config["command"] and "logger.entity=team" in config["command"]

    # Two pods, each with 8 GPUs of the type, the default image, the volume, the keys, and
    # the agent command taking half of the 4 runs.
    pods = runpod_api.created_pods()
    assert len(pods) == 2
    from experiments.cloud import default_image

    for query in pods:
        assert _field(query, "gpuTypeId") == GPU and _field(query, "gpuCount") == "8"
        assert _field(query, "imageName") == default_image()
        assert _field(query, "networkVolumeId") == "vol123"
        assert _field(query, "volumeMountPath") == "/workspace"
        assert _field(query, "dataCenterId") == "EU-RO-1"  # the volume's data center
        assert _field(query, "dockerArgs") == (
            "jaxtrade cloud agent --sweep-id team/jaxtrade/abc123de --max-hours 4 "
            "--workdir /workspace/jaxtrade --count 2")
        assert f'key: "WANDB_API_KEY", value: "{WANDB_KEY}"' in query
        assert f'key: "RUNPOD_API_KEY", value: "{RUNPOD_KEY}"' in query
    assert {c["auth"] for c in runpod_api.calls} == {f"Bearer {RUNPOD_KEY}"}

    # The record names the pods; no secret is in it, in the output or in the W&B config.
    files = list(records.glob("*.json"))
    assert len(files) == 1
    record = json.loads(files[0].read_text())
    assert [p["id"] for p in record["pods"]] == ["pod001", "pod002"]
    assert record["sweep"] == "team/jaxtrade/abc123de"
    for secret in (WANDB_KEY, RUNPOD_KEY):
        assert secret not in files[0].read_text()
        assert secret not in out.out + out.err
        assert secret not in json.dumps(config)

    assert main(["cloud", "status", "--records", str(records)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"pod001\s+jaxtrade-abc123de-0\s+running", out)
    assert re.search(r"pod002\s+jaxtrade-abc123de-1\s+running", out)

    assert main(["cloud", "stop", record["launch_id"], "--records", str(records)]) == 0
    assert sorted(runpod_api.terminated) == ["pod001", "pod002"] and not runpod_api.pods
    record = json.loads(files[0].read_text())
    assert {p["status"] for p in record["pods"]} == {"terminated"}
    capsys.readouterr()
    calls = len(runpod_api.calls)
    assert main(["cloud", "status", "--records", str(records)]) == 0
    assert "pod001" in capsys.readouterr().out and len(runpod_api.calls) == calls
    assert main(["cloud", "stop", record["launch_id"], "--records", str(records)]) == 0
    assert "no pods left" in capsys.readouterr().out


def test_partial_failure_terminates_the_pods_created(
        runpod_api: FakeRunPod, wandb_sweeps: list, keys: None, tmp_path: Path,
        capsys: pytest.CaptureFixture) -> None:
    runpod_api.refuse_after = 2
    records = tmp_path / "records"
    code = main(["cloud", "sweep", *SWEEP, "--pods", "3", "--gpus", "8",
                 "--entity", "team", "--records", str(records)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and "jaxtrade-abc123de-2 was refused" in err
    assert "no longer any instances" in err and "terminated the 2 pods" in err
    assert sorted(runpod_api.terminated) == ["pod001", "pod002"] and not runpod_api.pods
    record = json.loads(next(records.glob("*.json")).read_text())
    assert [p["status"] for p in record["pods"]] == ["terminated", "terminated"]
    assert "refused" in record["failure"]


def test_partial_failure_keep(runpod_api: FakeRunPod, wandb_sweeps: list, keys: None,
                              tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    runpod_api.refuse_after = 1
    records = tmp_path / "records"
    code = main(["cloud", "sweep", *SWEEP, "--pods", "3", "--entity", "team",
                 "--on-partial-failure", "keep", "--records", str(records)])
    err = capsys.readouterr().err
    assert code == 0
    assert "kept the 1 pod" in err
    assert runpod_api.terminated == [] and list(runpod_api.pods) == ["pod001"]
    record = json.loads(next(records.glob("*.json")).read_text())
    assert [(p["id"], p["status"]) for p in record["pods"]] == [("pod001", "created")]


def test_unknown_gpu_type_launches_nothing(runpod_api: FakeRunPod, wandb_sweeps: list,
                                           keys: None, tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    code = main(["cloud", "sweep", *SWEEP, "--gpu-type", "NVIDIA H100 80GB",
                 "--entity", "team", "--records", str(tmp_path)])
    assert code == 1 and "No GPU found" in capsys.readouterr().err
    assert runpod_api.created_pods() == [] and not list(tmp_path.glob("*.json"))


@pytest.mark.parametrize("missing", ["WANDB_API_KEY", "RUNPOD_API_KEY"])
def test_missing_key_launches_nothing(runpod_api: FakeRunPod, wandb_sweeps: list, keys: None,
                                      missing: str, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture) -> None:
    monkeypatch.delenv(missing)
    code = main(["cloud", "sweep", *SWEEP, "--records", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and f"{missing} is not set" in err and "Traceback" not in err
    assert runpod_api.calls == [] and wandb_sweeps == [] and not list(tmp_path.iterdir())


def test_dry_run_prints_the_plan_and_creates_nothing(
        runpod_api: FakeRunPod, wandb_sweeps: list, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    code = main(["cloud", "sweep", "sweep=random_lr", "env.num_envs=32,64", "--pods", "2",
                 "--gpus", "8", "--max-hours", "3", "--image", "me/jaxtrade:dev", "--dry-run",
                 "--records", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert "2 x 8 NVIDIA H100 80GB HBM3" in out and "image me/jaxtrade:dev" in out
    assert "GPU hours:  at most 48 (2 pods x 8 GPUs x 3 h)" in out
    assert "method random, 16 runs" in out  # num_samples 8 x 2 values of env.num_envs
    assert "jaxtrade cloud agent --sweep-id" in out and "--count 8" in out
    assert "WANDB_API_KEY (MISSING" in out
    config = yaml.safe_load(out.split("W&B sweep config:\n", 1)[1])
    assert config["run_cap"] == 16
    assert config["parameters"]["agent.hparams.learning_rate"] == {
        "distribution": "log_uniform_values", "min": 1e-5, "max": 1e-3}
    assert config["parameters"]["agent.hparams.ent_coef"]["distribution"] == "uniform"
    assert runpod_api.calls == [] and wandb_sweeps == [] and not list(tmp_path.iterdir())


def test_attach_to_existing_sweep(runpod_api: FakeRunPod, wandb_sweeps: list, keys: None,
                                  tmp_path: Path) -> None:
    code = main(["cloud", "sweep", *SWEEP, "--sweep-id", "team/proj/zz99", "--records",
                 str(tmp_path)])
    assert code == 0 and wandb_sweeps == []
    (query,) = runpod_api.created_pods()
    assert _field(query, "dockerArgs") == ("jaxtrade cloud agent --sweep-id team/proj/zz99 "
                                           "--max-hours 4 --workdir /workspace/jaxtrade")


@pytest.mark.parametrize("argv, message", [
    (["run_dir=runs/x", "seed=0,1"], "run_dir is not allowed"),
    (["train.num_seeds=2", "seed=0,1"], "train.num_seeds must be 1"),
    (["seed=0,1", "--method", "bayes"], "needs --run-cap"),
    (["data=synthetic"], "the sweep has no axes"),
    (["env.num_envs=32,6O"], "env.num_envs"),
    (["seed=0,1", "--sweep-id", "not-a-path"], "ENTITY/PROJECT/ID"),
])
def test_bad_sweeps_are_one_line_errors(argv: list[str], message: str, wandb_sweeps: list,
                                        capsys: pytest.CaptureFixture) -> None:
    assert main(["cloud", "sweep", *argv, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_help(capsys: pytest.CaptureFixture) -> None:
    assert main(["cloud", "--help"]) == 0
    assert "status" in capsys.readouterr().out
    for sub in ("sweep", "status", "stop", "agent"):
        assert main(["cloud", sub, "--help"]) == 0
        assert f"jaxtrade cloud {sub}" in capsys.readouterr().out
    assert main(["--help"]) == 0 and "cloud" in capsys.readouterr().out


# ------------------------------------------------------------------------ the pod side


def _fake_wandb(tmp_path: Path, body: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "wandb"
    script.write_text(f'#!/bin/sh\necho "$PWD $@ cache=$JAXTRADE_CACHE_DIR" > '
                      f'{tmp_path}/agent_args\n{body}\n')
    script.chmod(0o755)
    return bin_dir


def test_agent_runs_the_sweep_then_terminates_its_pod(
        runpod_api: FakeRunPod, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{_fake_wandb(tmp_path, 'exit 0')}:{Path('/usr/bin')}:/bin")
    monkeypatch.setenv("RUNPOD_POD_ID", "pod777")
    monkeypatch.setenv("RUNPOD_API_KEY", RUNPOD_KEY)
    monkeypatch.delenv("JAXTRADE_CACHE_DIR", raising=False)
    work = tmp_path / "volume"
    code = main(["cloud", "agent", "--sweep-id", "team/proj/zz99", "--count", "3",
                 "--max-hours", "1", "--workdir", str(work)])
    assert code == 0
    cwd, *args = (tmp_path / "agent_args").read_text().split()
    assert cwd == str(work / "sweeps" / "zz99" / "pod777")
    assert args == ["agent", "--count", "3", "team/proj/zz99", f"cache={work / 'cache'}"]
    assert runpod_api.terminated == ["pod777"]


def test_agent_stops_at_the_deadline_and_terminates(
        runpod_api: FakeRunPod, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{_fake_wandb(tmp_path, 'sleep 60')}:/usr/bin:/bin")
    monkeypatch.setenv("RUNPOD_POD_ID", "pod778")
    monkeypatch.setenv("RUNPOD_API_KEY", RUNPOD_KEY)
    import time

    start = time.perf_counter()
    code = main(["cloud", "agent", "--sweep-id", "team/proj/zz99", "--max-hours", "0.0003",
                 "--workdir", str(tmp_path / "volume")])
    assert code == 124 and time.perf_counter() - start < 20
    assert runpod_api.terminated == ["pod778"]


def test_agent_off_runpod_terminates_nothing(runpod_api: FakeRunPod, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{_fake_wandb(tmp_path, 'exit 3')}:/usr/bin:/bin")
    monkeypatch.delenv("RUNPOD_POD_ID", raising=False)
    code = main(["cloud", "agent", "--sweep-id", "a/b/c", "--max-hours", "1", "--no-terminate",
                 "--workdir", str(tmp_path / "w")])
    assert code == 3 and runpod_api.calls == []


# ------------------------------------------------------------------------ SkyPilot


SKY_TOP_LEVEL = {"name", "workdir", "event_callback", "num_nodes", "resources", "file_mounts",
                 "service", "setup", "run", "envs", "secrets", "volumes", "config",
                 "inputs", "outputs", "experimental"}
SKY_RESOURCES = {"cloud", "region", "zone", "infra", "cpus", "memory", "accelerators",
                 "instance_type", "use_spot", "job_recovery", "disk_size", "disk_tier",
                 "ports", "image_id", "labels", "autostop", "any_of", "ordered",
                 "network_tier", "volumes"}


def test_skypilot_task_runs_the_same_agent() -> None:
    task = yaml.safe_load((REPO / "scripts" / "cloud" / "sweep.sky.yaml").read_text())
    assert set(task) <= SKY_TOP_LEVEL
    assert set(task["resources"]) <= SKY_RESOURCES
    from experiments.cloud import default_image

    assert task["resources"]["image_id"] == f"docker:{default_image()}"
    assert re.fullmatch(r"H100:\d+", task["resources"]["accelerators"])
    # Keys come from the launching shell (`--secret NAME`), never from the file.
    assert task["secrets"] == {"WANDB_API_KEY": None}
    assert set(task["envs"]) == {"SWEEP_ID", "AGENT_COUNT", "MAX_HOURS"}
    run = task["run"]
    assert "jaxtrade cloud agent" in run and "--no-terminate" in run
    for var in task["envs"]:
        assert f"${var}" in run or f"${{{var}}}" in run
    assert isinstance(task["file_mounts"], dict)
