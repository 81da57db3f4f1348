"""Sizes a run cannot have are refused in one line before anything is allocated.

`jaxtrade train agent=dqn env.num_envs=1e6 agent.buffer_size=1e7` passed the validator,
compiled for 144 s, trained and was then killed by the kernel (exit 137, 21 GB of RAM
available). The estimate (jaxtrade/config/memory.py) counts env states, observations,
rollout storage and replay buffers of every point, against the device's free memory or,
on CPU, the host's available RAM. Counts the device keeps in int32 must fit it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_cli import run_cli

import agents
from experiments import common
from experiments.train import prepare
from jaxtrade import sharding
from jaxtrade.config import compose_run
from jaxtrade.config import memory as memory_lib
from jaxtrade.config.memory import MemoryEstimate, check_fits
from jaxtrade.errors import ConfigError

SMALL = [
    "experiment=smoke",
    "data.options.num_bars=400",
    "env.window_bars=8",
    "env.episode_bars=64",
    "network.hidden_sizes=[16,16]",
    "logger=none",
    "train.report=false",
]
CONTINUOUS = {"sac", "td3", "ddpg"}
REPLAY = {"dqn", "qrdqn", "sac", "sac_discrete", "td3", "ddpg", "mcts"}


def message_of(estimate: MemoryEstimate, available: int, **settings: Any) -> str:
    kwargs = {
        "num_envs": estimate.num_envs,
        "num_seeds": estimate.points,
        "sweep_points": 1,
        "buffer_size": None,
        **settings,
    }
    with pytest.raises(ConfigError) as info:
        check_fits(estimate, available, "RAM this host has available", **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_the_message_says_the_estimate_the_limit_and_what_to_change() -> None:
    envs = MemoryEstimate(
        points=1, num_envs=1_000_000, env_bytes=8_000, storage_bytes=64_000, fixed_bytes=0
    )
    assert envs.total == 72_000_000_000
    check_fits(
        envs, 72_000_000_000, "x", num_envs=1, num_seeds=1, sweep_points=1, buffer_size=None
    )  # exactly fits
    assert message_of(envs, 21_000_000_000) == (
        "env.num_envs=1000000 is not allowed: training needs about 72.0 GB (1000000 envs x "
        "72.0 KB per env [state and observation 8.0 KB, rollout storage 64.0 KB]), more than "
        "the 21.0 GB of RAM this host has available; lower env.num_envs (or "
        "env.num_envs=auto) or train.num_seeds"
    )
    buffer = MemoryEstimate(
        points=1, num_envs=8, env_bytes=8_000, storage_bytes=64_000, fixed_bytes=580_000_000_000
    )
    message = message_of(buffer, 21_000_000_000, buffer_size=10**10)
    assert message.startswith(
        "agent.buffer_size=10000000000 is not allowed: training needs "
        "about 580.0 GB (8 envs x 72.0 KB per env"
    )
    assert "+ replay buffer 580.0 GB), more than the 21.0 GB" in message
    assert message.endswith(
        "lower env.num_envs (or env.num_envs=auto), agent.buffer_size or train.num_seeds"
    )
    # Each point fits, all of them together do not: the seeds (and sweep points) multiply.
    seeds = MemoryEstimate(
        points=1000, num_envs=1024, env_bytes=8_000, storage_bytes=4_000_000, fixed_bytes=0
    )
    message = message_of(seeds, 21_000_000_000, num_seeds=1000)
    assert message.startswith(
        "train.num_seeds=1000 is not allowed: training needs about "
        "4.1 TB (1000 points x (1024 envs x 4.0 MB per env"
    )
    message = message_of(seeds, 21_000_000_000, num_seeds=100, sweep_points=10)
    assert message.startswith("train.num_seeds=100 with 10 sweep points is not allowed")
    assert message.endswith("or train.num_seeds or the sweep points")


def test_available_memory_of_the_host_and_of_an_accelerator(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 24683664 kB\nMemFree: 1000 kB\nMemAvailable: 2048 kB\n")
    assert memory_lib._meminfo_available(meminfo) == 2048 * 1024
    assert memory_lib._meminfo_available(tmp_path / "missing") is None
    # A container's cgroup limit bounds what the host's MemAvailable promises.
    (tmp_path / "memory.max").write_text("max\n")
    (tmp_path / "memory.current").write_text("100\n")
    assert memory_lib._cgroup_available(tmp_path) is None
    (tmp_path / "memory.max").write_text("4096\n")
    assert memory_lib._cgroup_available(tmp_path) == 3996
    assert memory_lib._cgroup_available(tmp_path / "none") is None
    available = memory_lib.host_available_bytes()
    assert available is not None and available > 0

    class Device:
        def __init__(self, platform: str, stats: dict[str, int] | None) -> None:
            self.platform, self.id, self.stats = platform, 0, stats

        def memory_stats(self) -> dict[str, int] | None:
            return self.stats

    gpu = Device("gpu", {"bytes_limit": 100 * 10**9, "bytes_in_use": 30 * 10**9})
    assert memory_lib.device_available_bytes(gpu) == (70 * 10**9, "memory free on GPU 0")
    assert memory_lib.device_available_bytes(Device("gpu", None)) is None
    cpu = memory_lib.device_available_bytes(Device("cpu", None))
    assert cpu is not None and cpu[1] == "RAM this host has available"


@pytest.fixture(scope="module", params=sorted(agents.AGENTS))
def prepared(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    name = request.param
    overrides = [
        *SMALL,
        f"agent={name}",
        "env.num_envs=8",
        "train.total_steps=100000",
        f"run_dir={tmp_path_factory.mktemp(name) / 'run'}",
    ]
    if name in CONTINUOUS:
        overrides.append("env.action_mode=continuous")
    if name in REPLAY:
        overrides += ["agent.buffer_size=4096", "agent.learning_starts=64"]
    if name == "ensemble":  # its replay members (sac, qrdqn) sized like the replay agents
        overrides = [o for o in overrides if not o.startswith("network.")]  # members' own
        overrides += [f"agent.{m}.{k}" for m in ("sac", "qrdqn")
                      for k in ("buffer_size=4096", "learning_starts=64")]
    cfg = compose_run(overrides)
    return name, cfg, prepare(cfg)


def test_every_agent_family_is_estimated_with_its_envs_buffer_and_seeds(prepared) -> None:
    name, cfg, prep = prepared
    one = common.training_memory(
        prep.env, prep.env_params, prep.agent_config, sharding.single_device(1)
    )
    assert one.points == 1 and one.num_envs == 8
    assert one.env_bytes > 8 * 4 and one.storage_bytes > one.env_bytes  # a rollout of obs
    if name in REPLAY or name == "ensemble":
        assert one.fixed_bytes >= 4096 * 2 * 4  # the buffer's transitions
    else:
        assert one.fixed_bytes == 0
    three = common.training_memory(
        prep.env, prep.env_params, prep.agent_config, sharding.single_device(3)
    )
    assert three.total == 3 * one.total
    # Fits this machine; refused with one line when the host has less than it needs.
    common.check_memory(
        cfg, prep.env, prep.env_params, prep.agent_config, sharding.single_device(1)
    )


def test_a_host_without_the_memory_refuses_each_family(prepared, monkeypatch) -> None:
    name, cfg, prep = prepared
    monkeypatch.setattr(memory_lib, "host_available_bytes", lambda: 999)
    with pytest.raises(ConfigError) as info:
        common.check_memory(
            cfg, prep.env, prep.env_params, prep.agent_config, sharding.single_device(1)
        )
    message = str(info.value)
    # The message names the larger part: the replay buffer or the envs.
    estimate = common.training_memory(
        prep.env, prep.env_params, prep.agent_config, sharding.single_device(1)
    )
    buffer_larger = estimate.fixed_bytes > estimate.num_envs * estimate.per_env
    # The ensemble's buffers are its members' (no agent.buffer_size): it names the envs.
    key = ("agent.buffer_size=4096" if buffer_larger and name != "ensemble"
           else "env.num_envs=8")
    assert message.startswith(f"{key} is not allowed: training needs about ")
    assert "more than the 999 B of RAM this host has available" in message


@pytest.mark.parametrize(
    ("overrides", "start"),
    [
        (
            ["agent=dqn", "env.num_envs=1e7", "agent.buffer_size=4e7"],
            "env.num_envs=10000000 is not allowed: training needs about ",
        ),
        (
            ["agent=dqn", "env.num_envs=8", "agent.buffer_size=1e11"],
            "agent.buffer_size=100000000000 is not allowed: training needs about ",
        ),
        (
            ["env.num_envs=1024", "train.num_seeds=100000"],
            "train.num_seeds=100000 is not allowed: training needs about ",
        ),
    ],
)
def test_the_cli_refuses_runs_this_machine_cannot_hold(
    tmp_path: Path, capsys, overrides, start
) -> None:
    run_dir = tmp_path / "run"
    code, _, err = run_cli(
        ["train", *SMALL, *overrides, "train.total_steps=1e9", f"run_dir={run_dir}"], capsys
    )
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert start in err and "of RAM this host has available; lower " in err, err
    assert not run_dir.exists()  # nothing written, nothing allocated


def test_counts_that_do_not_fit_int32_are_refused_when_composed() -> None:
    """The env steps of one update and TD3's minibatch-step clock must fit int32 too."""
    with pytest.raises(ConfigError) as info:
        compose_run(
            [
                "agent=dqn",
                "features=minimal",
                "env.window_bars=1",
                "env.num_envs=2147483648",
                "train.total_steps=1e10",
            ]
        )
    assert str(info.value) == (
        "env.num_envs=2147483648 is not allowed: env.num_envs * agent.rollout_len = "
        "2147483648*1 = 2147483648 env steps per update do not fit the device's int32 step "
        "arithmetic (at most 2147483647); lower it"
    )
    td3 = [
        "env.action_mode=continuous",
        "env.num_envs=8",
        "agent.gradient_steps=4",
        "train.total_steps=1e10",
    ]
    with pytest.raises(ConfigError) as info:
        compose_run(["agent=td3", *td3])
    assert str(info.value) == (
        "train.total_steps=10000000000 is not allowed: 6.25e+08 updates x "
        "agent.gradient_steps=4 overflow td3's int32 counter of minibatch steps (at most "
        "2147483647); lower it, agent.gradient_steps or raise env.num_envs"
    )
    compose_run(["agent=sac", *td3])  # SAC does not count its minibatch steps
    compose_run(["agent=td3", *td3[:-1], "train.total_steps=8e9"])  # 2e9 minibatch steps fit
