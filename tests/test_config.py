"""Config composition and validation: every mistake is one line naming the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import yaml

from jaxtrade.config import check_window, compose_run, config_dir, group_options
from jaxtrade.config.auto import auto_num_envs, bytes_per_env
from jaxtrade.config.compose import compose_raw
from jaxtrade.errors import ConfigError


def error_of(overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as info:
        compose_run(overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_default_config_composes_with_typed_values() -> None:
    cfg = compose_run([])
    assert cfg["agent"]["name"] == "ppo" and cfg["data"]["source"] == "sp500_daily"
    assert cfg["env"]["num_envs"] == "auto" and cfg["logger"]["kind"] == "console"
    assert cfg["train"]["total_steps"] == 1_000_000
    assert isinstance(cfg["agent"]["hparams"]["learning_rate"], float)


@pytest.mark.parametrize(("override", "named", "suggested"), [
    ("env.num_env=64", "'env.num_env'", "env.num_envs"),
    ("train.total_step=5", "'train.total_step'", "train.total_steps"),
    ("agent.hparams.learning_rat=0.1", "'agent.hparams.learning_rat'",
     "agent.hparams.learning_rate"),
    ("env.costs.fee_bs=2", "'env.costs.fee_bs'", "env.costs.fee_bps"),
    ("data.train_frc=0.5", "'data.train_frc'", "data.train_frac"),
    ("logger.knd=none", "'logger.knd'", "logger.kind"),
    ("network.hiden_sizes=[8]", "'network.hiden_sizes'", "network.hidden_sizes"),
    ("sed=3", "'sed'", "seed"),
])
def test_unknown_key_names_it_and_suggests_the_closest(override: str, named: str,
                                                       suggested: str) -> None:
    message = error_of([override])
    assert f"unknown key {named}" in message
    assert f"did you mean '{suggested}'?" in message


@pytest.mark.parametrize(("override", "expected"), [
    ("data.train_frac=abc", "data.train_frac='abc' is not allowed: expected a number"),
    ("resume=maybe", "resume='maybe' is not allowed: expected true or false"),
    ("train.num_seeds=1.5", "train.num_seeds=1.5 is not allowed: expected an integer"),
    ("env.costs.fee_bps=cheap", "env.costs.fee_bps='cheap' is not allowed: expected float"),
    ("env.window_bars=ten", "env.window_bars='ten' is not allowed: expected an integer"),
])
def test_wrong_type(override: str, expected: str) -> None:
    assert error_of([override]) == expected


@pytest.mark.parametrize(("override", "expected"), [
    ("data.train_frac=1.5", "data.train_frac=1.5 is not allowed: must be > 0.0 and < 1.0"),
    ("env.num_envs=0", "env.num_envs=0 is not allowed: must be >= 1"),
    ("train.total_steps=-5", "train.total_steps=-5 is not allowed: must be > 0"),
    ("logger.kind=tensorboard",
     "logger.kind='tensorboard' is not allowed: choose one of none, console, wandb"),
    ("seed=-1", "seed=-1 is not allowed: must be >= 0"),
])
def test_out_of_range(override: str, expected: str) -> None:
    assert error_of([override]) == expected


def test_sizes_no_run_can_have_are_refused_before_jax() -> None:
    """total_steps=1e15 overflowed the update counter inside JAX; num_envs=1e9 reached it."""
    message = error_of(["env.num_envs=1e9"])
    assert message.startswith("env.num_envs=1000000000 is not allowed: its envs need at least "
                              "1,023.7 TB (1000000000 envs x 129 observations of 32 bars x 62 "
                              "features, float32)")
    assert "15.9 TB" in error_of(["env.num_envs=1e9", "agent=dqn"])  # 2 observations per env
    assert "x 14 features" in error_of(["env.num_envs=1e9", "features=minimal"])
    message = error_of(["train.total_steps=1e15"])
    assert message.startswith("train.total_steps=1000000000000000 is not allowed: 9.77e+11 "
                              "updates of 1024 env steps (env.num_envs=auto, which may pick 8 "
                              "envs, agent.rollout_len=128) overflow the device's update counter")
    assert "env.num_envs=4096" in error_of(["train.total_steps=1e16", "env.num_envs=4096"])
    assert error_of(["env.num_envs=8", "train.total_steps=100"]) == (
        "train.total_steps=100 is not allowed: less than one update (env.num_envs * "
        "agent.rollout_len = 8*128 = 1024 env steps)")
    # Large but possible runs pass.
    compose_run(["env.num_envs=65536", "train.total_steps=1e12"])
    compose_run(["agent=dqn", "train.total_steps=1e10"])


def test_cross_field_constraints() -> None:
    message = error_of(["env.num_envs=3", "agent.rollout_len=100", "agent.num_minibatches=7"])
    assert message.startswith("agent.num_minibatches=7 is not allowed")
    assert "3*100 = 300 must be divisible" in message
    message = error_of(["data.train_frac=0.8", "data.validation_frac=0.3"])
    assert "data.train_frac + data.validation_frac = 1.1" in message
    assert "data.path" in error_of(["data=csv"])
    with pytest.raises(ConfigError, match=r"env.window_bars=300 is not allowed: must be shorter "
                                          r"than the training split \(200 bars\)"):
        check_window(300, 200)


def test_group_choice_typo_and_keys_set_elsewhere() -> None:
    assert error_of(["agent=ppp"]) == (
        "agent='ppp' is not allowed: choose one of cvar_ppo, ddpg, dqn, ensemble, mcts, ppo, "
        "qrdqn, sac, sac_discrete, td3; did you mean 'ppo'?")
    assert error_of(["agent.num_envs=4"]) == "agent.num_envs=4 is not allowed: set env.num_envs"
    assert "network.torso" in error_of(["network.torso=transformer"])


def test_a_choice_that_names_no_file_is_refused_in_every_group() -> None:
    """`optional` groups (experiment, experiment_agent) used to skip a typo silently."""
    from jaxtrade.config.compose import groups

    assert error_of(["experiment=smok"]) == (
        "experiment='smok' is not allowed: choose one of cvar_sp500, gpu, smoke; "
        "did you mean 'smoke'?")
    assert "did you mean 'minimal'?" in error_of(["features=minimall"])
    assert "did you mean 'smoke/dqn'?" in error_of(["experiment_agent=smoke/dqnn"])
    for group in groups():
        options = group_options(group)
        assert options, group
        typo = options[0] + "x"
        message = error_of([f"{group}={typo}"])
        assert message.startswith(f"{group}='{typo}' is not allowed: choose one of"), message
        assert f"did you mean '{options[0]}'?" in message, message


def test_scientific_notation_for_integers_and_presets() -> None:
    cfg = compose_run(["train.total_steps=2e5", "agent.hparams.learning_rate=1e-4"])
    assert cfg["train"]["total_steps"] == 200_000
    assert cfg["agent"]["hparams"]["learning_rate"] == pytest.approx(1e-4)
    smoke = compose_run(["experiment=smoke"])
    assert smoke["data"]["source"] == "synthetic" and smoke["env"]["num_envs"] == 8
    assert smoke["logger"]["kind"] == "none"


def test_every_group_option_composes() -> None:
    for group in ("agent", "data", "env", "network", "logger", "sweep", "experiment"):
        for option in group_options(group):
            extra = ["data.path=bars.csv"] if option in ("csv", "parquet") else []
            cfg = compose_run([f"{group}={option}", *extra])
            assert cfg is not None, (group, option)


def test_every_preset_composes_with_every_data_source(tmp_path: Path) -> None:
    """experiment=smoke data=csv failed: the preset's generator option reached the CSV reader."""
    from experiments.common import load_frame
    from jaxtrade.data.synthetic import synthetic_frame

    frame = synthetic_frame(num_bars=200)
    files = {"csv": tmp_path / "bars.csv", "parquet": tmp_path / "bars.parquet"}
    frame.write_csv(files["csv"])
    frame.write_parquet(files["parquet"])
    for preset in group_options("experiment"):
        for source in group_options("data"):
            extra = [f"data.path={files[source]}"] if source in files else []
            cfg = compose_run([f"experiment={preset}", f"data={source}", *extra])
            assert cfg["data"]["source"] == source
            assert load_frame(cfg["data"]).height > 0, (preset, source)
    assert compose_run(["experiment=smoke"])["data"]["options"]["num_bars"] == 600


