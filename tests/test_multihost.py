"""Two JAX processes on 127.0.0.1 (one CPU device each, gloo collectives) train the points of
one run and log what one process logs; only process 0 writes the run directory, and a
two-process resume continues the run exactly."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
from test_cli import TINY

from jaxtrade.logging import read_metrics

ROOT = Path(__file__).resolve().parents[1]
RUN = [*TINY, "logger=none", "train.report=false", "train.num_seeds=2"]
# A process whose peer died waits for JAX's heartbeat timeout; the test does not.
TIMEOUT_S = 400

SCRIPT = """
import sys
sys.path.insert(0, "tests")
from jaxtrade.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(args: list[str], command: str = "train") -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    return subprocess.Popen([sys.executable, "-c", SCRIPT, command, *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _two_processes(args: list[str], command: str = "train") -> list[subprocess.Popen]:
    port = _free_port()
    common = [*args, f"train.distributed.coordinator_address=127.0.0.1:{port}",
              "train.distributed.num_processes=2", "train.distributed.initialization_timeout_s=120"]
    return [_start([*common, f"train.distributed.process_id={i}"], command) for i in (0, 1)]


def _wait(procs: list[subprocess.Popen]) -> list[str]:
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=TIMEOUT_S)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-3000:]
    return outputs


def _rows(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("time_s", "steps_per_second")}
            for r in read_metrics(run_dir)]


def test_two_processes_train_like_one(tmp_path: Path) -> None:
    single, multi = tmp_path / "single", tmp_path / "multi"
    # The reference (one process, one device) runs beside the first two-process half.
    procs = [_start([*RUN, f"run_dir={single}"]),
             *_two_processes([*RUN, f"run_dir={multi}", "train.stop_after_updates=2"])]
    outputs = _wait(procs)
    assert "on 2 devices" in outputs[1] and "training" not in outputs[2]
    assert sorted(p.name for p in (multi / "checkpoints").iterdir() if p.name.isdigit()) \
        == ["2"]
    _wait(_two_processes([*RUN, f"run_dir={multi}", "resume=true"]))

    expected, got = _rows(single), _rows(multi)
    assert [(r["point"], r["update"]) for r in got] == [(r["point"], r["update"])
                                                       for r in expected] == [
        (0, 2), (1, 2), (0, 4), (1, 4)]
    for want, have in zip(expected, got):
        assert sorted(want) == sorted(have)
        for key, value in want.items():
            np.testing.assert_allclose(have[key], value, rtol=1e-4, atol=1e-6, err_msg=key)
    meta = json.loads((multi / "checkpoints" / "4" / "metadata" / "metadata").read_text())
    mesh = meta["run_info"]["device"]["mesh"]
    assert mesh["devices"] == 2 and mesh["process_count"] == 2 and mesh["shape"] == {
        "points": 2, "envs": 1}


def test_a_vmapped_sweep_over_two_processes_ranks_what_one_process_ranks(tmp_path: Path
                                                                          ) -> None:
    sweep = [*TINY, "logger=none", "train.report=false",
             "agent.hparams.learning_rate=1e-4,1e-3"]
    single, multi = tmp_path / "single", tmp_path / "multi"
    outputs = _wait([_start([*sweep, f"run_dir={single}"], "sweep"),
                     *_two_processes([*sweep, f"run_dir={multi}"], "sweep")])
    assert "sweep: 2 trials" in outputs[1] and "sweep: 2 trials" not in outputs[2]
    assert "on 2 devices" in outputs[1]
    want = json.loads((single / "sweep_summary.json").read_text())["trials"]
    got = json.loads((multi / "sweep_summary.json").read_text())["trials"]
    assert [t["trial"] for t in got] == [t["trial"] for t in want] and len(got) == 2
    for a, b in zip(want, got):
        assert a["agent.hparams.learning_rate"] == b["agent.hparams.learning_rate"]
        np.testing.assert_allclose(b["validation_sharpe"], a["validation_sharpe"], rtol=1e-4)


def test_importing_the_agents_leaves_jax_unstarted() -> None:
    """Config registration imports `agents` before jax.distributed starts; nothing it imports
    may start JAX's backend (gymnax does, so agents import envs lazily)."""
    code = ("import agents\nfrom jax._src import xla_bridge\n"
            "print(xla_bridge.backends_are_initialized())")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"}, check=True)
    assert out.stdout.strip() == "False", out.stdout + out.stderr
