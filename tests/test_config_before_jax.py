"""A config typo (or a bad train/data/logger/sweep value) is reported before JAX is imported:
the agents' defaults Hydra composes on come from the store of `jaxtrade.config.agent_defaults`,
which equals what the dataclasses give and is keyed by the sources it was computed from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from jaxtrade.config import agent_defaults, compose_raw, compose_run
from jaxtrade.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]

# Runs `jaxtrade <case>` for each case in one interpreter (main() as the console script
# calls it) and reports the exit code, stderr and whether JAX was imported by then.
WRAPPER = """
import contextlib, io, json, sys
from jaxtrade.cli import main
from jaxtrade.config import compose_raw
cases, valid = json.loads(sys.argv[1]), json.loads(sys.argv[2])
out = {"typos": [], "valid": []}
for case in cases:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(case)
    out["typos"].append({"code": code, "stderr": err.getvalue(), "jax": "jax" in sys.modules})
for case in valid:
    out["valid"].append({"config": compose_raw(case), "jax": "jax" in sys.modules})
print(json.dumps(out))
"""

# Overrides Hydra composes (the validator judges some later): group switches, the ensemble's
# member sections and member list, presets, dict and list values, '+', '++', '~' and list
# indices.
VALID = [
    [],
    ["agent=ensemble", "agent.members=[ppo,dqn]", "agent.ppo.hparams.learning_rate=1e-3"],
    ["agent=sac", "network=gru", "network.recurrent_size=8"],
    ["experiment=smoke", "agent=dqn", "data.options.num_bars=500"],
    ["env.costs={fee_bps: 2.0}", "env.discrete_levels=[-1,1]", "logger.tags=[a,b]"],
    ["+agent.extra=1", "++train.total_steps=5", "train.distributed.num_processes=2"],
    ["~env.risk", "~agent.hparams.ent_coef", "env.discrete_levels.0=-2"],
    ["agent=ensemble", "~agent.mcts"],
]


def _typo(key: str, node: dict[str, Any]) -> str:
    typo = key[:-1]
    assert typo not in node, key
    return typo


def _first_hparam_or_key(defaults: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """(dotted prefix below agent., the key, its node): an hparam when the agent has them."""
    if isinstance(defaults.get("hparams"), dict) and defaults["hparams"]:
        return "hparams.", sorted(defaults["hparams"])[0], defaults["hparams"]
    key = sorted(k for k in defaults if not isinstance(defaults[k], dict))[0]
    return "", key, defaults


def typo_cases(nodes: dict[str, Any]) -> list[tuple[list[str], str, str]]:
    """(overrides, the unknown dotted key, the key it misspells) for every section."""
    cases = [
        (["seedd=1"], "seedd", "seed"),
        (["train.total_step=5"], "train.total_step", "train.total_steps"),
        (["train.distributed.num_process=2"], "train.distributed.num_process",
         "train.distributed.num_processes"),
        (["data.pth=bars.csv"], "data.pth", "data.path"),
        (["logger.knd=wandb"], "logger.knd", "logger.kind"),
        (["sweep.methd=grid"], "sweep.methd", "sweep.method"),
        (["env.num_env=8"], "env.num_env", "env.num_envs"),
        (["env.costs.fee_bp=2"], "env.costs.fee_bp", "env.costs.fee_bps"),
        (["network.hidden_size=[8]"], "network.hidden_size", "network.hidden_sizes"),
        (["network=gru", "network.recurrent_siz=8"], "network.recurrent_siz",
         "network.recurrent_size"),
        (["experiment=smoke", "train.total_step=5"], "train.total_step", "train.total_steps"),
        (["agent=ensemble", "agent.member=[ppo]"], "agent.member", "agent.members"),
    ]
    ensemble = nodes["agents"]["ensemble"]["defaults"]
    for name, node in sorted(nodes["agents"].items()):
        prefix, key, where = _first_hparam_or_key(node["defaults"])
        cases.append(([f"agent={name}", f"agent.{prefix}{_typo(key, where)}=1"],
                      f"agent.{prefix}{key[:-1]}", f"agent.{prefix}{key}"))
        if isinstance(ensemble.get(name), dict):  # the ensemble's section of this member
            prefix, key, where = _first_hparam_or_key(ensemble[name])
            path = f"agent.{name}.{prefix}"
            cases.append((["agent=ensemble", f"{path}{_typo(key, where)}=1"],
                          f"{path}{key[:-1]}", f"{path}{key}"))
    return cases


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder holding the stored defaults of these sources."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JAXTRADE_CACHE_DIR", str(folder))
        assert agent_defaults.load() is not None
    return folder


def test_stored_defaults_equal_the_dataclasses_and_survive_json(cache: Path,
                                                                 monkeypatch) -> None:
    computed = agent_defaults.compute()
    assert computed is not None
    # Nothing is lost on the way to JSON (a tuple, an integer key, a non-finite float...).
    assert json.loads(json.dumps(computed)) == computed
    stored = list((cache / "config_defaults").glob("*.json"))
    digest = agent_defaults.source_digest(agent_defaults.package_roots() or [])
    assert [p.stem for p in stored] == [digest]
    assert json.loads(stored[0].read_text())["nodes"] == computed
    assert set(computed["agents"]) == {p.stem for p in (REPO / "configs" / "agent").glob("*.yaml")}
    monkeypatch.setenv("JAXTRADE_CACHE_DIR", str(cache))
    monkeypatch.setattr(agent_defaults, "compute", lambda: pytest.fail("read, not computed"))
    assert agent_defaults.load() == computed


def test_another_version_of_the_sources_is_another_key(tmp_path: Path, monkeypatch) -> None:
    package = tmp_path / "agents"
    package.mkdir()
    (package / "ppo.py").write_text("LEARNING_RATE = 3e-4\n")
    first = agent_defaults.source_digest([package])
    (package / "ppo.py").write_text("LEARNING_RATE = 1e-3\n")
    assert agent_defaults.source_digest([package]) != first
    (package / "ppo.py").write_text("LEARNING_RATE = 3e-4\n")
    assert agent_defaults.source_digest([package]) == first
    (package / "sac.py").write_text("")
    assert agent_defaults.source_digest([package]) != first
    # A stored file for another version is not read; a half-written one is recomputed.
    monkeypatch.setenv("JAXTRADE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(agent_defaults, "package_roots", lambda: [package])
    monkeypatch.setattr(agent_defaults, "compute", lambda: {"agents": {}, "version": 1})
    assert agent_defaults.load() == {"agents": {}, "version": 1}
    (package / "ppo.py").write_text("LEARNING_RATE = 1e-3\n")
    monkeypatch.setattr(agent_defaults, "compute", lambda: {"agents": {}, "version": 2})
    assert agent_defaults.load() == {"agents": {}, "version": 2}
    digest = agent_defaults.source_digest([package])
    path = tmp_path / "cache" / "config_defaults" / f"{digest}.json"
    path.write_text('{"format": 1, "no')
    monkeypatch.setattr(agent_defaults, "compute", lambda: {"agents": {}, "version": 3})
    assert agent_defaults.load() == {"agents": {}, "version": 3}
    assert json.loads(path.read_text())["nodes"]["version"] == 3
    # An editor's lock link (a dangling `.#ppo.py`) cannot be hashed: computed, not stored.
    (package / ".#ppo.py").symlink_to(tmp_path / "gone")
    monkeypatch.setattr(agent_defaults, "compute", lambda: {"agents": {}, "version": 4})
    assert agent_defaults.load() == {"agents": {}, "version": 4}


def test_typos_and_bad_values_are_one_line_and_exit_2_before_jax(cache: Path) -> None:
    nodes = agent_defaults.compute()
    assert nodes is not None
    # (command line, its overrides, how the message starts, the suggestion it makes)
    cases = [(["train", *overrides], overrides, f"unknown key '{unknown}'",
              f"did you mean '{meant}'?") for overrides, unknown, meant in typo_cases(nodes)]
    cases += [(["sweep", "env.num_env=8"], ["env.num_env=8"], "unknown key 'env.num_env'",
               "did you mean 'env.num_envs'?")]
    cases += [(["train", *overrides], overrides, start, hint) for overrides, start, hint in [
        (["experiment=smok"], "experiment='smok' is not allowed", "did you mean 'smoke'?"),
        (["features=minimall"], "features='minimall' is not allowed", "did you mean 'minimal'?"),
        (["train.total_steps=0"], "train.total_steps=0 is not allowed: must be > 0", ""),
        (["data.train_frac=2"], "data.train_frac=2.0 is not allowed", ""),
        (["logger.kind=x"], "logger.kind='x' is not allowed: choose one of", ""),
        (["sweep.method=foo"], "sweep.method='foo' is not allowed: choose one of", ""),
    ]]
    env = {**os.environ, "JAXTRADE_CACHE_DIR": str(cache), "JAXTRADE_NO_HUGEPAGES": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    child = subprocess.run(
        [sys.executable, "-c", WRAPPER, json.dumps([c for c, _, _, _ in cases]), json.dumps(VALID)],
        capture_output=True, text=True, env=env, cwd=cache, timeout=300)
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout)
    for (_, overrides, start, hint), got in zip(cases, result["typos"], strict=True):
        with pytest.raises(ConfigError) as expected:  # here, where the agents are imported
            compose_run(overrides)
        line = f"jaxtrade: ConfigError: {expected.value}\n"
        assert (got["code"], got["stderr"], got["jax"]) == (2, line, False), overrides
        assert line.startswith(f"jaxtrade: ConfigError: {start}") and hint in line, line
    for overrides, got in zip(VALID, result["valid"], strict=True):
        assert got == {"config": compose_raw(overrides), "jax": False}, overrides


def test_the_command_itself_imports_no_jax_for_a_typo(cache: Path) -> None:
    """`python -X importtime -m jaxtrade.cli train env.num_env=8`: the real entry point (with
    its huge-page re-exec), exit 2, one line, and no `jax` in the import log."""
    env = {**os.environ, "JAXTRADE_CACHE_DIR": str(cache),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    child = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "jaxtrade.cli", "train", "env.num_env=8"],
        capture_output=True, text=True, env=env, cwd=cache, timeout=120)
    imports = [ln.rsplit("|", 1)[-1].strip() for ln in child.stderr.splitlines()
               if ln.startswith("import time:")]
    said = [ln for ln in child.stderr.splitlines() if not ln.startswith("import time:")]
    assert child.returncode == 2, child.stderr[-2000:]
    assert len(said) == 1 and said[0].startswith(
        "jaxtrade: ConfigError: unknown key 'env.num_env' (value 8); did you mean "
        "'env.num_envs'?"), said
    assert "hydra" in imports and "jaxtrade.config.compose" in imports
    assert not [m for m in imports if m == "jax" or m.startswith(("jax.", "agents", "envs"))]
