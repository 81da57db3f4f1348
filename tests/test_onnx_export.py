"""policy.onnx through onnxruntime acts like the numpy runner: every torso and head, bar by bar.

The torso and head matrix uses randomly initialised flax networks (as tests/test_live_network.py
does); one smoke-trained run is exported with `jaxtrade export ... format=onnx` and traded with
both engines of the bundle's runner on its test split. Tests that need onnx and onnxruntime
skip, saying so, where the `[onnx]` extra is not installed (`make test` installs it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from live_helpers import report_positions, tiny_run

from agents.common.distributions import ActionSpec
from agents.common.networks import ActorCritic, NetworkConfig, make_q_network, network_carry
from jaxtrade.errors import ConfigError, ExportError
from jaxtrade.live.bundle import Bundle, load_bundle, sha256_file
from jaxtrade.live.errors import BundleError
from jaxtrade.live.ledger import Ledger
from jaxtrade.live.network import ActorNetwork
from jaxtrade.xla import jit_light

SKIP_REASON = "the [onnx] extra (onnx, onnxruntime) is not installed: pip install -e '.[onnx]'"
WINDOW, FEATS, STATE = 8, 3, 5
BARS = 200  # observations per case, fed one bar at a time with the recurrent state carried


@pytest.fixture(scope="module")
def ort():
    pytest.importorskip("onnx", reason=SKIP_REASON)
    return pytest.importorskip("onnxruntime", reason=SKIP_REASON)


def _flat(params, keep_value: bool = False) -> dict[str, np.ndarray]:
    """Flat weights as export writes them: the critic only with `keep_value`."""
    flat = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(params["params"]):
        name = "/".join(str(p.key) for p in path)
        if keep_value or not name.startswith(("critic_torso", "value_head")):
            flat[name] = np.array(leaf, np.float32)
    return flat


def _config(torso: str, obs_ndim: int, **overrides) -> tuple[NetworkConfig, tuple[int, ...]]:
    cfg = NetworkConfig(
        torso=torso,
        window_shape=(WINDOW, FEATS) if obs_ndim == 1 else None,
        num_state_features=STATE if obs_ndim == 1 else 0,
        attention_layers=2,
        recurrent_size=16,
        hidden_sizes=(32, 24),
        **overrides,
    )
    obs_shape = (WINDOW * FEATS + STATE,) if obs_ndim == 1 else (WINDOW, FEATS + STATE)
    return cfg, obs_shape


def _description(cfg: NetworkConfig, obs_shape, **head) -> dict:
    return {"config": dict(cfg.__dict__), "obs_shape": list(obs_shape), **head}


def _session(ort, description, action, trading, weights):
    from jaxtrade.export_onnx import build_policy_model

    model, section = build_policy_model(description, action, trading, weights)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session, section


def _bar_by_bar(session, section, reference: ActorNetwork, observations: np.ndarray):
    """Yields (numpy head output, every ONNX output) per bar, each engine carrying its own
    recurrent state from bar to bar."""
    names = [o.name for o in session.get_outputs()]
    carry = reference.initial_carry()
    state = {name: np.zeros((1, reference.recurrent_size), np.float32) for name in section["state"]}
    for obs in observations:
        head, carry = reference.forward(obs, carry)
        out = dict(zip(names, session.run(None, {"observation": obs[None], **state})))
        state = {name: out[next_name] for name, next_name in section["state"].items()}
        yield head, {name: value[0] for name, value in out.items()}


def _probabilities(logits: np.ndarray) -> np.ndarray:
    """As the runner computes them for its decision line (engine.Runner._decide)."""
    logits = logits.astype(np.float64)
    probs = np.exp(logits - logits.max())
    return probs / probs.sum()


# Every torso of the numpy runner; both observation layouts for the window torsos; shared
# torsos; LayerNorm in the MLP layers; every activation.
TORSOS = [
    ("mlp", 1, {"layer_norm": True}),
    ("mlp", 1, {"shared_torso": True, "activation": "relu"}),
    ("cnn", 1, {"activation": "gelu", "layer_norm": True}),
    ("cnn", 2, {"activation": "elu"}),
    ("attention", 1, {"activation": "silu"}),
    ("attention", 2, {}),
    ("gru", 1, {}),
    ("gru", 2, {"shared_torso": True, "activation": "gelu"}),
    ("lstm", 1, {"layer_norm": True}),
]


@pytest.mark.parametrize("torso, obs_ndim, overrides", TORSOS)
def test_every_torso_gives_the_numpy_runners_probabilities_and_actions(
    ort, torso, obs_ndim, overrides
):
    cfg, obs_shape = _config(torso, obs_ndim, **overrides)
    levels = [-1.0, -0.5, 0.0, 0.5, 1.0]
    net = ActorCritic(cfg, ActionSpec("discrete", num_actions=len(levels)), obs_ndim)
    key = jax.random.PRNGKey(7)
    params = jit_light(net.init)(
        key, network_carry(cfg, (1,)), jnp.zeros((1, 1) + obs_shape), jnp.zeros((1, 1), bool)
    )
    # The critic as export keeps it (a recurrent one with its own torso steps its own cell).
    weights = _flat(params, keep_value=True)
    weights["policy_head/kernel"] *= 30.0  # decisions that vary (the 0.01 init is near uniform)
    description = _description(cfg, obs_shape, family="actor_critic")
    action = {"mode": "discrete", "discrete_levels": levels}
    trading = {"max_leverage": 1.0}
    session, section = _session(ort, description, action, trading, weights)
    reference = ActorNetwork(description, weights)
    ledger = Ledger({}, trading, {}, action)
    observations = np.random.default_rng(1).standard_normal((BARS,) + obs_shape, np.float32)

    assert reference.has_value and "value" in section["outputs"]
    # The flax critic's values over the same sequence (its carry threaded through time).
    _, _, flax_values = jax.jit(net.apply)(
        params, network_carry(cfg, (1,)), jnp.asarray(observations)[:, None],
        jnp.zeros((BARS, 1), bool))
    actions = []
    carry = reference.initial_carry()
    for t, (logits, out) in enumerate(_bar_by_bar(session, section, reference, observations)):
        _, value, carry = reference.forward_with_value(observations[t], carry)
        # The state value: numpy runner == onnxruntime == the trained network.
        assert out["value"] == pytest.approx(value, abs=1e-5)
        assert value == pytest.approx(float(flax_values[t, 0]), rel=1e-4, abs=1e-4)
        assert int(out["action"]) == int(np.argmax(logits))
        np.testing.assert_allclose(out["probabilities"], _probabilities(logits), atol=1e-5)
        np.testing.assert_allclose(out["logits"], logits, rtol=1e-5, atol=1e-5)
        assert out["target_weight"] == ledger.action_to_weight(int(out["action"]))
        actions.append(int(out["action"]))
    assert len(set(actions)) >= 3  # the policy changes its mind: the comparison means something
    if section["state"]:
        names = ["cell", "hidden"] if torso == "lstm" else ["hidden"]
        if not cfg.shared_torso:  # the critic's own cell: its state travels beside the actor's
            names += [f"critic_{name}" for name in names]
        assert sorted(section["state"]) == sorted(names)
    else:  # a whole batch at once gives what bar-by-bar calls give
        batch = session.run(["action", "probabilities"], {"observation": observations})
        assert batch[0].tolist() == actions


@pytest.mark.parametrize(
    "squash, trading",
    [("clip", {"max_leverage": 0.5}), ("tanh", {"max_leverage": 1.0, "long_only": True})],
)
@pytest.mark.parametrize("torso", ["mlp", "lstm"])
def test_gaussian_heads_act_and_size_like_the_runner(ort, squash, trading, torso):
    cfg, obs_shape = _config(torso, 1, continuous_squash=squash)
    low, high = np.array([-1.0], np.float32), np.array([1.0], np.float32)
    spec = ActionSpec("continuous", shape=(1,), low=low, high=high)
    net = ActorCritic(cfg, spec, 1)
    params = jit_light(net.init)(
        jax.random.PRNGKey(2),
        network_carry(cfg, (1,)),
        jnp.zeros((1, 1) + obs_shape),
        jnp.zeros((1, 1), bool),
    )
    weights = _flat(params)
    weights["policy_head/kernel"] *= 300.0
    weights["log_std"] = np.array([-0.7], np.float32)
    description = _description(cfg, obs_shape, family="actor_critic")
    action = {"mode": "continuous", "low": low.tolist(), "high": high.tolist(), "squash": squash}
    session, section = _session(ort, description, action, trading, weights)
    reference = ActorNetwork(description, weights)
    ledger = Ledger({}, trading, {}, action)
    observations = np.random.default_rng(3).standard_normal((BARS,) + obs_shape, np.float32)
    weights_seen = []
    for mean, out in _bar_by_bar(session, section, reference, observations):
        # The runner's mapping from the head to the action (engine.Runner._decide).
        unit = np.tanh(mean) if squash == "tanh" else np.clip(mean, -1, 1)
        expected = low + (unit + np.float32(1.0)) * np.float32(0.5) * (high - low)
        np.testing.assert_allclose(out["mean"], mean, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out["action"], expected, atol=1e-5)
        np.testing.assert_allclose(out["log_std"], [-0.7])
        target = ledger.action_to_weight(expected)
        assert out["target_weight"] == pytest.approx(float(target), abs=1e-5)
        weights_seen.append(float(out["target_weight"]))
    assert max(weights_seen) - min(weights_seen) > 0.25  # it really moves
    assert min(weights_seen) >= (0.0 if trading.get("long_only") else -trading["max_leverage"])
    assert max(weights_seen) <= trading["max_leverage"]


@pytest.mark.parametrize(
    "torso, head",
    [
        ("mlp", {"head": "q", "num_quantiles": 0}),
        ("cnn", {"head": "dueling", "num_quantiles": 0}),
        ("attention", {"head": "q", "num_quantiles": 8, "act_on": "mean"}),
        ("mlp", {"head": "dueling", "num_quantiles": 8, "act_on": "cvar", "act_cvar_alpha": 0.3}),
    ],
)
def test_q_and_quantile_heads_give_the_runners_values_and_greedy_actions(ort, torso, head):
    cfg, obs_shape = _config(torso, 1)
    levels = [-1.0, 0.0, 1.0]
    net = make_q_network(cfg, len(levels), 1, head["head"], head["num_quantiles"])
    params = jit_light(net.init)(jax.random.PRNGKey(4), jnp.zeros((1,) + obs_shape))
    weights = _flat(params)
    description = _description(cfg, obs_shape, family="q", **head)
    action = {"mode": "discrete", "discrete_levels": levels}
    session, section = _session(ort, description, action, {"max_leverage": 1.0}, weights)
    reference = ActorNetwork(description, weights)
    observations = np.random.default_rng(5).standard_normal((BARS,) + obs_shape, np.float32)
    quantiles = np.asarray(jax.jit(net.apply)(params, jnp.asarray(observations)))
    actions = []
    for t, (values, out) in enumerate(_bar_by_bar(session, section, reference, observations)):
        assert int(out["action"]) == int(np.argmax(values))
        np.testing.assert_allclose(out["q_values"], values, rtol=1e-5, atol=1e-5)
        assert out["value"] == pytest.approx(float(values.max()), abs=1e-5)
        assert out["target_weight"] == levels[int(out["action"])]
        if head["num_quantiles"]:
            np.testing.assert_allclose(out["quantiles"], quantiles[t], rtol=1e-4, atol=1e-4)
        actions.append(int(out["action"]))
    assert len(set(actions)) >= 2


@pytest.mark.parametrize(
    "torso, obs_ndim, discrete, critics",
    [
        ("mlp", 1, False, 2),  # SAC / TD3: twin critics, the action joins the observation
        ("cnn", 1, False, 1),  # DDPG: one critic, the action joins the torso's features
        ("attention", 2, False, 2),
        ("mlp", 1, True, 2),  # discrete SAC: Q(s, .) read at the greedy action
    ],
)
def test_replay_critics_give_q_of_the_policys_action_like_numpy_and_flax(
    ort, torso, obs_ndim, discrete, critics
):
    """A replay actor-critic's graph outputs q_value = min over its critics of Q(s, pi(s)):
    onnxruntime equals the numpy runner within 1e-5, and both the flax critics'."""
    from agents.common.networks import Actor, CriticEnsemble
    from jaxtrade.export import flatten_q_critics

    cfg, obs_shape = _config(torso, obs_ndim, continuous_squash="tanh", activation="relu")
    levels = [-1.0, 0.0, 1.0]
    dim = len(levels) if discrete else 1
    actor = Actor(cfg, dim, obs_ndim, log_std=not discrete)
    critic = CriticEnsemble(cfg, obs_ndim, num_outputs=dim if discrete else 1,
                            num_critics=critics)
    zeros = jnp.zeros((1,) + obs_shape)
    actor_params = jit_light(actor.init)(jax.random.PRNGKey(2), zeros)
    critic_args = (zeros,) if discrete else (zeros, jnp.zeros((1, 1)))
    critic_params = jit_light(critic.init)(jax.random.PRNGKey(3), *critic_args)
    weights = _flat(actor_params)
    weights["policy_head/kernel"] *= 30.0  # decisions that vary (the 0.01 init is near zero)
    actor_params = jax.tree_util.tree_map_with_path(
        lambda path, x: x * 30.0 if "policy_head" in jax.tree_util.keystr(path)
        and "kernel" in jax.tree_util.keystr(path) else x, actor_params)
    q_weights, count = flatten_q_critics(critic_params)
    assert count == critics
    description = _description(cfg, obs_shape, family="actor_critic", q_critic={
        "num_critics": count, "reduce": "min", "takes_action": not discrete})
    action = ({"mode": "discrete", "discrete_levels": levels} if discrete else
              {"mode": "continuous", "low": [-1.0], "high": [1.0], "squash": "tanh"})
    session, section = _session(ort, description, action, {"max_leverage": 1.0},
                                {**weights, **q_weights})
    assert "q_value" in section["outputs"] and "value" not in section["outputs"]
    reference = ActorNetwork(description, {**weights, **q_weights})
    assert reference.has_value and reference.value_key == "q_value"
    observations = np.random.default_rng(6).standard_normal((BARS,) + obs_shape, np.float32)
    head = actor.apply(actor_params, jnp.asarray(observations))
    head = head[0] if isinstance(head, tuple) else head
    if discrete:
        q = critic.apply(critic_params, jnp.asarray(observations)).min(axis=0)
        flax_q = np.take_along_axis(np.asarray(q), np.argmax(head, -1)[:, None], 1)[:, 0]
    else:
        flax_q = np.asarray(critic.apply(critic_params, jnp.asarray(observations),
                                         jnp.tanh(head)).min(axis=0)[:, 0])
    numpy_q = []
    for t, (_, out) in enumerate(_bar_by_bar(session, section, reference, observations)):
        _, q_value, _ = reference.forward_with_value(observations[t])
        assert float(out["q_value"]) == pytest.approx(q_value, abs=1e-5)
        numpy_q.append(q_value)
    np.testing.assert_allclose(numpy_q, flax_q, rtol=1e-5, atol=1e-5)
    assert np.std(numpy_q) > 1e-3  # values that vary with the observation
    batch = session.run(["q_value"], {"observation": observations})[0]
    np.testing.assert_allclose(batch, numpy_q, atol=1e-5)