def test_yaml_lists_every_field_of_the_owning_dataclasses() -> None:
    """Every agent / network / env setting is overridable because the composed config names
    it (the agent and network files build on their dataclasses' defaults)."""
    from agents import AGENTS
    from agents.common.networks import NetworkConfig
    from jaxtrade.config.validate import env_schema

    folder = config_dir()
    for name, spec in AGENTS.items():
        config_cls = spec.config_class
        fields = {f.name for f in dataclasses.fields(config_cls)}
        listed = set(compose_raw([f"agent={name}"])["agent"])  # with inherited files
        # The ensemble's updates_per_chunk is its own; its members' sizes are the ensemble's.
        assert listed == fields - {"num_envs", "total_steps", "network"}, name
    net_fields = {f.name for f in dataclasses.fields(NetworkConfig)}
    for option in group_options("network"):  # with NetworkConfig's defaults they build on
        assert set(compose_raw([f"network={option}"])["network"]) == net_fields, option
    static, groups = env_schema()
    env = yaml.safe_load((folder / "env" / "trading.yaml").read_text())
    for group, cls in groups.items():
        assert set(env[group]) == {f.name for f in dataclasses.fields(cls)}, group
    assert set(static) <= set(env)


def test_num_envs_auto_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    import jaxtrade.config.auto as auto

    class FakeDevice:
        def __init__(self, platform: str, free: int | None = None) -> None:
            self.platform = platform
            self._free = free

        def memory_stats(self) -> dict | None:
            return None if self._free is None else {"bytes_limit": self._free, "bytes_in_use": 0}

    monkeypatch.setattr(auto.os, "cpu_count", lambda: 2)
    assert auto_num_envs(1000, 128, FakeDevice("cpu")) == 64
    monkeypatch.setattr(auto.os, "cpu_count", lambda: 96)
    assert auto_num_envs(1000, 128, FakeDevice("cpu")) == 1024  # capped
    # 80 GB free, quarter of it over the per-env rollout bytes, floored to a power of two.
    per_env = bytes_per_env(1000, 128)
    expected = 1 << int(0.25 * 80e9 / per_env).bit_length() - 1
    assert auto_num_envs(1000, 128, FakeDevice("gpu", int(80e9))) == min(expected, 65536)
    assert auto_num_envs(10, 8, FakeDevice("gpu", int(80e9))) == 65536
    assert auto_num_envs(100_000, 2048, FakeDevice("gpu", int(1e9))) == 64
    # A minibatch count that is not a power of two still divides the batch.
    assert (auto_num_envs(1000, 5, FakeDevice("cpu"), num_minibatches=3) * 5) % 3 == 0

    # Replay agents: the buffer is taken from device memory first, then the envs are sized.
    gpu = FakeDevice("gpu", int(8e9))
    free_run = auto_num_envs(1000, 4, gpu, per_env_bytes=int(1e6), accel_max=1 << 20)
    with_buffer = auto_num_envs(1000, 4, gpu, per_env_bytes=int(1e6), fixed_bytes=int(6e9),
                                accel_max=1 << 20)
    assert free_run == 1024 and with_buffer == 256  # pow2 floor of 2000 and of 500
    with pytest.raises(ConfigError, match="replay buffer needs 7.50 GB"):
        auto_num_envs(1000, 4, gpu, per_env_bytes=int(1e6), fixed_bytes=int(7.5e9))
    # ... and a DQN config's own figures on the trading env: a compact buffer, few CPU envs.
    import agents
    import envs
    from jaxtrade.market import from_arrays

    rng = np.random.default_rng(0)
    market = from_arrays(100 * np.exp(np.cumsum(0.01 * rng.standard_normal((300, 1)), 0)),
                         features=rng.standard_normal((300, 1, 62)).astype(np.float32),
                         splits=np.array([[0, 200], [200, 250], [250, 300]]))
    env, env_params = envs.make("trading", market, window_bars=32)
    sizing = agents.config_from_dict({"name": "dqn", "buffer_size": 1_000_000}).auto_sizing(
        env, env_params)
    assert sizing["fixed_bytes"] < 100e6 < 1_000_000 * 1989 * 4 * 2
    monkeypatch.setattr(auto.os, "cpu_count", lambda: 2)
    assert auto_num_envs(1989, **sizing, device=FakeDevice("cpu")) == 8


