"""What a cloud pod runs: `wandb agent` under a deadline, then the pod terminates itself.

RunPod restarts a container whose command exits, so ending the pod is the agent's job: when
the W&B agent has run its runs (or the deadline passes and it is stopped), the pod asks the
RunPod API to terminate itself (`RUNPOD_POD_ID` is set by RunPod inside every pod). Each pod
works in its own folder on the mounted volume, with jaxtrade's cache (the JAX compilation
cache) beside it, so checkpoints and compiled programs outlive the pod.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from jaxtrade.cloud import CloudError
from jaxtrade.cloud.runpod_pods import _message, runpod_session

STOP_GRACE_S = 60.0  # a stopped run gets this long to write its checkpoint


def agent_command(sweep_path: str, count: int | None) -> list[str]:
    return ["wandb", "agent", *(["--count", str(count)] if count else []), sweep_path]


def run_agent(sweep_path: str, count: int | None, max_hours: float, workdir: Path,
              terminate: bool = True, print_fn: Callable[[str], None] = print,
              retry_delays_s: Sequence[float] = (5, 15, 30, 60, 120)) -> int:
    """Run the sweep's agent in `workdir`; returns its exit code (124 when time ran out)."""
    if shutil.which("wandb") is None:
        raise CloudError("the `wandb` command is not on PATH (pip install wandb)")
    pod_id = os.environ.get("RUNPOD_POD_ID")
    folder = workdir / "sweeps" / sweep_path.rsplit("/", 1)[-1] / (pod_id or socket.gethostname())
    folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("JAXTRADE_CACHE_DIR", str(workdir / "cache"))
    command = agent_command(sweep_path, count)
    print_fn(f"{' '.join(command)} in {folder} for at most {max_hours:g} h")
    # Its own process group, so the deadline stops the agent and the run it started.
    proc = subprocess.Popen(command, cwd=folder, env=env, start_new_session=True)
    try:
        code = proc.wait(timeout=max_hours * 3600.0)
    except subprocess.TimeoutExpired:
        print_fn(f"--max-hours {max_hours:g} reached: stopping the agent")
        _stop_group(proc)
        code = 124
    finally:
        if proc.poll() is None:  # interrupted: do not leave the agent behind
            _stop_group(proc)
        if terminate and pod_id:
            _terminate_self(pod_id, print_fn, retry_delays_s)
    return code


def _stop_group(proc: subprocess.Popen) -> None:
    for sig, wait_s in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _terminate_self(pod_id: str, print_fn: Callable[[str], None],
                    retry_delays_s: Sequence[float]) -> None:
    key = os.environ.get("RUNPOD_API_KEY", "")
    if not key:
        print_fn(f"RUNPOD_API_KEY is not set in the pod: pod {pod_id} cannot end itself; run "
                 "`jaxtrade cloud stop` where you launched it")
        return
    last = ""
    for delay in [0.0, *retry_delays_s]:
        time.sleep(delay)
        try:
            with runpod_session(key) as runpod:
                runpod.terminate_pod(pod_id)
            print_fn(f"terminated pod {pod_id}")
            return
        except Exception as err:  # noqa: BLE001 (network hiccups: try again)
            last = _message(err)
    print_fn(f"could not terminate pod {pod_id} ({last}); run `jaxtrade cloud stop` where you "
             "launched it")
