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
    # A composite agent (the ensemble) states its defaults itself: its members' sizes are its.
    own = getattr(agents.AGENTS[name].config_class, "registered_defaults", None)
    defaults = own() if own else dataclasses.asdict(agents.config_from_dict({"name": name}))
    # YAML holds lists where the dataclasses hold tuples (MCTS's bucket edges).
    return {k: list(v) if isinstance(v, tuple) else v for k, v in defaults.items()
            if k not in SET_ELSEWHERE}


@pytest.mark.parametrize("name", sorted(agents.AGENTS))
def test_agent_group_composes_the_dataclass_defaults(name: str) -> None:
    assert compose_raw([f"agent={name}"])["agent"] == _dataclass_defaults(name)


@pytest.mark.parametrize("name", sorted(agents.AGENTS))
def test_agent_yaml_restates_no_dataclass_default(name: str) -> None:
    own = yaml.safe_load((config_dir() / "agent" / f"{name}.yaml").read_text())
    assert set(own) == {"defaults", "name"}, sorted(own)
    assert own["defaults"][0] == f"_defaults_{name}"


def test_overrides_apply_over_the_dataclass_defaults() -> None:
    changed = compose_raw(["agent=cvar_ppo", "agent.hparams.learning_rate=1e-3",
                           "agent.rollout_len=64"])["agent"]
    assert changed["hparams"]["learning_rate"] == 1e-3 and changed["rollout_len"] == 64
    defaults = _dataclass_defaults("cvar_ppo")
    assert changed["hparams"]["cvar_alpha"] == defaults["hparams"]["cvar_alpha"]
    assert changed["update_epochs"] == defaults["update_epochs"]


@pytest.mark.parametrize("name", sorted(set(agents.AGENTS) - {"ensemble"}))
def test_a_run_gets_its_agents_own_network_unless_it_chooses_one(name: str) -> None:
    own = dataclasses.asdict(agents.config_from_dict({"name": name}).network)
    own = {k: list(v) if isinstance(v, tuple) else v for k, v in own.items()}
    assert compose_raw([f"agent={name}"])["network"] == own
    # One key changed: the rest stays the agent's (DQN keeps relu with other sizes).
    changed = compose_raw([f"agent={name}", "network.hidden_sizes=[32]"])["network"]
    assert changed == {**own, "hidden_sizes": [32]}
    # A torso file is NetworkConfig's defaults with that torso.
    gru = compose_raw([f"agent={name}", "network=gru"])["network"]
    assert gru == {**compose_raw(["agent=ppo"])["network"], "torso": "gru"}


def test_the_ensemble_has_no_network_of_its_own_and_members_keep_theirs() -> None:
    from experiments import common
    from jaxtrade.errors import ConfigError

    assert compose_raw(["agent=ensemble"])["network"] == {}
    cfg = compose_raw(["agent=ensemble", "agent.sac.network.hidden_sizes=[16]",
                       "agent.sac.hparams.tau=0.01"])["agent"]
    assert cfg["sac"]["network"]["hidden_sizes"] == [16]
    assert cfg["sac"]["hparams"]["tau"] == 0.01
    with pytest.raises(ConfigError, match="network.hidden_sizes"):
        common.compose(["agent=ensemble", "network.hidden_sizes=[32]"])


def test_network_files_restate_no_network_config_default() -> None:
    for path in sorted((config_dir() / "network").glob("*.yaml")):
        own = yaml.safe_load(path.read_text())
        assert set(own) == {"defaults", "torso"} and own["torso"] == path.stem, path.name


def test_agents_select_the_action_mode_they_need() -> None:
    for name in ("sac", "td3", "ddpg", "ensemble"):
        assert compose_raw([f"agent={name}"])["env"]["action_mode"] == "continuous"
    for name in ("sac_discrete", "dqn", "qrdqn", "ppo"):
        assert compose_raw([f"agent={name}"])["env"]["action_mode"] == "discrete"
    # The command line's own choice wins (PPO acts on either; for sac it is an error).
    assert compose_raw(["agent=ppo", "env.action_mode=continuous"])["env"][
        "action_mode"] == "continuous"
    assert compose_raw(["agent=sac", "env.action_mode=discrete"])["env"][
        "action_mode"] == "discrete"


def test_qrdqn_differs_from_dqn_only_where_its_dataclass_says() -> None:
    dqn = compose_raw(["agent=dqn"])["agent"]
    qrdqn = compose_raw(["agent=qrdqn"])["agent"]
    differs = {k for k in dqn if k != "name" and qrdqn[k] != dqn[k]}
    assert differs == {"priority_exponent", "hparams"}, differs
    assert qrdqn["n_step"] == dqn["n_step"] == 3
    assert {k for k in dqn["hparams"] if qrdqn["hparams"][k] != dqn["hparams"][k]} == {
        "adam_eps", "huber_delta"}
    assert qrdqn["hparams"]["huber_delta"] == 100.0


def test_config_dir_is_the_repository_configs() -> None:
    assert config_dir() == (Path(__file__).resolve().parents[1] / "configs").resolve()


@pytest.mark.parametrize("name", sorted(agents.AGENTS))
def test_every_agent_builds_under_the_smoke_preset(name: str) -> None:
    # experiment=smoke is the seconds-long check of any agent: its few env steps must leave
    # a replay agent room to learn (configs/experiment_agent/smoke/<agent>.yaml), which the
    # agent's own size check enforces when the agent is built.
    from experiments import common
    from experiments.train import prepare

    # No other override: an agent that needs continuous actions selects them itself.
    cfg = common.compose(["experiment=smoke", f"agent={name}", "run_dir=/tmp/unused-smoke",
                          "data.options.num_bars=300"])
    prep = prepare(cfg)
    starts = getattr(prep.agent_config, "learning_starts", None)
    last_step = prep.agent.num_updates * prep.agent.steps_per_update
    assert starts is None or starts < last_step, (starts, last_step)


def test_an_explicit_contrary_action_mode_is_one_clear_error() -> None:
    from experiments import common
    from experiments.train import prepare
    from jaxtrade.errors import ConfigError

    cfg = common.compose(["experiment=smoke", "agent=sac", "env.action_mode=discrete",
                          "run_dir=/tmp/unused-smoke", "data.options.num_bars=300"])
    with pytest.raises(ConfigError, match="needs continuous actions"):
        prepare(cfg)


def test_train_help_shows_the_effective_settings(capsys: pytest.CaptureFixture) -> None:
    from experiments.train import main

    assert main(["agent=dqn", "--help"]) == 0
    out = yaml.safe_load(capsys.readouterr().out.split("effective settings of")[1]
                         .split("\n", 1)[1])
    assert out["agent"] == {"name": "dqn", **{k: v for k, v in _dataclass_defaults("dqn")
                                              .items() if k != "name"}}
    assert out["network"]["hidden_sizes"] == [120, 84] and out["network"]["activation"] == "relu"
    assert main(["agent=td3", "agent.hparams.gamma=0.9", "--help"]) == 0
    out = capsys.readouterr().out
    assert "action_mode: continuous" in out and "gamma: 0.9" in out
