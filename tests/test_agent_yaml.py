"""The agent YAML files compose to the agents' dataclass defaults (defaults live once)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

import agents
from jaxtrade.config.compose import compose_raw, config_dir

# Set by other groups (env.num_envs, train.total_steps, network/), not by agent/*.yaml.
SET_ELSEWHERE = {"num_envs", "total_steps", "network"}


def _dataclass_defaults(name: str) -> dict:
    defaults = dataclasses.asdict(agents.config_from_dict({"name": name}))
    return {k: v for k, v in defaults.items() if k not in SET_ELSEWHERE}


@pytest.mark.parametrize("name", sorted(agents.AGENTS))
def test_agent_group_composes_the_dataclass_defaults(name: str) -> None:
    assert compose_raw([f"agent={name}"])["agent"] == _dataclass_defaults(name)


def test_cvar_ppo_inherits_every_ppo_setting_from_ppo_yaml() -> None:
    ppo = compose_raw(["agent=ppo"])["agent"]
    cvar = compose_raw(["agent=cvar_ppo"])["agent"]
    for key, value in ppo.items():
        if key == "hparams":
            assert {k: cvar["hparams"][k] for k in value} == value
        elif key != "name":
            assert cvar[key] == value, key
    # Written once: cvar_ppo.yaml names none of PPO's own settings.
    own = yaml.safe_load((config_dir() / "agent" / "cvar_ppo.yaml").read_text())
    assert own["defaults"] == ["ppo", "_self_"]
    assert not (set(own) - {"defaults", "name", "hparams"}) & set(ppo)
    assert not set(own["hparams"]) & set(ppo["hparams"])
    # An override of a PPO setting still applies to cvar_ppo.
    changed = compose_raw(["agent=cvar_ppo", "agent.hparams.learning_rate=1e-3",
                           "agent.rollout_len=64"])["agent"]
    assert changed["hparams"]["learning_rate"] == 1e-3 and changed["rollout_len"] == 64
    assert changed["hparams"]["cvar_alpha"] == cvar["hparams"]["cvar_alpha"]


def test_qrdqn_inherits_every_dqn_setting_from_dqn_yaml() -> None:
    dqn = compose_raw(["agent=dqn"])["agent"]
    qrdqn = compose_raw(["agent=qrdqn"])["agent"]
    assert {k: v for k, v in qrdqn.items() if k in dqn and k != "name"} == {
        k: v for k, v in dqn.items() if k != "name"}
    own = yaml.safe_load((config_dir() / "agent" / "qrdqn.yaml").read_text())
    assert own["defaults"] == ["dqn", "_self_"]
    assert not (set(own) - {"defaults", "name"}) & set(dqn)


def test_config_dir_is_the_repository_configs() -> None:
    assert config_dir() == (Path(__file__).resolve().parents[1] / "configs").resolve()


@pytest.mark.parametrize("name", sorted(agents.AGENTS))
def test_every_agent_builds_under_the_smoke_preset(name: str) -> None:
    # experiment=smoke is the seconds-long check of any agent: its few env steps must leave
    # a replay agent room to learn (configs/experiment_agent/smoke/<agent>.yaml), which the
    # agent's own size check enforces when the agent is built.
    from experiments import common
    from experiments.train import prepare

    continuous = name in ("sac", "td3", "ddpg")
    cfg = common.compose(["experiment=smoke", f"agent={name}", "run_dir=/tmp/unused-smoke",
                          "data.options.num_bars=300",
                          *(["env.action_mode=continuous"] if continuous else [])])
    prep = prepare(cfg)
    starts = getattr(prep.agent_config, "learning_starts", None)
    last_step = prep.agent.num_updates * prep.agent.steps_per_update
    assert starts is None or starts < last_step, (starts, last_step)