def test_config_dir_is_the_repository_configs() -> None:
    assert config_dir() == (Path(__file__).resolve().parents[1] / "configs")


def test_every_top_level_setting_of_the_schema_is_accepted() -> None:
    """A setting the schema declares at the top level is a key the validator accepts (the
    default config.yaml names each one, so a missing one breaks every run)."""
    import dataclasses

    from jaxtrade.config.schema import RunConfig
    from jaxtrade.config.validate import TOP_LEVEL_KEYS

    missing = {f.name for f in dataclasses.fields(RunConfig)} - set(TOP_LEVEL_KEYS)
    assert not missing


def test_open_mappings_take_new_entries_as_the_error_messages_spell_them(tmp_path) -> None:
    """The unmapped-column error tells users to type `data.columns.close=<file column>`: that
    spelling composes (no `+` needed), as does `data.options.<name>=` for a loader option;
    a typo of the mapping's own name is still refused."""
    from jaxtrade.config.compose import compose_run
    from jaxtrade.data import load_ohlcv
    from jaxtrade.data.synthetic import synthetic_frame
    from jaxtrade.errors import DataError

    path = tmp_path / "p.csv"
    synthetic_frame(seed=1, num_bars=300).rename({"close": "Price"}).write_csv(path)
    with pytest.raises(DataError) as err:
        load_ohlcv(path)
    suggested = "data.columns.close=<file column>"
    assert suggested in str(err.value)
    cfg = compose_run(["data=csv", f"data.path={path}",
                       suggested.replace("<file column>", "Price")])
    assert cfg["data"]["columns"] == {"close": "Price"}
    assert load_ohlcv(path, columns=cfg["data"]["columns"]).height == 300
    cfg = compose_run(["data=synthetic", "data.options.num_bars=500"])
    assert cfg["data"]["options"]["num_bars"] == 500
    with pytest.raises(ConfigError, match="did you mean 'data.columns'"):
        compose_run(["data=csv", f"data.path={path}", "data.colums.close=Price"])
