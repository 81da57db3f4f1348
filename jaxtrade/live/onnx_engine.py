"""The bundle's policy.onnx run by onnxruntime: `runner.py --engine onnx`.

Optional: the runner needs onnxruntime only when this engine is asked for (`pip install
onnxruntime`, or the `jaxtrade[onnx]` extra), and the bundle needs a policy.onnx (`jaxtrade
export ... format=onnx`). Everything else per bar (features, normalization, observation,
ledger, risk rules) is the numpy runner's own code: `OnnxActor` has `ActorNetwork`'s
interface (`forward(obs, carry) -> (head, carry)`, `initial_carry()`, `obs_shape`) and
returns the same head output (logits, Gaussian mean or Q values), so both engines decide
through the same lines of engine.py.

The graph's bytes are checked against the manifest's sha256 (itself checked against
SHA256SUMS when the bundle was loaded) before onnxruntime reads them. onnxruntime runs on one
thread: a single observation per bar is far too small to gain from more, and a live runner
shares its machine.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from .bundle import Bundle
from .errors import BundleError

F32 = np.float32
INSTALL_HINT = "pip install onnxruntime, or the jaxtrade[onnx] extra"


class OnnxActor:
    """Policy forward pass through onnxruntime; `carry` as `ActorNetwork` keeps it."""

    def __init__(self, bundle: Bundle, *, threads: int = 1) -> None:
        section = bundle.manifest.get("onnx")
        if not isinstance(section, dict) or not isinstance(section.get("file"), str):
            raise BundleError(
                f"{bundle.root}: the bundle has no policy.onnx (export it with "
                "format=onnx to use --engine onnx)"
            )
        try:
            import onnxruntime as ort
        except ImportError:
            raise BundleError(f"--engine onnx needs onnxruntime ({INSTALL_HINT})") from None
        path = bundle.root / section["file"]
        if path.is_symlink() or not path.is_file():
            raise BundleError(f"{path}: missing or a symbolic link; a bundle holds its own files")
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != section.get("sha256"):
            raise BundleError(
                f"{path}: sha256 does not match the bundle's; refusing a tampered "
                "or corrupted ONNX graph"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise BundleError(f"{path}: onnxruntime cannot load it ({err})") from None
        network = bundle.manifest.get("network", {})
        self.obs_shape = tuple(int(d) for d in network.get("obs_shape", ()))
        self.torso = network.get("config", {}).get("torso", "mlp")
        self.recurrent_size = int(network.get("config", {}).get("recurrent_size", 64))
        self.head = str(section.get("head", "logits"))
        # Input name -> output name of the recurrent state ({} for feed-forward torsos).
        self.state: dict[str, str] = dict(section.get("state", {}))
        self.outputs = [o.name for o in self.session.get_outputs()]
        expected = {"gru": ["hidden"], "lstm": ["cell", "hidden"]}.get(self.torso, [])
        # A critic with its own recurrent torso: its state follows the actor's in the carry.
        self.recurrent_critic = bool(expected) and f"critic_{expected[0]}" in self.state
        if self.recurrent_critic:
            expected = expected + [f"critic_{name}" for name in expected]
        if self.head not in self.outputs or sorted(self.state) != sorted(expected):
            raise BundleError(
                f"{path}: its outputs {self.outputs} do not fit the manifest's {self.torso} network"
            )
        # The state inputs in the order the carry flattens (actor's, then critic's; cell,
        # hidden), and the head then the next state in that order.
        self._order = expected
        self._fetch = [self.head, *(self.state[name] for name in expected)]
        # An actor-critic's graph with the critic's state value, or a replay actor-critic's
        # Q(s, pi(s)) (ActorNetwork.has_value / value_key).
        self.value_key = "q_value" if "q_value" in self.outputs else "value"
        self.has_value = self.head != "q_values" and self.value_key in self.outputs

    def initial_carry(self) -> Any:
        """As ActorNetwork's: the torso's zero state, or (actor's, critic's)."""
        if self.recurrent_critic:
            return (self._torso_carry(), self._torso_carry())
        return self._torso_carry()

    def _torso_carry(self) -> Any:
        zeros = np.zeros(self.recurrent_size, F32)
        if self.torso == "lstm":
            return (zeros, zeros.copy())
        return zeros if self.torso == "gru" else None

    def _feeds(self, obs: np.ndarray, carry: Any) -> dict[str, np.ndarray]:
        feeds = {"observation": np.asarray(obs, F32).reshape((-1, *self.obs_shape))}
        if not self._order:
            return feeds
        parts = carry if self.recurrent_critic else (carry,)
        values = [v for part in parts for v in (part if self.torso == "lstm" else (part,))]
        for name, value in zip(self._order, values):
            feeds[name] = np.asarray(value, F32).reshape(1, -1)
        return feeds

    def forward(self, obs: np.ndarray, carry: Any = None) -> tuple[np.ndarray, Any]:
        """Head output for one observation (logits, Gaussian mean or Q values), next carry."""
        head, *state = self.session.run(self._fetch, self._feeds(obs, carry))
        return head[0], self._next_carry(state)

    def forward_with_value(self, obs: np.ndarray, carry: Any = None
                           ) -> tuple[np.ndarray, float | None, Any]:
        """`forward` plus the graph's state value or Q(s, pi(s)) (None without one), as
        ActorNetwork's."""
        if not self.has_value:
            head, carry = self.forward(obs, carry)
            return head, None, carry
        head, value, *state = self.session.run([self._fetch[0], self.value_key,
                                                *self._fetch[1:]],
                                               self._feeds(obs, carry))
        return head[0], float(value[0]), self._next_carry(state)

    def _next_carry(self, state: list[np.ndarray]) -> Any:
        if not self._order:
            return None
        values = [s[0] for s in state]
        if self.torso == "lstm":
            parts = [(values[i], values[i + 1]) for i in range(0, len(values), 2)]
        else:
            parts = values
        return (parts[0], parts[1]) if self.recurrent_critic else parts[0]

    def run(self, obs: np.ndarray, carry: Any = None) -> dict[str, np.ndarray]:
        """Every output of the graph for one observation (action, target_weight, beliefs,
        next state), batch axis dropped."""
        values = self.session.run(self.outputs, self._feeds(obs, carry))
        return {name: value[0] for name, value in zip(self.outputs, values)}
