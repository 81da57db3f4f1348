"""`jaxtrade export`: what a bundle holds, what is refused, and a trained run end to end."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from live_helpers import shared_case

import envs
from agents.common.networks import NetworkConfig
from jaxtrade import market as market_lib
from jaxtrade.errors import ExportError
from jaxtrade.export import write_bundle
from jaxtrade.live.bundle import load_bundle, sha256_file
from jaxtrade.live.tensors import read_safetensors


@pytest.fixture(scope="module")
def case():
    return shared_case()


def test_manifest_describes_everything_the_runner_needs(case):
    _, bundle, _, _ = case
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["format_version"] == 1
    assert manifest["weights"] == {
        "weights.safetensors": sha256_file(bundle / "weights.safetensors")
    }
    assert (bundle / "SHA256SUMS").read_text().splitlines() == [
        f"{sha256_file(bundle / name)}  {name}" for name in ("manifest.json", "weights.safetensors")
    ]
    names = manifest["features"]["columns"]
    assert manifest["features"]["normalizer"]["feature_names"] == names and len(names) >= 60
    assert manifest["features"]["spec"]["features"][0]["name"] == "returns"
    assert manifest["features"]["regimes"]["kind"] == "gaussian_hmm_forward_filter"
    assert manifest["observation"]["window_bars"] == 16
    assert manifest["observation"]["shape"] == [16 * len(names) + 5]
    assert manifest["action"] == {
        "mode": "discrete",
        "discrete_levels": [-2.0, -1.0, 0.0, 1.0, 2.0],
    }
    assert manifest["costs"]["fee_bps"] == 1.0 and manifest["risk"]["regime_caps"] is True
    assert manifest["network"]["config"]["torso"] == "mlp"
    # Written without a run's data section: the canonical columns the runner always reads.
    assert manifest["bars"]["columns"] == {c: c for c in ("timestamp", "open", "high", "low",
                                                          "close", "volume")}
    assert manifest["bars"]["timestamp"]["kind"] == "text"
    assert {"jax", "flax", "numpy", "python"} <= set(manifest["versions"])
    weights = read_safetensors(bundle / "weights.safetensors")
    # The actor, and the critic for the state value the runner reports.
    assert any(k.startswith("actor_torso") for k in weights) and "value_head/kernel" in weights
    assert (bundle / "runner.py").is_file() and (bundle / "jaxtrade_live" / "engine.py").is_file()


def test_unsupported_exports_are_refused_and_leave_nothing_behind(case, tmp_path):
    _, bundle, _, _ = case
    single = market_lib.from_arrays(np.exp(np.cumsum(np.full(50, 0.01))))
    env1, params1 = envs.make("trading", single, window_bars=4)
    with pytest.raises(ExportError, match="torso 'mamba'"):
        write_bundle(
            tmp_path / "net",
            params={},
            network_config={"torso": "mamba"},
            env=env1,
            env_params=params1,
        )
    from live_helpers import make_policy

    _, single_params, _ = make_policy(env1, params1)
    with pytest.raises(ExportError, match="no feature spec"):
        write_bundle(
            tmp_path / "nospec",
            params={},
            network_config=NetworkConfig(),
            env=env1,
            env_params=params1,
        )
    with pytest.raises(ExportError, match="not empty"):
        write_bundle(
            bundle,
            params={},
            network_config=NetworkConfig(),
            env=env1,
            env_params=params1,
            feature_spec={"features": [{"name": "returns"}]},
            normalizer={"feature_names": ["log_return"], "center": [0], "scale": [1]},
        )
    with pytest.raises(ExportError, match="gives 2 features, its normalization statistics 1"):
        write_bundle(
            tmp_path / "count",
            params=single_params,
            network_config=NetworkConfig(),
            env=env1,
            env_params=params1,
            feature_spec={"features": [{"name": "returns", "lags": [1, 2]}]},
            normalizer={"feature_names": ["log_return"], "center": [0], "scale": [1]},
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no partial bundle anywhere


@pytest.mark.slow
def test_trained_run_exports_and_trades_like_its_backtest(tmp_path, capsys):
    from experiments import common
    from experiments.train import restore_run
    from jaxtrade.cli import main as cli
    from jaxtrade.evaluate.backtest import backtest

    run_dir, out = tmp_path / "run", tmp_path / "bundle"
    assert (
        cli(
            ["train", "experiment=smoke", f"run_dir={run_dir}", "logger=none", "train.report=false"]
        )
        == 0
    )
    assert cli(["export", f"run_dir={run_dir}", f"out={out}", "checkpoint=best"]) == 0
    load_bundle(out)

    # The reference: the agent's own act() on the env, from the same checkpoint.
    prep, restored, _ = restore_run(run_dir, "best")
    params, cfg = restored.params, prep.cfg
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["source"]["update"], manifest["source"]["point"]) == (
        restored.step, restored.point)
    agent = prep.agent
    result = backtest(
        prep.env,
        prep.env_params,
        lambda key, obs, state, p: agent.act(params, obs, state, p, key, (), True)[0],
        split="test",
    )
    bars = tmp_path / "bars.csv"
    common.load_frame(cfg["data"]).select(
        "timestamp", "open", "high", "low", "close", "volume"
    ).write_csv(bars)
    capsys.readouterr()
    start = str(result.timestamps[0]) + "Z"
    assert cli(["live", f"bundle={out}", "source=replay", f"path={bars}", f"start={start}"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    targets = [x["target_position"] for x in lines if "target_position" in x]
    summary = lines[-1]["summary"]
    np.testing.assert_array_equal(targets[:-1], result.target_positions[:-1, 0])
    assert summary["total_return"] == pytest.approx(result.metrics["total_return"], abs=1e-6)
    assert summary["sharpe"] == pytest.approx(result.metrics["sharpe"], rel=1e-4, abs=1e-6)
    jax.clear_caches()
