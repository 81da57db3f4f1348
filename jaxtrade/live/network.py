"""Numpy forward pass of the exported actor (the policy half of `agents.common.networks`).

The bundle stores the actor's parameters flattened with "/" (e.g.
`actor_torso/MLP_0/Dense_0/kernel`) and the network description (`NetworkConfig` as a dict,
the observation rank, the action spec). This module recomputes exactly what the flax modules
compute, in float32, one observation at a time:

  mlp        Dense+activation layers over the flat observation
  cnn        VALID 1-D convolutions over the bar axis, flatten, concat state, MLP
  attention  Dense embedding + learned positions, pre-norm encoder blocks, final LayerNorm,
             mean over bars, concat state, MLP
  gru/lstm   MLP embedding, then one step of the recurrent cell; the carry is kept between bars

Actor-critic bundles (PPO, CVaR-PPO) also hold the critic's value head and, unless it shares
the actor's torso, the critic torso: `forward_with_value` returns the state value beside the
policy head, which the runner prints as what the policy believes the state is worth. A
recurrent critic with its own torso steps its own cell: the carry is then the pair (actor
state, critic state), both carried bar to bar. Bundles of the replay actor-critics (SAC,
discrete SAC, TD3, DDPG) hold their Q critics instead (weights `q_critics/<i>/...`, the
manifest's `q_critic` section): `forward_with_value` then returns Q(s, pi(s)), the critics
evaluated at the action the exported actor takes (the unit action tanh(mean) for continuous
actions, the argmax for discrete ones) and reduced with the minimum over the critics (one
critic for DDPG), and
`value_key` is "q_value" so the runner prints it under that name. Value-based agents (DQN,
QR-DQN; network family "q") export their Q network instead: the torso, then a Q head (or a
dueling value + advantage head), and `forward` returns one value per action, the mean (or
lower-tail CVaR) of the quantiles for distributional heads, so argmax is the greedy action
exactly as in training. Any torso or activation not listed is refused with `BundleError` when
the bundle is loaded, never at the first bar.

A network that observes some features only (`network.observe`; the description's
`observe_columns`: the columns of one bar's row it keeps) drops the others from every bar of
the window before each torso, as `select_observed` in agents.common.networks does: a [W, N]
observation keeps those columns of each row; a flat one is read as the W x F window of
`window_shape`, narrowed to them, and its portfolio entries after the window stay.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import BundleError

F32 = np.float32
_SQRT_2_OVER_PI = F32(math.sqrt(2.0 / math.pi))


def _gelu(x: np.ndarray) -> np.ndarray:
    # flax's nn.gelu is the tanh approximation by default.
    # x * x * x, not x**3: numpy's float32 power is a slow general pow.
    inner = _SQRT_2_OVER_PI * (x + F32(0.044715) * (x * x * x))
    return F32(0.5) * x * (F32(1.0) + np.tanh(inner))


def _elu(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, np.expm1(np.minimum(x, F32(0.0)))).astype(F32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (F32(1.0) / (F32(1.0) + np.exp(-x))).astype(F32)


ACTIVATIONS = {
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, F32(0.0)),
    "gelu": _gelu,
    "silu": lambda x: x * _sigmoid(x),
    "elu": _elu,
}
TORSOS = ("mlp", "cnn", "attention", "gru", "lstm")


def _layer_norm(x: np.ndarray, p: dict, eps: float = 1e-6) -> np.ndarray:
    n = F32(x.shape[-1])
    mean = np.add.reduce(x, axis=-1, keepdims=True) / n
    var = np.maximum(np.add.reduce(x * x, axis=-1, keepdims=True) / n - mean * mean, F32(0.0))
    return (x - mean) / np.sqrt(var + F32(eps)) * p["scale"] + p["bias"]


def _dense(x: np.ndarray, p: dict) -> np.ndarray:
    y = x @ p["kernel"]
    return y + p["bias"] if "bias" in p else y


class ActorNetwork:
    """Policy forward pass; `carry` is the recurrent state (None for feed-forward torsos)."""

    def __init__(self, description: dict, params: dict[str, np.ndarray]) -> None:
        config = description.get("config", {})
        self.torso = config.get("torso", "mlp")
        if self.torso not in TORSOS:
            raise BundleError(f"network torso {self.torso!r} is not supported by the runner")
        activation = config.get("activation", "tanh")
        if activation not in ACTIVATIONS:
            raise BundleError(f"activation {activation!r} is not supported by the runner")
        self.act = ACTIVATIONS[activation]
        self.config = config
        self.obs_shape = tuple(int(d) for d in description.get("obs_shape", ()))
        self.obs_ndim = len(self.obs_shape)
        if self.obs_ndim not in (1, 2):
            raise BundleError(f"observation shape {self.obs_shape} is not [N] or [W, N]")
        self.hidden_layers = len(config.get("hidden_sizes", (64, 64)))
        self.window_shape = config.get("window_shape")
        self.num_state = int(config.get("num_state_features", 0))
        self.observe_columns = np.asarray(config.get("observe_columns") or (), np.int64)
        self.full_window_shape = self.window_shape
        if self.observe_columns.size:
            self._check_observe_columns()
            if self.obs_ndim == 1:  # the torsos read the narrowed window
                self.window_shape = (int(self.window_shape[0]), int(self.observe_columns.size))
        self.heads = int(config.get("attention_heads", 2))
        self.attention_layers = int(config.get("attention_layers", 1))
        self.recurrent_size = int(config.get("recurrent_size", 64))
        self.params = _nest({k: np.asarray(v, F32) for k, v in params.items()})
        self.family = description.get("family", "actor_critic")
        self.head = description.get("head", "q")
        self.num_quantiles = int(description.get("num_quantiles", 0))
        self.act_on = description.get("act_on", "mean")
        self.act_cvar_alpha = float(description.get("act_cvar_alpha", 1.0))
        if self.family == "q":
            prefix = "torso"
            heads = ("dueling_value", "dueling_advantage") if self.head == "dueling" else (
                "q_head",)
        elif self.family == "actor_critic":
            prefix = "torso" if config.get("shared_torso") else "actor_torso"
            heads = ("policy_head",)
            if "value_head" in self.params:
                heads += ("value_head",)
                if not config.get("shared_torso"):
                    heads += ("critic_torso",)
        else:
            raise BundleError(f"network family {self.family!r} is not supported by the runner")
        if self.torso == "mlp" and self.hidden_layers == 0:
            # A linear policy (hidden_sizes=[]): flax stores no parameters for its torsos.
            self.params.setdefault(prefix, {})
            if "critic_torso" in heads:
                self.params.setdefault("critic_torso", {})
        missing = [name for name in (prefix, *heads) if name not in self.params]
        if missing:
            raise BundleError(f"bundle weights lack {missing}")
        self.torso_params = self.params[prefix]
        # The critic's torso (None: it shares the actor's); has_value: the bundle holds one.
        self.has_value = self.family == "actor_critic" and "value_head" in self.params
        # A recurrent critic with its own torso: the carry is (actor state, critic state).
        self.recurrent_critic = (self.has_value and self.torso in ("gru", "lstm")
                                 and not config.get("shared_torso"))
        self.critic_params = self.params.get("critic_torso") if self.has_value else None
        # The replay actor-critics' Q critics (the manifest's `q_critic` section).
        q_critic = description.get("q_critic") if self.family == "actor_critic" else None
        self.q_critics: list[dict] = []
        self.q_takes_action = False
        if q_critic:
            count = int(q_critic.get("num_critics", 0))
            if q_critic.get("reduce", "min") != "min" or count < 1:
                raise BundleError(f"q_critic section {q_critic} is not supported by the runner")
            stored = self.params.get("q_critics", {})
            missing = [str(i) for i in range(count) if str(i) not in stored]
            if missing:
                raise BundleError(f"bundle weights lack q_critics/{missing[0]}")
            self.q_critics = [stored[str(i)] for i in range(count)]
            self.q_takes_action = bool(q_critic.get("takes_action", True))
            self.has_value = True
        # What the runner calls the value in its decision line.
        self.value_key = "q_value" if self.q_critics else "value"
        self.action = description.get("action", {})
        self._fused: dict[int, tuple] = {}
        self._check_shapes()

    def _check_shapes(self) -> None:
        try:
            probe = np.zeros(self.obs_shape, F32)
            self.forward_with_value(probe, self.initial_carry())
        except (KeyError, ValueError, IndexError) as err:
            raise BundleError(
                f"bundle weights do not fit the {self.torso} network: {err}"
            ) from None

    def _check_observe_columns(self) -> None:
        columns = self.observe_columns
        if self.obs_ndim == 1 and self.window_shape is None:
            raise BundleError("the network's observe_columns need the window_shape of its flat "
                              "observation")
        width = self.obs_shape[-1] if self.obs_ndim == 2 else int(self.window_shape[1])
        if columns.min() < 0 or columns.max() >= width or len(set(columns.tolist())) != len(
                columns):
            raise BundleError(f"the network's observe_columns {columns.tolist()} are not "
                              f"distinct columns of its {width}-column window rows")

    def _observed(self, obs: np.ndarray) -> np.ndarray:
        """`obs` with only the observed columns of every bar (the whole of it without a
        selection; see the module docstring)."""
        if not self.observe_columns.size:
            return obs
        if self.obs_ndim == 2:
            return obs[:, self.observe_columns]
        bars, feats = self.full_window_shape
        window = obs[: bars * feats].reshape(bars, feats)[:, self.observe_columns]
        return np.concatenate([window.reshape(-1), obs[bars * feats :]])

    def initial_carry(self):
        """The zero recurrent state (None for feed-forward torsos): the torso's, or (actor
        state, critic state) when the critic has its own recurrent torso."""
        if self.recurrent_critic:
            return (self._torso_carry(), self._torso_carry())
        return self._torso_carry()

    def _torso_carry(self):
        zeros = np.zeros(self.recurrent_size, F32)
        if self.torso == "lstm":
            return (zeros, zeros.copy())
        return zeros if self.torso == "gru" else None

    # --- torsos -------------------------------------------------------------------------------
    def _mlp(self, x: np.ndarray, p: dict) -> np.ndarray:
        for i in range(self.hidden_layers):
            x = _dense(x, p[f"Dense_{i}"])
            x = self.act(_layer_norm(x, p[f"LayerNorm_{i}"]) if f"LayerNorm_{i}" in p else x)
        return x

    def _split_window(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.obs_ndim == 2:
            return obs, np.zeros(0, F32)
        bars, feats = self.window_shape
        return obs[: bars * feats].reshape(bars, feats), obs[bars * feats :]

    def _cnn(self, obs: np.ndarray, p: dict) -> np.ndarray:
        x, state = self._split_window(obs)
        for i in range(len(self.config.get("cnn_channels", (16, 16)))):
            conv = p[f"Conv_{i}"]
            kernel = conv["kernel"]  # [k, in, out]
            k = kernel.shape[0]
            out_len = x.shape[0] - k + 1
            # VALID convolution as k shifted matrix products (cheap at window sizes of ~32).
            y = sum(x[j : j + out_len] @ kernel[j] for j in range(k))
            x = self.act(y + conv["bias"])
        return self._mlp(np.concatenate([x.reshape(-1), state]), p["MLP_0"])

    def _attention(self, obs: np.ndarray, p: dict) -> np.ndarray:
        window, state = self._split_window(obs)
        x = _dense(window, p["Dense_0"]) + p["positions"]
        for layer in range(self.attention_layers):
            y = _layer_norm(x, p[f"LayerNorm_{2 * layer}"])
            x = x + self._self_attention(y, p[f"MultiHeadDotProductAttention_{layer}"])
            y = _layer_norm(x, p[f"LayerNorm_{2 * layer + 1}"])
            hidden = _gelu(_dense(y, p[f"Dense_{2 * layer + 2}"]))
            x = x + _dense(hidden, p[f"Dense_{2 * layer + 1}"])
        pooled = _layer_norm(x, p[f"LayerNorm_{2 * self.attention_layers}"]).mean(axis=0)
        return self._mlp(np.concatenate([pooled, state]), p["MLP_0"])

    def _self_attention(self, x: np.ndarray, p: dict) -> np.ndarray:
        fused = self._fused.get(id(p))
        if fused is None:
            # One [D, 3*H*K] matrix for query/key/value: one matmul instead of three einsums.
            d, heads, k = p["query"]["kernel"].shape
            kernel = np.concatenate(
                [p[n]["kernel"].reshape(d, heads * k) for n in ("query", "key", "value")], 1
            )
            bias = np.concatenate([p[n]["bias"].reshape(-1) for n in ("query", "key", "value")])
            out = p["out"]["kernel"].reshape(heads * k, -1)
            fused = self._fused[id(p)] = (kernel, bias, out, p["out"]["bias"], heads, k)
        kernel, bias, out_kernel, out_bias, heads, k = fused
        bars = x.shape[0]
        qkv = (x @ kernel + bias).reshape(bars, 3, heads, k).transpose(1, 2, 0, 3)
        q, key, v = qkv[0] / np.sqrt(F32(k)), qkv[1], qkv[2]  # each [H, W, K]
        logits = q @ key.transpose(0, 2, 1)
        logits = logits - logits.max(axis=-1, keepdims=True)
        weights = np.exp(logits)
        weights = weights / weights.sum(axis=-1, keepdims=True)
        mixed = (weights @ v).transpose(1, 0, 2).reshape(bars, heads * k)
        return mixed @ out_kernel + out_bias

    def _gru(self, x: np.ndarray, h: np.ndarray, p: dict) -> np.ndarray:
        r = _sigmoid(_dense(x, p["ir"]) + _dense(h, p["hr"]))
        z = _sigmoid(_dense(x, p["iz"]) + _dense(h, p["hz"]))
        n = np.tanh(_dense(x, p["in"]) + r * _dense(h, p["hn"]))
        return (F32(1.0) - z) * n + z * h

    def _lstm(self, x: np.ndarray, carry: tuple, p: dict) -> tuple:
        c, h = carry
        i = _sigmoid(_dense(x, p["ii"]) + _dense(h, p["hi"]))
        f = _sigmoid(_dense(x, p["if"]) + _dense(h, p["hf"]))
        g = np.tanh(_dense(x, p["ig"]) + _dense(h, p["hg"]))
        o = _sigmoid(_dense(x, p["io"]) + _dense(h, p["ho"]))
        c = f * c + i * g
        return (c, o * np.tanh(c))

    # --- policy ----------------------------------------------------------------------------
    def _features(self, obs: np.ndarray, p: dict) -> np.ndarray:
        """A feed-forward torso (or a recurrent torso's embedding) of the observation."""
        obs = self._observed(obs)
        if self.torso == "cnn":
            return self._cnn(obs, p["CNNTorso_0"])
        if self.torso == "attention":
            return self._attention(obs, p["AttentionTorso_0"])
        return self._mlp(obs.reshape(-1), p.get("MLP_0", {}))

    def forward(self, obs: np.ndarray, carry=None) -> tuple[np.ndarray, object]:
        """Policy head output (logits, the Gaussian mean, or Q values) and the next carry."""
        head, _, carry = self._step(np.asarray(obs, F32), carry, with_value=False)
        return head, carry

    def forward_with_value(self, obs: np.ndarray, carry=None) -> tuple[np.ndarray, float | None,
                                                                       object]:
        """`forward` plus the critic's state value (None when the bundle has no critic)."""
        return self._step(np.asarray(obs, F32), carry, with_value=self.has_value)

    def _torso(self, obs: np.ndarray, carry, p: dict) -> tuple[np.ndarray, object]:
        """A torso's features of `obs` and its next recurrent state (`carry` unchanged for
        feed-forward torsos)."""
        x = self._features(obs, p)
        if self.torso == "gru":
            carry = self._gru(x, carry, p["GRUCell_0"])
            return carry, carry
        if self.torso == "lstm":
            carry = self._lstm(x, carry, p["OptimizedLSTMCell_0"])
            return carry[1], carry
        return x, carry

    def _step(self, obs: np.ndarray, carry, with_value: bool):
        if self.recurrent_critic:  # both cells step every bar, the value read or not
            actor_carry, critic_carry = carry
            x, actor_carry = self._torso(obs, actor_carry, self.torso_params)
            critic_x, critic_carry = self._torso(obs, critic_carry, self.critic_params)
            value = float(_dense(critic_x, self.params["value_head"])[0]) if with_value else None
            return (_dense(x, self.params["policy_head"]), value, (actor_carry, critic_carry))
        x, carry = self._torso(obs, carry, self.torso_params)
        if self.family == "q":
            return self._action_values(x), None, carry
        value = None
        head = _dense(x, self.params["policy_head"])
        if with_value and self.q_critics:
            value = self.q_value(obs, head)
        elif with_value:
            critic_x = x if self.critic_params is None else self._features(obs, self.critic_params)
            value = float(_dense(critic_x, self.params["value_head"])[0])
        return head, value, carry

    def q_value(self, obs: np.ndarray, head: np.ndarray) -> float:
        """min_i Q_i(s, pi(s)) of the replay actor-critics' critics (`QCritic` in
        agents.common.networks): a continuous critic reads the unit action (tanh or clip of
        the mean) joined to the flat observation (mlp) or to the torso's features (then one
        more hidden layer); a discrete one gives Q(s, .), read at the argmax action."""
        if self.q_takes_action:
            raw = np.asarray(head, F32)
            unit = np.tanh(raw) if self.config.get("continuous_squash") == "tanh" else np.clip(
                raw, F32(-1.0), F32(1.0))
        values = []
        for p in self.q_critics:
            if not self.q_takes_action:
                x = self._features(obs, p["critic_torso"])
            elif self.torso == "mlp":
                x = self._mlp(np.concatenate([self._observed(obs).reshape(-1), unit]),
                              p["critic_torso"])
            else:
                x = self.act(_dense(np.concatenate([self._features(obs, p["critic_torso"]),
                                                    unit]), p["Dense_0"]))
            values.append(_dense(x, p["q_head"]))
        q = np.minimum.reduce(values)
        return float(q[0] if self.q_takes_action else q[int(np.argmax(head))])

    def _action_values(self, x: np.ndarray) -> np.ndarray:
        """One value per action from the torso features (see the module docstring)."""
        width = max(self.num_quantiles, 1)
        if self.head == "dueling":
            value = _dense(x, self.params["dueling_value"]).reshape(1, width)
            adv = _dense(x, self.params["dueling_advantage"]).reshape(-1, width)
            q = value + adv - adv.mean(axis=0, keepdims=True)
        else:
            q = _dense(x, self.params["q_head"]).reshape(-1, width)
        if not self.num_quantiles:
            return q[:, 0]
        if self.act_on == "cvar":
            k = max(1, min(width, math.ceil(self.act_cvar_alpha * width)))
            return np.sort(q, axis=1)[:, :k].mean(axis=1)
        return q.mean(axis=1)


def head_to_action(head: np.ndarray, action: dict):
    """The env action of a policy head output under the manifest's `action` section: the
    argmax for discrete actions; for continuous ones the head squashed to [-1, 1] (tanh or
    clip) and mapped onto [low, high] in float32, as agents.common.distributions does."""
    if action["mode"] == "discrete":
        return int(np.argmax(head))
    raw = np.asarray(head, F32)
    unit = np.tanh(raw) if action.get("squash") == "tanh" else np.clip(raw, -1, 1)
    low = np.asarray(action["low"], F32)
    high = np.asarray(action["high"], F32)
    return low + (unit + F32(1.0)) * F32(0.5) * (high - low)


def _nest(flat: dict[str, np.ndarray]) -> dict:
    tree: dict = {}
    for name, value in flat.items():
        node = tree
        parts = name.split("/")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return tree
