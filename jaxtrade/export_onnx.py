"""`policy.onnx`: the bundle's policy as an ONNX graph, for onnxruntime (the `onnx` extra).

`jaxtrade export ... format=onnx` (or `formats=[numpy,onnx]`) writes it beside the numpy
weights; the manifest's `onnx` section names it with its sha256, and SHA256SUMS lists it, so
a changed graph is refused like changed weights. The numpy weights, the manifest and the
runner are always written too: the graph replaces only the forward pass, while features,
normalization, the ledger and the risk rules stay the runner's (`runner.py --engine onnx`).

Why the graph is built here with the `onnx` package's helpers, not converted from flax with
jax2onnx: jax2onnx 0.17.1 requires orbax-checkpoint < 0.11.37, and this project runs
orbax-checkpoint 0.12 (`pip install --dry-run jax2onnx` downgrades it to 0.11.36 and pulls in
about 20 more packages), while onnx 1.23 + onnxruntime 1.32 install beside the project's pins
without changing any of them. Building from the bundle's network description and weights
also needs no JAX, and it covers exactly what the numpy runner covers
(jaxtrade/live/network.py): the same parameter names, the same torsos and heads, checked
against the numpy forward pass before the bundle is published.

Graph (opset 17, IR version 8; every shape starts with a `batch` axis of any size):

  inputs   observation     float32 [batch, *obs_shape], normalized as the runner builds it
           hidden          float32 [batch, recurrent_size]   (gru, lstm)
           cell            float32 [batch, recurrent_size]   (lstm)
           critic_hidden, critic_cell                        the same for a critic with its
                                                             own recurrent torso
  outputs  action          int64 [batch] (discrete: argmax), or float32 [batch, D] in the
                           env's action units (continuous: tanh or clip of the mean, scaled)
           target_weight   float32 [batch]: the weight the action asks for (its discrete
                           level, or the continuous action clipped to +-max_leverage; floored
                           at 0 when long_only) before the runner's decision-time risk rules
                           (ATR sizing, regime caps, circuit breaker), which read the portfolio
                           and market state and stay in the runner
           logits, probabilities                 actor-critic, discrete actions
           mean [, log_std]                      actor-critic, continuous actions (log_std for
                                                 a state-independent one, as PPO's)
           value                                 actor-critic with a critic in the bundle
                                                 (PPO, CVaR-PPO): the state value [batch]
           q_value                               replay actor-critic with its Q critics in
                                                 the bundle (SAC, discrete SAC, TD3, DDPG):
                                                 min over the critics of Q(s, pi(s)) [batch]
           q_values [, quantiles], value         Q networks: per-action values acted on (the
                                                 mean, or lower CVaR, of the quantiles), the
                                                 quantiles [batch, A, N], max of q_values
           next_hidden [, next_cell]             recurrent torsos: feed them back next bar
           next_critic_hidden [, next_critic_cell]   a critic's own recurrent torso: likewise

An actor-critic bundle's graph outputs the critic's state value where the bundle holds the
critic (jaxtrade/export.py: PPO and CVaR-PPO; a recurrent critic with its own torso steps its
own cell, its state an input and an output beside the actor's). A replay actor-critic's
graph outputs `q_value`: its critics at the action the graph takes (the unit action
tanh(mean), or the argmax), reduced with Min over the critics, as ActorNetwork.q_value
computes it. Torsos: mlp (LayerNorm after each hidden Dense when the bundle has its
weights), cnn, attention, gru and lstm as single-step cells; the torsos, heads and
activations the numpy runner refuses are refused here too, with the same one line. A network
that observes some features only (the description's `observe_columns`) starts every torso
with a Gather of those columns on the window's feature axis (the flat layout's portfolio
entries after the window stay), as ActorNetwork._observed does.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxtrade.errors import ExportError
from jaxtrade.live.errors import BundleError
from jaxtrade.live.network import ActorNetwork

ONNX_FILE = "policy.onnx"
OPSET = 17  # LayerNormalization is in opset 17; onnxruntime reads it since 1.14
IR_VERSION = 8
F32 = np.float32
EXTRA_HINT = "pip install -e '.[onnx]' (onnx and onnxruntime)"


def require_onnx() -> Any:
    """The onnx package, or one ExportError line naming the extra to install."""
    try:
        import onnx
        import onnxruntime  # noqa: F401 - the export checks the graph with it
    except ImportError as err:
        raise ExportError(
            f"format=onnx needs the onnx extra ({err.name} is missing): {EXTRA_HINT}"
        ) from None
    return onnx


class _Graph:
    """Nodes and initializers of one graph; every helper returns the name of its output."""

    def __init__(self, onnx: Any) -> None:
        self.helper = onnx.helper
        self.numpy_helper = onnx.numpy_helper
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._used: Counter[str] = Counter()
        self._scalars: dict[float, str] = {}

    def name(self, hint: str) -> str:
        count = self._used[hint]
        self._used[hint] += 1
        return f"{hint}_{count}" if count else hint

    def const(self, value: Any, hint: str, dtype: Any = F32) -> str:
        name = self.name(hint)
        array = np.asarray(value, dtype=dtype)
        self.initializers.append(self.numpy_helper.from_array(array, name))
        return name

    def scalar(self, value: float) -> str:
        if value not in self._scalars:
            self._scalars[value] = self.const(value, f"scalar_{value:g}")
        return self._scalars[value]

    def ints(self, values: Sequence[int], hint: str = "shape") -> str:
        return self.const(list(values), hint, np.int64)

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs: Any) -> str:
        (name,) = self.ops(op_type, inputs, 1, outs=[out] if out else None, **attrs)
        return name

    def ops(
        self,
        op_type: str,
        inputs: Sequence[str],
        count: int,
        outs: Sequence[str] | None = None,
        **attrs: Any,
    ) -> list[str]:
        outputs = list(outs) if outs else [self.name(op_type.lower()) for _ in range(count)]
        self.nodes.append(
            self.helper.make_node(
                op_type, list(inputs), outputs, name=self.name(f"node_{op_type}"), **attrs
            )
        )
        return outputs


class _PolicyGraph:
    """Writes the forward pass of an `ActorNetwork` (jaxtrade/live/network.py) as ONNX ops, in
    the same order of operations, so the two agree to float32 rounding."""

    def __init__(self, onnx: Any, net: ActorNetwork, action: Mapping, trading: Mapping) -> None:
        self.g = _Graph(onnx)
        self.net = net
        self.action = action
        self.trading = trading
        self.activation = net.config.get("activation", "tanh")

    # --- layers -------------------------------------------------------------------------------
    def dense(self, x: str, p: Mapping, hint: str) -> str:
        y = self.g.op("MatMul", x, self.g.const(p["kernel"], f"{hint}/kernel"))
        return self.g.op("Add", y, self.g.const(p["bias"], f"{hint}/bias")) if "bias" in p else y

    def fused_dense(self, x: str, layers: Sequence[Mapping], hint: str) -> str:
        """Several Dense layers on the same input as one MatMul (gates of a recurrent cell)."""
        kernel = np.concatenate([p["kernel"] for p in layers], axis=1)
        y = self.g.op("MatMul", x, self.g.const(kernel, f"{hint}/kernel"))
        if not any("bias" in p for p in layers):
            return y
        bias = np.concatenate([p.get("bias", np.zeros(p["kernel"].shape[1], F32)) for p in layers])
        return self.g.op("Add", y, self.g.const(bias, f"{hint}/bias"))

    def layer_norm(self, x: str, p: Mapping, hint: str) -> str:
        return self.g.op(
            "LayerNormalization",
            x,
            self.g.const(p["scale"], f"{hint}/scale"),
            self.g.const(p["bias"], f"{hint}/bias"),
            axis=-1,
            epsilon=1e-6,
        )

    def gelu(self, x: str) -> str:
        # flax's nn.gelu: the tanh approximation, written as network._gelu computes it.
        g = self.g
        cube = g.op("Mul", g.op("Mul", x, x), x)
        inner = g.op(
            "Mul",
            g.scalar(math.sqrt(2.0 / math.pi)),
            g.op("Add", x, g.op("Mul", g.scalar(0.044715), cube)),
        )
        return g.op(
            "Mul", g.op("Mul", g.scalar(0.5), x), g.op("Add", g.scalar(1.0), g.op("Tanh", inner))
        )

    def act(self, x: str) -> str:
        kind = self.activation
        if kind == "tanh":
            return self.g.op("Tanh", x)
        if kind == "relu":
            return self.g.op("Relu", x)
        if kind == "gelu":
            return self.gelu(x)
        if kind == "silu":
            return self.g.op("Mul", x, self.g.op("Sigmoid", x))
        if kind == "elu":
            return self.g.op("Elu", x, alpha=1.0)
        raise ExportError(f"activation {kind!r} has no ONNX form here")

    def mlp(self, x: str, p: Mapping, hint: str) -> str:
        for i in range(self.net.hidden_layers):
            x = self.dense(x, p[f"Dense_{i}"], f"{hint}/Dense_{i}")
            if f"LayerNorm_{i}" in p:
                x = self.layer_norm(x, p[f"LayerNorm_{i}"], f"{hint}/LayerNorm_{i}")
            x = self.act(x)
        return x

    def observed(self, obs: str) -> str:
        """`ActorNetwork._observed`: only the observed columns of every bar (a Gather on the
        window's feature axis); `obs` itself without a selection."""
        net, g = self.net, self.g
        columns = [int(c) for c in net.observe_columns]
        if not columns:
            return obs
        if net.obs_ndim == 2:
            return g.op("Gather", obs, g.ints(columns, "observe_columns"), axis=2)
        bars, feats = (int(d) for d in net.full_window_shape)
        size, total = bars * feats, int(net.obs_shape[0])
        window = g.op("Slice", obs, g.ints([0]), g.ints([size]), g.ints([1]))
        window = g.op("Reshape", window, g.ints([-1, bars, feats]))
        kept = g.op("Gather", window, g.ints(columns, "observe_columns"), axis=2)
        kept = g.op("Reshape", kept, g.ints([-1, bars * len(columns)]))
        if total == size:
            return kept
        state = g.op("Slice", obs, g.ints([size]), g.ints([total]), g.ints([1]))
        return g.op("Concat", kept, state, axis=1)

    def observed_size(self) -> int:
        """Entries of a flat observation after `observed`."""
        net = self.net
        total = int(net.obs_shape[0])
        if not len(net.observe_columns):
            return total
        bars, feats = (int(d) for d in net.full_window_shape)
        return total - bars * (feats - len(net.observe_columns))

    def split_window(self, obs: str) -> tuple[str, str | None]:
        """[batch, W, F] window and [batch, S] state features (None when there are none) of
        an observation after `observed`."""
        if self.net.obs_ndim == 2:
            return obs, None
        bars, feats = (int(d) for d in self.net.window_shape)
        size, total = bars * feats, self.observed_size()
        g = self.g
        window = g.op("Slice", obs, g.ints([0]), g.ints([size]), g.ints([1]))
        window = g.op("Reshape", window, g.ints([-1, bars, feats]))
        if total == size:
            return window, None
        return window, g.op("Slice", obs, g.ints([size]), g.ints([total]), g.ints([1]))

    def with_state(self, x: str, state: str | None) -> str:
        return x if state is None else self.g.op("Concat", x, state, axis=1)

    # --- torsos -------------------------------------------------------------------------------
    def cnn(self, obs: str, p: Mapping, hint: str) -> str:
        window, state = self.split_window(obs)
        x = self.g.op("Transpose", window, perm=[0, 2, 1])  # bars last: ONNX Conv is NCW
        for i in range(len(self.net.config.get("cnn_channels", (16, 16)))):
            conv = p[f"Conv_{i}"]
            weight = np.transpose(conv["kernel"], (2, 1, 0))  # [k, in, out] -> [out, in, k]
            x = self.g.op(
                "Conv",
                x,
                self.g.const(weight, f"{hint}/Conv_{i}/kernel"),
                self.g.const(conv["bias"], f"{hint}/Conv_{i}/bias"),
            )
            x = self.act(x)
        # Flatten as [bars, channels], the order the flax torso flattens in.
        x = self.g.op("Flatten", self.g.op("Transpose", x, perm=[0, 2, 1]), axis=1)
        return self.mlp(self.with_state(x, state), p["MLP_0"], f"{hint}/MLP_0")

    def attention(self, obs: str, p: Mapping, hint: str) -> str:
        g = self.g
        window, state = self.split_window(obs)
        x = g.op(
            "Add",
            self.dense(window, p["Dense_0"], f"{hint}/Dense_0"),
            g.const(p["positions"], f"{hint}/positions"),
        )
        layers = self.net.attention_layers
        for layer in range(layers):
            y = self.layer_norm(x, p[f"LayerNorm_{2 * layer}"], f"{hint}/LayerNorm_{2 * layer}")
            name = f"MultiHeadDotProductAttention_{layer}"
            x = g.op("Add", x, self.self_attention(y, p[name], f"{hint}/{name}"))
            y = self.layer_norm(
                x, p[f"LayerNorm_{2 * layer + 1}"], f"{hint}/LayerNorm_{2 * layer + 1}"
            )
            up, down = f"Dense_{2 * layer + 2}", f"Dense_{2 * layer + 1}"
            hidden = self.gelu(self.dense(y, p[up], f"{hint}/{up}"))
            x = g.op("Add", x, self.dense(hidden, p[down], f"{hint}/{down}"))
        last = f"LayerNorm_{2 * layers}"
        pooled = g.op(
            "ReduceMean", self.layer_norm(x, p[last], f"{hint}/{last}"), axes=[1], keepdims=0
        )
        return self.mlp(self.with_state(pooled, state), p["MLP_0"], f"{hint}/MLP_0")

    def self_attention(self, x: str, p: Mapping, hint: str) -> str:
        g = self.g
        d, heads, k = p["query"]["kernel"].shape
        bars = int(self.net.window_shape[0] if self.net.obs_ndim == 1 else self.net.obs_shape[0])

        def project(name: str) -> str:  # [batch, W, D] -> [batch, H, W, K]
            y = self.dense(
                x,
                {
                    "kernel": p[name]["kernel"].reshape(d, heads * k),
                    "bias": p[name]["bias"].reshape(-1),
                },
                f"{hint}/{name}",
            )
            y = g.op("Reshape", y, g.ints([-1, bars, heads, k]))
            return g.op("Transpose", y, perm=[0, 2, 1, 3])

        q = g.op("Div", project("query"), g.scalar(float(np.sqrt(F32(k)))))
        key, value = project("key"), project("value")
        logits = g.op("MatMul", q, g.op("Transpose", key, perm=[0, 1, 3, 2]))
        mixed = g.op("MatMul", g.op("Softmax", logits, axis=-1), value)
        mixed = g.op(
            "Reshape", g.op("Transpose", mixed, perm=[0, 2, 1, 3]), g.ints([-1, bars, heads * k])
        )
        out = {"kernel": p["out"]["kernel"].reshape(heads * k, -1), "bias": p["out"]["bias"]}
        return self.dense(mixed, out, f"{hint}/out")

    def gru(self, x: str, h: str, p: Mapping, hint: str, prefix: str = "") -> str:
        g = self.g
        xr, xz, xn = g.ops(
            "Split", [self.fused_dense(x, [p["ir"], p["iz"], p["in"]], f"{hint}/input")], 3, axis=1
        )
        hr, hz, hn = g.ops(
            "Split", [self.fused_dense(h, [p["hr"], p["hz"], p["hn"]], f"{hint}/hidden")], 3, axis=1
        )
        r = g.op("Sigmoid", g.op("Add", xr, hr))
        z = g.op("Sigmoid", g.op("Add", xz, hz))
        n = g.op("Tanh", g.op("Add", xn, g.op("Mul", r, hn)))
        return g.op(
            "Add",
            g.op("Mul", g.op("Sub", g.scalar(1.0), z), n),
            g.op("Mul", z, h),
            out=f"next_{prefix}hidden",
        )

    def lstm(self, x: str, c: str, h: str, p: Mapping, hint: str, prefix: str = ""
             ) -> tuple[str, str]:
        g = self.g
        xi, xf, xg, xo = g.ops(
            "Split",
            [self.fused_dense(x, [p["ii"], p["if"], p["ig"], p["io"]], f"{hint}/input")],
            4,
            axis=1,
        )
        hi, hf, hg, ho = g.ops(
            "Split",
            [self.fused_dense(h, [p["hi"], p["hf"], p["hg"], p["ho"]], f"{hint}/hidden")],
            4,
            axis=1,
        )
        i = g.op("Sigmoid", g.op("Add", xi, hi))
        f = g.op("Sigmoid", g.op("Add", xf, hf))
        cand = g.op("Tanh", g.op("Add", xg, hg))
        o = g.op("Sigmoid", g.op("Add", xo, ho))
        cell = g.op("Add", g.op("Mul", f, c), g.op("Mul", i, cand), out=f"next_{prefix}cell")
        return cell, g.op("Mul", o, g.op("Tanh", cell), out=f"next_{prefix}hidden")

    # --- heads --------------------------------------------------------------------------------
    def target_weight(self, action: str) -> str:
        """`Ledger.action_to_weight` for a batch of actions."""
        g = self.g
        if self.action["mode"] == "discrete":
            levels = np.asarray(self.action["discrete_levels"], F32) / F32(1.0)
            weight = g.op("Gather", g.const(levels, "discrete_levels"), action, axis=0)
        else:
            first = g.op("Gather", action, g.const(0, "first_action", np.int64), axis=1)
            first = g.op("Where", g.op("IsNaN", first), g.scalar(0.0), first)
            lev = float(F32(self.trading.get("max_leverage", 1.0)))
            weight = g.op("Clip", first, g.scalar(-lev), g.scalar(lev))
        if self.trading.get("long_only", False):
            weight = g.op("Max", weight, g.scalar(0.0))
        return g.op("Identity", weight, out="target_weight")

    def policy_head(self, x: str) -> list[tuple[str, str, list]]:
        g, params = self.g, self.net.params
        head = self.dense(x, params["policy_head"], "policy_head")
        dim = int(params["policy_head"]["kernel"].shape[1])
        if self.action["mode"] == "discrete":
            logits = g.op("Identity", head, out="logits")
            probs = g.op("Softmax", logits, axis=-1, out="probabilities")
            action = g.op("ArgMax", logits, axis=1, keepdims=0, out="action")
            return [
                (action, "int64", ["batch"]),
                (self.target_weight(action), "float", ["batch"]),
                (logits, "float", ["batch", dim]),
                (probs, "float", ["batch", dim]),
            ]
        mean = g.op("Identity", head, out="mean")
        if self.action.get("squash") == "tanh":
            unit = g.op("Tanh", mean)
        else:
            unit = g.op("Clip", mean, g.scalar(-1.0), g.scalar(1.0))
        low = np.asarray(self.action["low"], F32)
        span = np.asarray(self.action["high"], F32) - low
        scaled = g.op(
            "Mul",
            g.op("Mul", g.op("Add", unit, g.scalar(1.0)), g.scalar(0.5)),
            g.const(span, "action_span"),
        )
        action = g.op("Add", g.const(low, "action_low"), scaled, out="action")
        outputs = [
            (action, "float", ["batch", dim]),
            (self.target_weight(action), "float", ["batch"]),
            (mean, "float", ["batch", dim]),
        ]
        if "log_std" in params and isinstance(params["log_std"], np.ndarray):
            log_std = g.op(
                "Expand",
                g.const(params["log_std"], "log_std_param"),
                g.op("Shape", mean),
                out="log_std",
            )
            outputs.append((log_std, "float", ["batch", dim]))
        return outputs

    def q_head(self, x: str) -> list[tuple[str, str, list]]:
        """`ActorNetwork._action_values` for a batch: [batch, A] values acted on."""
        g, net, params = self.g, self.net, self.net.params
        width = max(net.num_quantiles, 1)
        if net.head == "dueling":
            value = g.op(
                "Reshape",
                self.dense(x, params["dueling_value"], "dueling_value"),
                g.ints([-1, 1, width]),
            )
            adv = self.dense(x, params["dueling_advantage"], "dueling_advantage")
            actions = int(params["dueling_advantage"]["kernel"].shape[1]) // width
            adv = g.op("Reshape", adv, g.ints([-1, actions, width]))
            q = g.op("Sub", g.op("Add", value, adv), g.op("ReduceMean", adv, axes=[1], keepdims=1))
        else:
            actions = int(params["q_head"]["kernel"].shape[1]) // width
            q = g.op(
                "Reshape", self.dense(x, params["q_head"], "q_head"), g.ints([-1, actions, width])
            )
        outputs = []
        if not net.num_quantiles:
            values = g.op("Reshape", q, g.ints([-1, actions]), out="q_values")
        else:
            quantiles = g.op("Identity", q, out="quantiles")
            outputs.append((quantiles, "float", ["batch", actions, width]))
            if net.act_on == "cvar":
                k = max(1, min(width, math.ceil(net.act_cvar_alpha * width)))
                lowest, _ = g.ops(
                    "TopK", [q, g.ints([k], "cvar_k")], 2, axis=2, largest=0, sorted=1
                )
                values = g.op("ReduceMean", lowest, axes=[2], keepdims=0, out="q_values")
            else:
                values = g.op("ReduceMean", q, axes=[2], keepdims=0, out="q_values")
        action = g.op("ArgMax", values, axis=1, keepdims=0, out="action")
        value = g.op("ReduceMax", values, axes=[1], keepdims=0, out="value")
        return [
            (action, "int64", ["batch"]),
            (self.target_weight(action), "float", ["batch"]),
            (values, "float", ["batch", actions]),
            *outputs,
            (value, "float", ["batch"]),
        ]

    def q_value(self, obs: str) -> str:
        """`ActorNetwork.q_value` for a batch: min over the Q critics of Q(s, pi(s)), read at
        the graph's `mean` (continuous) or `action` (discrete) output."""
        g, net = self.g, self.net
        unit = None
        if net.q_takes_action:
            if net.config.get("continuous_squash") == "tanh":
                unit = g.op("Tanh", "mean")
            else:
                unit = g.op("Clip", "mean", g.scalar(-1.0), g.scalar(1.0))
        values = []
        for i, p in enumerate(net.q_critics):
            hint = f"q_critics/{i}"
            if unit is None:
                x = self.features(obs, p["critic_torso"], f"{hint}/critic_torso")
            elif net.torso == "mlp":
                joined = g.op("Concat", g.op("Flatten", self.observed(obs), axis=1), unit,
                              axis=1)
                x = self.mlp(joined, p["critic_torso"], f"{hint}/critic_torso")
            else:
                x = self.features(obs, p["critic_torso"], f"{hint}/critic_torso")
                x = self.act(self.dense(g.op("Concat", x, unit, axis=1), p["Dense_0"],
                                        f"{hint}/Dense_0"))
            values.append(self.dense(x, p["q_head"], f"{hint}/q_head"))
        q = values[0] if len(values) == 1 else g.op("Min", *values)
        if unit is None:  # Q(s, .) [batch, A] at the greedy action
            taken = g.op("Unsqueeze", "action", g.ints([1], "axis_1"))
            q = g.op("GatherElements", q, taken, axis=1)
        return g.op("Reshape", q, g.ints([-1]), out="q_value")

    def features(self, obs: str, p: Mapping, hint: str) -> str:
        """`ActorNetwork._features`: a feed-forward torso, or a recurrent torso's embedding."""
        obs = self.observed(obs)
        if self.net.torso == "cnn":
            return self.cnn(obs, p["CNNTorso_0"], f"{hint}/CNNTorso_0")
        if self.net.torso == "attention":
            return self.attention(obs, p["AttentionTorso_0"], f"{hint}/AttentionTorso_0")
        return self.mlp(self.g.op("Flatten", obs, axis=1), p.get("MLP_0", {}), f"{hint}/MLP_0")

    def torso(self, obs: str, p: Mapping, hint: str, prefix: str, inputs: list,
              state: dict[str, str]) -> str:
        """`ActorNetwork._torso`: features, then one step of the recurrent cell, whose state
        inputs (`prefix` + hidden / cell) and outputs (next_ + them) are added to `inputs`
        and `state`."""
        x = self.features(obs, p, hint)
        size = self.net.recurrent_size
        if self.net.torso == "gru":
            inputs.append((f"{prefix}hidden", ["batch", size]))
            state[f"{prefix}hidden"] = f"next_{prefix}hidden"
            return self.gru(x, f"{prefix}hidden", p["GRUCell_0"], f"{hint}/GRUCell_0", prefix)
        if self.net.torso == "lstm":
            inputs += [(f"{prefix}cell", ["batch", size]), (f"{prefix}hidden", ["batch", size])]
            state.update({f"{prefix}cell": f"next_{prefix}cell",
                          f"{prefix}hidden": f"next_{prefix}hidden"})
            _, x = self.lstm(x, f"{prefix}cell", f"{prefix}hidden", p["OptimizedLSTMCell_0"],
                             f"{hint}/OptimizedLSTMCell_0", prefix)
        return x

    # --- the whole graph ----------------------------------------------------------------------
    def build(self) -> tuple[Any, dict[str, Any]]:
        g, net = self.g, self.net
        helper = g.helper
        obs_shape = [int(d) for d in net.obs_shape]
        inputs = [("observation", ["batch", *obs_shape])]
        state: dict[str, str] = {}
        x = self.torso("observation", net.torso_params, "torso", "", inputs, state)
        if net.family == "q":
            if self.action["mode"] != "discrete":
                raise ExportError("a Q network needs discrete actions")
            outputs = self.q_head(x)
            head = "q_values"
        else:
            outputs = self.policy_head(x)
            head = "logits" if self.action["mode"] == "discrete" else "mean"
            if net.q_critics:  # ActorNetwork.q_value
                outputs.append((self.q_value("observation"), "float", ["batch"]))
            elif net.has_value:  # ActorNetwork._step: the critic's torso, or the shared one
                critic = x if net.critic_params is None else self.torso(
                    "observation", net.critic_params, "critic_torso", "critic_", inputs, state)
                value = self.dense(critic, net.params["value_head"], "value_head")
                value = g.op("Reshape", value, g.ints([-1]), out="value")
                outputs.append((value, "float", ["batch"]))
        size = net.recurrent_size
        outputs += [(name, "float", ["batch", size]) for name in state.values()]
        float_type = helper.np_dtype_to_tensor_dtype(np.dtype(F32))
        int_type = helper.np_dtype_to_tensor_dtype(np.dtype(np.int64))
        graph = helper.make_graph(
            g.nodes,
            "jaxtrade_policy",
            [helper.make_tensor_value_info(name, float_type, shape) for name, shape in inputs],
            [
                helper.make_tensor_value_info(
                    name, int_type if kind == "int64" else float_type, shape
                )
                for name, kind, shape in outputs
            ],
            initializer=g.initializers,
        )
        model = helper.make_model(
            graph, producer_name="jaxtrade", opset_imports=[helper.make_opsetid("", OPSET)]
        )
        model.ir_version = IR_VERSION
        model.doc_string = (__doc__ or "").split("\n\n")[0]
        section = {
            "opset": OPSET,
            "inputs": dict(inputs),
            "outputs": {name: shape for name, _, shape in outputs},
            "head": head,
            "state": state,
        }
        return model, section


def build_policy_model(
    network: Mapping[str, Any],
    action: Mapping[str, Any],
    trading: Mapping[str, Any],
    weights: Mapping[str, np.ndarray],
) -> tuple[Any, dict[str, Any]]:
    """The ONNX model of a bundle's policy and its manifest section (without file and sha256).

    `network`, `action` and `trading` are the manifest's sections of those names; `weights`
    the flat "/"-named arrays of weights.safetensors.
    """
    onnx = require_onnx()
    try:
        net = ActorNetwork(dict(network), dict(weights))
    except BundleError as err:
        raise ExportError(f"cannot build policy.onnx: {err}") from None
    model, section = _PolicyGraph(onnx, net, action, trading).build()
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as err:
        raise ExportError(f"the built policy.onnx is not a valid ONNX model: {err}") from None
    return model, section


def write_policy_onnx(
    root: str | Path, manifest: Mapping[str, Any], weights: Mapping[str, np.ndarray]
) -> dict[str, Any]:
    """Writes root/policy.onnx; returns the manifest's `onnx` section (file, sha256, I/O)."""
    from jaxtrade.live.bundle import sha256_file

    model, section = build_policy_model(
        manifest["network"], manifest["action"], manifest.get("trading", {}), weights
    )
    path = Path(root) / ONNX_FILE
    path.write_bytes(model.SerializeToString())
    return {"file": ONNX_FILE, "sha256": sha256_file(path), **section}


def check_against_numpy(root: str | Path, observations: int = 16) -> None:
    """Refuses (ExportError) a written bundle whose policy.onnx, run by onnxruntime, differs
    from the numpy forward pass on random observations, the recurrent state carried."""
    from jaxtrade.live.bundle import load_bundle
    from jaxtrade.live.onnx_engine import OnnxActor

    bundle = load_bundle(root)
    reference = ActorNetwork(bundle.manifest["network"], bundle.weights)
    graph = OnnxActor(bundle)
    rng = np.random.default_rng(0)
    carry_np, carry_onnx = reference.initial_carry(), graph.initial_carry()
    for i in range(observations):
        obs = rng.standard_normal(reference.obs_shape).astype(F32)
        expected, value_np, carry_np = reference.forward_with_value(obs, carry_np)
        got, value_onnx, carry_onnx = graph.forward_with_value(obs, carry_onnx)
        if (value_np is None) != (value_onnx is None):
            raise ExportError("policy.onnx and the numpy weights disagree on holding a state "
                              "value; the bundle was not written")
        if value_np is not None:
            expected, got = np.append(expected, value_np), np.append(got, value_onnx)
        error = float(np.max(np.abs(np.asarray(got) - expected)))
        if not error <= 1e-4 * (1.0 + float(np.max(np.abs(expected)))):
            raise ExportError(
                f"policy.onnx differs from the numpy forward pass by {error:.3g} "
                f"on observation {i}; the bundle was not written"
            )
