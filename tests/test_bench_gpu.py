"""scripts/bench_gpu.sh: --help, refusing to run without a GPU, and the JSON its collector
writes from the parts (headline figures, goals, failed parts kept with their log)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "bench_gpu.sh"


def test_help() -> None:
    result = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0 and "--cpu-smoke" in result.stdout


def test_unknown_option_is_a_usage_error() -> None:
    result = subprocess.run(["bash", str(SCRIPT), "--fast"], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2 and "unknown option --fast" in result.stderr


def test_without_a_gpu_it_says_so(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHON=sys.executable)
    result = subprocess.run(["bash", str(SCRIPT), "--out", str(tmp_path / "x.json")],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2 and "JAX sees no GPU" in result.stderr
    assert "--cpu-smoke" in result.stderr and not (tmp_path / "x.json").exists()


def _part(folder: Path, name: str, rc: int, figures: dict | None, log: str) -> None:
    (folder / f"{name}.status").write_text(json.dumps({"rc": rc, "seconds": 1.5,
                                                        "limit_s": 60}))
    (folder / f"{name}.log").write_text(log)
    if figures is not None:
        (folder / f"{name}.json").write_text(json.dumps(figures))


def test_collector_headlines_and_goals(tmp_path: Path) -> None:
    parts = tmp_path / "parts"
    parts.mkdir()
    device = {"platform": "gpu", "kind": "NVIDIA H200", "count": 1}
    _part(parts, "env", 0, {"device": device, "default": [
        {"envs": 4096, "env_steps_per_s": 5e7}, {"envs": 65536, "env_steps_per_s": 2.5e8}]},
        "table\n")
    _part(parts, "train", 0, {"device": device,
                              "like_for_like": {"env_steps_per_s": 1e6},
                              "seeds_wall_s": {"1": 2.0, "16": 2.2, "64": 5.0},
                              "default": {"num_envs": 4096, "env_steps_per_s": 6e6}}, "")
    _part(parts, "sweep_eval", 0, None,
          "jaxtrade evaluation phase, cold: 12.50 s (walks 3 s)\n"
          "jaxtrade evaluation phase, warm: 1.25 s (walks 0.3 s)\n")
    _part(parts, "agent_dqn", 0, {"default": {"env_steps_per_s": 3e6}}, "")
    _part(parts, "agent_sac", 1, None, "Traceback ...\nConfigError: agent='sac' is not allowed\n")
    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_bench_collect.py"),
                    "--parts", str(parts), "--out", str(out), "--mode", "gpu"],
                   check=True, capture_output=True, timeout=60)
    result = json.loads(out.read_text())
    figures = result["figures"]
    assert figures["env_steps_per_s_65536"] == 2.5e8 and figures["env_envs"] == 65536
    assert figures["ppo_env_steps_per_s_4096"] == 6e6
    assert figures["seeds_64_over_1"] == 2.5
    assert figures["agents_env_steps_per_s"] == {"dqn": 3e6, "sac": None}
    assert figures["sweep_evaluation_s"] == {"cold": 12.5, "warm": 1.25}
    goals = result["goals"]
    assert goals["env_steps_per_s_65536"]["met"] is True
    assert goals["ppo_env_steps_per_s_4096"]["met"] is True
    assert goals["seeds_64_over_1"]["met"] is False
    assert result["machine"]["jax_device"] == device
    assert result["parts"]["agent_sac"]["rc"] == 1
    assert "is not allowed" in result["parts"]["agent_sac"]["log_tail"][-1]
