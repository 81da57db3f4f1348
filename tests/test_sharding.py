"""Points sharded over devices (train.devices): the same config on 1 and 2 devices gives the
same metrics for PPO and DQN; padding, the mesh in run metadata, and device-count errors.

Two CPU devices are faked with XLA_FLAGS in a subprocess: XLA reads its flags when JAX
starts its backend, which this pytest process has done already.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from experiments import common
from jaxtrade import sharding
from jaxtrade.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]

TWO_DEVICES = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import jax, jax.numpy as jnp, numpy as np
    sys.path.insert(0, "tests")
    from test_cli import TINY
    from experiments import common
    from experiments.train import train
    from jaxtrade import sharding
    from jaxtrade.checkpoint import CheckpointManager
    from jaxtrade.errors import ConfigError
    from jaxtrade.logging import read_metrics

    assert jax.device_count() == 2
    out = Path(sys.argv[1])
    SKIP = {"time_s", "steps_per_second"}

    def rows(run_dir):
        return [{k: v for k, v in r.items() if k not in SKIP} for r in read_metrics(run_dir)]

    def same(a, b, what):
        assert [sorted(r) for r in a] == [sorted(r) for r in b] and a, what
        worst = 0.0
        for x, y in zip(a, b):
            for key in x:
                np.testing.assert_allclose(y[key], x[key], rtol=1e-4, atol=1e-6,
                                           err_msg=f"{what} {key}")
                if isinstance(x[key], float) and x[key]:
                    worst = max(worst, abs(y[key] - x[key]) / abs(x[key]))
        print(f"{what}: {len(a)} rows, largest relative difference {worst:.2e}")

    def run(name, args, devices):
        cfg = common.compose([*args, "logger=none", "train.report=false",
                              f"train.devices={devices}", f"run_dir={out / name}"])
        return train(cfg, print_fn=lambda _: None)

    PPO = [*TINY, "train.num_seeds=2"]
    DQN = ["experiment=smoke", "agent=dqn", "data.options.num_bars=400", "env.window_bars=16",
           "env.episode_bars=64", "network.hidden_sizes=[16,16]", "agent.learning_starts=256",
           "agent.updates_per_chunk=16", "train.total_steps=1024", "train.num_seeds=2",
           "train.checkpoint_every_updates=64", "train.eval_every_updates=64"]
    for agent, args in (("ppo", PPO), ("dqn", DQN)):
        one, two = run(agent + "1", args, 1), run(agent + "2", args, 2)
        same(rows(out / (agent + "1")), rows(out / (agent + "2")), agent + " 1 vs 2 devices")
        np.testing.assert_allclose(two.validation_sharpe, one.validation_sharpe, rtol=1e-4)
        with CheckpointManager(out / (agent + "2") / "checkpoints", read_only=True) as m:
            mesh = m.read_metadata(m.latest_step())["run_info"]["device"]["mesh"]
        assert mesh["devices"] == 2 and mesh["shape"] == {"points": 2, "envs": 1}, mesh
        assert mesh["axis_names"] == ["points", "envs"] and mesh["padding_points"] == 0, mesh
        # Each device holds one point of the final state.
        leaf = jax.tree_util.tree_leaves(two.loop.state)[0]
        assert len(leaf.sharding.device_set) == 2 and leaf.shape[0] == 2

    # One point, two devices: the env axis of the point is split (mesh 1 x 2) and the run
    # logs what one device logs; the replay agent also stops and resumes on the split mesh.
    def one_point(args):
        return [a for a in args if not a.startswith("train.num_seeds=")] + [
            "train.num_seeds=1"]
    for agent, args in (("ppo", one_point(PPO)), ("dqn", one_point(DQN))):
        one = run(agent + "_env1", args, 1)
        if agent == "dqn":
            run(agent + "_env2", [*args, "train.stop_after_updates=64"], 2)  # an eval point
            two = run(agent + "_env2", [*args, "resume=true"], 2)
        else:
            two = run(agent + "_env2", args, 2)
        same(rows(out / (agent + "_env1")), rows(out / (agent + "_env2")),
             agent + " 1 point, envs split over 2 devices")
        np.testing.assert_allclose(two.validation_sharpe, one.validation_sharpe, rtol=1e-4)
        with CheckpointManager(out / (agent + "_env2") / "checkpoints", read_only=True) as m:
            mesh = m.read_metadata(m.latest_step())["run_info"]["device"]["mesh"]
        assert mesh["shape"] == {"points": 1, "envs": 2} and mesh["devices"] == 2, mesh
        obs = two.loop.state.last_obs if agent == "ppo" else two.loop.state.runner.obs
        assert obs.sharding.spec[:2] == ("points", "envs"), obs.sharding
        assert len(obs.sharding.device_set) == 2 and len(obs.addressable_shards) == 2
        assert obs.addressable_shards[0].data.shape[1] == obs.shape[1] // 2
    # Without an env axis to split (num_envs None), one point stays on one device.
    assert sharding.point_mesh("auto", 1, None).mesh.devices.shape == (1, 1)
    assert sharding.mesh_shape(8, 3, 10) == (1, 2) and sharding.mesh_shape(8, 2, 64) == (2, 4)

    # Padding: 3 points on 2 devices (the last point repeated once), real points only out.
    mesh = sharding.point_mesh(2, 3)
    assert (mesh.padded_points, mesh.padding) == (4, 1)
    state = mesh.assemble(lambda i: {"w": jnp.full((2,), float(i)), "key": jax.random.key(i)})
    assert state["w"].shape == (4, 2) and len(state["w"].sharding.device_set) == 2
    assert np.asarray(state["w"])[:, 0].tolist() == [0, 1, 2, 2]
    assert mesh.to_local(state)["w"].shape == (3, 2)
    assert mesh.fetch({"m": state["w"]})["m"].shape == (3, 2)
    placed = mesh.place(mesh.to_local(state))
    assert np.asarray(placed["w"]).tolist() == np.asarray(state["w"]).tolist()
    assert jax.random.key_data(placed["key"]).tolist() == \\
        jax.random.key_data(state["key"]).tolist()
    assert len(sharding.point_mesh("auto", 1).mesh.devices.flat) == 1  # auto never pads
    assert len(sharding.point_mesh("auto", 5).mesh.devices.flat) == 2
    try:
        sharding.point_mesh(3, 2)
        raise AssertionError("3 devices accepted")
    except ConfigError as err:
        assert "train.devices=3 is not allowed: 2 cpu device(s) available" in str(err), err

    # 3 seeds of PPO on 2 devices (one padding point) log what 1 device logs.
    PAD = [*TINY, "train.num_seeds=3", "train.total_steps=256"]
    run("pad1", PAD, 1), run("pad2", PAD, 2)
    same(rows(out / "pad1"), rows(out / "pad2"), "ppo 3 points, 1 vs 2 devices (padded)")
    print("ok")
""")