# --- a trained run: export format=onnx, trade its test split with both engines ----------------
def _run_runner(bundle: Path, *args) -> tuple[subprocess.CompletedProcess, list[dict]]:
    proc = subprocess.run(
        [sys.executable, str(bundle / "runner.py"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return proc, [x for x in lines if "target_position" in x]


@pytest.fixture(scope="module")
def onnx_bundle(ort, tmp_path_factory):
    from jaxtrade.cli import main as cli

    run_dir, _, csv = tiny_run(tmp_path_factory)
    out = tmp_path_factory.mktemp("onnx") / "bundle"
    assert cli(["export", f"run_dir={run_dir}", f"out={out}", "formats=[numpy,onnx]"]) == 0
    start = report_positions(run_dir / "report", "test")["timestamp"][0]
    return out, csv, start


def test_a_trained_run_trades_its_test_split_alike_with_both_engines(onnx_bundle):
    bundle, csv, start = onnx_bundle
    manifest = json.loads((bundle / "manifest.json").read_text())
    section = manifest["onnx"]
    assert section["file"] == "policy.onnx" and section["head"] == "logits"
    assert section["sha256"] == sha256_file(bundle / "policy.onnx")
    assert f"{section['sha256']}  policy.onnx" in (bundle / "SHA256SUMS").read_text()
    assert set(section["outputs"]) == {"action", "target_weight", "logits", "probabilities",
                                       "value"}

    proc_np, numpy_lines = _run_runner(bundle, "--bars", csv, "--start", start)
    proc_onnx, onnx_lines = _run_runner(bundle, "--bars", csv, "--start", start, "--engine", "onnx")
    assert proc_np.returncode == 0 and proc_onnx.returncode == 0, proc_onnx.stderr
    assert len(numpy_lines) >= 50 and len(onnx_lines) == len(numpy_lines)
    for a, b in zip(numpy_lines, onnx_lines):
        assert (a["timestamp"], a["action"]) == (b["timestamp"], b["action"])
        assert a["value"] == pytest.approx(b["value"], abs=2e-6)  # both rounded to 1e-6
        np.testing.assert_allclose(a["probabilities"], b["probabilities"], atol=1e-5)
        assert a["target_position"] == b["target_position"]

    # The graph's own outputs on the observations the numpy runner fed its network.
    from jaxtrade.live.bars import parse_timestamp
    from jaxtrade.live.engine import Runner
    from jaxtrade.live.formats import BarFormat
    from jaxtrade.live.onnx_engine import OnnxActor
    from jaxtrade.live.sources import replay_source

    loaded = load_bundle(bundle)
    runner = Runner(loaded)
    runner.network = recording = _Recording(runner.network)
    runner.run(replay_source(csv, BarFormat(manifest["bars"])), start_us=parse_timestamp(start))
    assert len(recording.calls) == len(numpy_lines)
    graph = OnnxActor(loaded)
    for (obs, logits, value), line in zip(recording.calls, numpy_lines):
        out = graph.run(obs)
        assert float(out["value"]) == pytest.approx(value, abs=1e-5)
        assert int(out["action"]) == int(np.argmax(logits)) == line["action"]
        np.testing.assert_allclose(out["probabilities"], _probabilities(logits), atol=1e-5)
        np.testing.assert_allclose(out["probabilities"], line["probabilities"], atol=1e-5)


class _Recording:
    """A network that keeps every observation it is given, its head output and value."""

    def __init__(self, network: ActorNetwork) -> None:
        self.network = network
        self.calls: list[tuple[np.ndarray, np.ndarray, float | None]] = []

    def forward_with_value(self, obs, carry=None):
        head, value, carry = self.network.forward_with_value(obs, carry)
        self.calls.append((np.array(obs), head, value))
        return head, value, carry

    def __getattr__(self, name):
        return getattr(self.network, name)


def test_a_tampered_policy_onnx_is_refused(onnx_bundle, tmp_path):
    bundle, csv, _ = onnx_bundle
    bad = tmp_path / "tampered"
    shutil.copytree(bundle, bad)
    graph = bad / "policy.onnx"
    raw = bytearray(graph.read_bytes())
    raw[-5] ^= 0x01  # one bit of one weight in the graph
    graph.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="tampered or corrupted ONNX graph"):
        load_bundle(bad)
    for engine in ("numpy", "onnx"):  # listed in SHA256SUMS: refused whichever engine runs
        proc, decisions = _run_runner(bad, "--bars", csv, "--engine", engine)
        assert proc.returncode == 2 and not decisions
        assert "tampered or corrupted ONNX graph" in proc.stderr

    # Changed after the bundle was loaded: the engine checks the bytes it hands onnxruntime.
    from jaxtrade.live.onnx_engine import OnnxActor

    shutil.copy(bundle / "policy.onnx", graph)
    loaded = load_bundle(bad)
    graph.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="tampered or corrupted ONNX graph"):
        OnnxActor(loaded)

    # Dropped from SHA256SUMS (e.g. the sums rewritten for the other files only).
    shutil.copy(bundle / "policy.onnx", graph)
    sums = bad / "SHA256SUMS"
    sums.write_text("".join(x for x in sums.read_text().splitlines(True) if "policy.onnx" not in x))
    with pytest.raises(BundleError, match="sha256 of policy.onnx differs"):
        load_bundle(bad)


def test_a_promoted_bundle_runs_on_the_runners_engine(onnx_bundle, tmp_path,
                                                      tmp_path_factory):
    """`--bundle-pointer` with `--engine onnx`: a promoted bundle with a graph takes over on
    onnxruntime; one without policy.onnx is refused with an alert, the running one trades on."""
    from jaxtrade.cli import main as cli
    from jaxtrade.live.engine import Runner
    from jaxtrade.live.formats import BarFormat
    from jaxtrade.live.onnx_engine import OnnxActor
    from jaxtrade.live.pointer import swap_pointer
    from jaxtrade.live.sinks import Sink
    from jaxtrade.live.sources import replay_source

    class Alerts(Sink):
        def __init__(self) -> None:
            self.alerts: list[dict] = []

        def emit(self, decision: dict) -> None:
            pass

        def alert(self, payload: dict) -> None:
            self.alerts.append(payload)

    bundle, csv, _ = onnx_bundle
    numpy_only, promoted = tmp_path / "numpy-only", tmp_path / "promoted"
    assert cli(["export", f"run_dir={tiny_run(tmp_path_factory)[0]}", f"out={numpy_only}"]) == 0
    shutil.copytree(bundle, promoted)
    pointer = tmp_path / "deployed"
    swap_pointer(pointer, bundle)
    sink = Alerts()
    runner = Runner(load_bundle(bundle), sink=sink, pointer=pointer, engine="onnx")
    records = list(replay_source(csv, BarFormat(load_bundle(bundle).manifest["bars"])))
    third = len(records) // 3
    for record in records[:third]:
        runner.process(record)
    swap_pointer(pointer, numpy_only)
    for record in records[third : 2 * third]:
        runner.process(record)
    assert runner.switches == 0 and isinstance(runner.network, OnnxActor)
    assert [a["kind"] for a in sink.alerts] == ["bundle_refused"]
    assert "has no policy.onnx" in sink.alerts[0]["message"]
    swap_pointer(pointer, promoted)
    decisions = [runner.process(record) for record in records[2 * third :]]
    assert runner.switches == 1 and isinstance(runner.network, OnnxActor)
    assert Path(runner.bundle_root) == promoted
    assert any(d is not None for d in decisions)


# --- without the extra, or without a graph: one line each ------------------------------------
def test_export_without_the_extra_says_what_to_install(monkeypatch, tmp_path):
    from jaxtrade.export import write_bundle

    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError
    with pytest.raises(ExportError, match=r"needs the onnx extra .*pip install -e '\.\[onnx\]'"):
        write_bundle(
            tmp_path / "b",
            params={},
            network_config=NetworkConfig(),
            env=None,
            env_params=None,
            onnx=True,
        )
    assert list(tmp_path.iterdir()) == []


def test_engine_onnx_needs_a_bundle_with_a_graph(tmp_path):
    from jaxtrade.live.onnx_engine import OnnxActor

    with pytest.raises(BundleError, match="has no policy.onnx.*format=onnx"):
        OnnxActor(Bundle(root=tmp_path, manifest={"network": {}}, weights={}))


def test_export_formats_are_parsed_and_checked():
    from experiments.export import parse_formats

    assert parse_formats("onnx") == ("onnx",)
    assert parse_formats("[numpy,onnx]") == ("numpy", "onnx")
    assert parse_formats("numpy, onnx") == ("numpy", "onnx")
    with pytest.raises(ConfigError, match="unknown export format 'tflite'"):
        parse_formats("[numpy,tflite]")