def test_one_and_two_devices_give_the_same_metrics(tmp_path: Path) -> None:
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", TWO_DEVICES, str(tmp_path)], env=env,
                            capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok"), result.stdout[-2000:]
    print(result.stdout)


def test_train_devices_is_validated_and_in_help() -> None:
    from experiments.train import help_text

    assert "train.devices=auto|N" in help_text()
    assert common.compose(["experiment=smoke"])["train"]["devices"] == "auto"
    assert common.compose(["experiment=smoke", "train.devices=2"])["train"]["devices"] == 2
    for bad in ("0", "many"):
        with pytest.raises(ConfigError, match=f"train.devices={bad!r}|train.devices={bad} "):
            common.compose(["experiment=smoke", f"train.devices={bad}"])


def test_more_devices_than_the_machine_has_is_one_clear_error() -> None:
    import jax

    count = jax.device_count()
    with pytest.raises(ConfigError, match=f"train.devices={count + 1} is not allowed: "
                                          f"{count} cpu device"):
        sharding.point_mesh(count + 1, 4)


def test_no_coordinator_starts_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
    assert sharding.initialize_distributed({"coordinator_address": None}) is False
    assert sharding.initialize_distributed(None) is False
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:1")
    with pytest.raises(ConfigError, match="JAX_NUM_PROCESSES='two' is not allowed"):
        sharding.initialize_distributed({})
