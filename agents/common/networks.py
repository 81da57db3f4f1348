"""Actor-critic networks built from a torso and heads, chosen by `NetworkConfig`.

Every network has one calling convention, time-major, so feed-forward and recurrent agents share
the same PPO code:

    carry, dist, value = network.apply(params, carry, obs, resets)
      obs     [T, B, *obs_shape]   (T = 1 while acting, T = rollout length when re-running a
                                    recurrent network over a stored sequence)
      resets  [T, B] bool           True where obs[t] is the first observation of an episode:
                                    the recurrent state is zeroed *before* that step
      carry   recurrent state per batch row (an empty tuple for feed-forward torsos)
      dist    distrax distribution with batch shape [T, B]; value [T, B]

Torsos:
  mlp        Dense layers over the flat observation.
  cnn        1-D convolutions over the bar axis of the observation window.
  attention  a small transformer encoder over the window (learned positions, mean-pooled).
  gru/lstm   an MLP embedding then a recurrent cell; the hidden state resets exactly at episode
             boundaries (the `resets` flags).

Observation layout for cnn/attention: either the env emits a [W, F] window per observation, or a
flat vector whose first W*F entries are the window in row-major (bar, feature) order followed by
`num_state_features` extra entries (portfolio state: position, cash, ...). Set
`NetworkConfig.window_shape = (W, F)` for the flat layout; the extra entries are concatenated to
the pooled window features before the final Dense layers.

Observation selection (`network.observe`, every torso): the user names the features a network
sees (`network.observe=[zscore_log_return_20]`; empty: all of them); the experiment layer
(experiments/common.py) resolves the names against the market's feature names into
`observe_columns`, the columns of one bar's row that the network keeps. Every torso starts with
`select_observed`, which keeps those columns on every bar of the window ([W, F] layout: the
row's portfolio columns are among the kept ones; flat layout: the W*F window is read with
`window_shape`, and the portfolio entries after it stay). Export and the numpy runner
(jaxtrade/live/network.py) and the ONNX graph (jaxtrade/export_onnx.py) apply the same columns.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from agents.common.distributions import ActionSpec, make_distribution
from jaxtrade.errors import ConfigError

TORSOS = ("mlp", "cnn", "gru", "lstm", "attention")
RECURRENT_TORSOS = ("gru", "lstm")
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": jnp.tanh,
    "relu": nn.relu,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "elu": nn.elu,
}


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """Shape-defining network settings (static: changing them recompiles)."""

    torso: str = "mlp"
    hidden_sizes: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    layer_norm: bool = False  # LayerNorm after each hidden Dense of the MLP, before activation
    shared_torso: bool = False  # one torso feeding both heads, or separate actor and critic torsos
    window_shape: tuple[int, int] | None = None  # (W bars, F features) of a flat observation
    num_state_features: int = 0  # entries after the window in a flat observation
    cnn_channels: tuple[int, ...] = (16, 16)
    cnn_kernel_bars: int = 3
    recurrent_size: int = 64
    attention_dim: int = 32
    attention_heads: int = 2
    attention_layers: int = 1
    continuous_squash: str = "clip"  # "clip" | "tanh": how a Gaussian sample reaches [-1, 1]
    log_std_init: float = 0.0
    # Feature names the network sees (empty: all); resolved from the env into observe_columns.
    observe: tuple[str, ...] = ()
    # Columns of one bar's row of the observation window kept before the torso (empty: all).
    observe_columns: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.torso not in TORSOS:
            raise ConfigError(f"network.torso must be one of {TORSOS}, got {self.torso!r}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"network.activation must be one of {tuple(ACTIVATIONS)}, got {self.activation!r}"
            )
        # YAML gives lists; keep tuples so the config stays hashable.
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        object.__setattr__(self, "cnn_channels", tuple(int(c) for c in self.cnn_channels))
        if self.window_shape is not None:
            object.__setattr__(self, "window_shape", tuple(int(s) for s in self.window_shape))
        object.__setattr__(self, "observe", tuple(str(name) for name in self.observe))
        columns = tuple(int(c) for c in self.observe_columns)
        object.__setattr__(self, "observe_columns", columns)
        if len(set(self.observe)) != len(self.observe):
            raise ConfigError(f"network.observe={list(self.observe)} names a feature twice")
        if len(set(columns)) != len(columns) or any(c < 0 for c in columns):
            raise ConfigError(f"network.observe_columns={list(columns)} must be distinct "
                              "column indices >= 0")

    @property
    def recurrent(self) -> bool:
        return self.torso in RECURRENT_TORSOS


def _dense(features: int, scale: float, name: str | None = None) -> nn.Dense:
    return nn.Dense(
        features,
        kernel_init=nn.initializers.orthogonal(scale),
        bias_init=nn.initializers.zeros,
        name=name,
    )


class MLP(nn.Module):
    hidden_sizes: Sequence[int]
    activation: str
    layer_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        for size in self.hidden_sizes:
            x = _dense(size, np.sqrt(2.0))(x)
            x = act(nn.LayerNorm()(x) if self.layer_norm else x)
        return x


def select_observed(
    config: NetworkConfig, obs: jax.Array, obs_ndim: int
) -> tuple[NetworkConfig, jax.Array]:
    """Observations [N, *obs_shape] with only `observe_columns` of every bar's row, and the
    config that describes them (window_shape narrowed to the kept columns). A no-op without a
    selection."""
    columns = config.observe_columns
    if not columns:
        if config.observe:
            raise ConfigError(
                f"network.observe={list(config.observe)} was not resolved to columns: the "
                "experiment layer resolves feature names against the env's market "
                "(experiments/common.py); set network.observe_columns when building by hand")
        return config, obs
    if obs_ndim == 2:
        width = obs.shape[-1]
        if max(columns) >= width:
            raise ConfigError(f"network.observe_columns={list(columns)} reach past the "
                              f"{width} columns of the observation window")
        return config, obs[..., jnp.asarray(columns)]
    if config.window_shape is None:
        raise ConfigError("network.observe needs the window layout of a flat observation: "
                          "set network.window_shape=(bars, features) (and num_state_features)")
    bars, feats = config.window_shape
    if max(columns) >= feats:
        raise ConfigError(f"network.observe_columns={list(columns)} reach past the {feats} "
                          f"features per bar of window_shape={config.window_shape}")
    window, state = split_window(config, obs, obs_ndim)
    kept = window[..., jnp.asarray(columns)].reshape(obs.shape[0], -1)
    narrowed = dataclasses.replace(config, window_shape=(bars, len(columns)), observe=(),
                                   observe_columns=())
    return narrowed, jnp.concatenate([kept, state], axis=-1)


def split_window(
    config: NetworkConfig, obs: jax.Array, obs_ndim: int
) -> tuple[jax.Array, jax.Array]:
    """Split observations [N, *obs_shape] into a window [N, W, F] and state features [N, S]."""
    if obs_ndim == 2:
        return obs, jnp.zeros(obs.shape[:1] + (0,), obs.dtype)
    if config.window_shape is None:
        raise ConfigError(
            f"network.torso={config.torso!r} needs the window layout of a flat observation: "
            "set network.window_shape=(bars, features) (and num_state_features)"
        )
    bars, feats = config.window_shape
    need = bars * feats + config.num_state_features
    if obs.shape[-1] != need:
        raise ConfigError(
            f"observation has {obs.shape[-1]} entries but window_shape={config.window_shape} and "
            f"num_state_features={config.num_state_features} describe {need}"
        )
    window = obs[:, : bars * feats].reshape(obs.shape[0], bars, feats)
    return window, obs[:, bars * feats :]


class CNNTorso(nn.Module):
    config: NetworkConfig
    obs_ndim: int

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.config.activation]
        window, state = split_window(self.config, obs, self.obs_ndim)
        x = window
        for channels in self.config.cnn_channels:
            x = nn.Conv(
                channels,
                kernel_size=(self.config.cnn_kernel_bars,),
                padding="VALID",
                kernel_init=nn.initializers.orthogonal(np.sqrt(2.0)),
            )(x)
            x = act(x)
        x = jnp.concatenate([x.reshape(x.shape[0], -1), state], axis=-1)
        return MLP(self.config.hidden_sizes, self.config.activation, self.config.layer_norm)(x)


class AttentionTorso(nn.Module):
    config: NetworkConfig
    obs_ndim: int

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        cfg = self.config
        window, state = split_window(cfg, obs, self.obs_ndim)
        x = _dense(cfg.attention_dim, 1.0)(window)
        positions = self.param(
            "positions", nn.initializers.normal(0.02), (window.shape[1], cfg.attention_dim)
        )
        x = x + positions
        for _ in range(cfg.attention_layers):
            # Pre-norm blocks train stably without warm-up, which matters for short RL runs.
            y = nn.LayerNorm()(x)
            y = nn.MultiHeadDotProductAttention(
                num_heads=cfg.attention_heads, qkv_features=cfg.attention_dim
            )(y, y)
            x = x + y
            y = nn.LayerNorm()(x)
            y = _dense(cfg.attention_dim, 1.0)(nn.gelu(_dense(2 * cfg.attention_dim, 1.0)(y)))
            x = x + y
        x = jnp.concatenate([nn.LayerNorm()(x).mean(axis=1), state], axis=-1)
        return MLP(cfg.hidden_sizes, cfg.activation, cfg.layer_norm)(x)


class FeedForwardTorso(nn.Module):
    config: NetworkConfig
    obs_ndim: int

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        config, obs = select_observed(self.config, obs, self.obs_ndim)
        if config.torso == "cnn":
            return CNNTorso(config, self.obs_ndim)(obs)
        if config.torso == "attention":
            return AttentionTorso(config, self.obs_ndim)(obs)
        return MLP(config.hidden_sizes, config.activation, config.layer_norm)(
            obs.reshape(obs.shape[0], -1)
        )


class RecurrentTorso(nn.Module):
    """MLP embedding, then a GRU/LSTM scanned over time with resets at episode starts."""

    config: NetworkConfig

    @nn.compact
    def __call__(self, carry: Any, obs: jax.Array, resets: jax.Array) -> tuple[Any, jax.Array]:
        steps, batch = resets.shape
        flat = obs.reshape((steps * batch,) + obs.shape[2:])
        _, flat = select_observed(self.config, flat, obs.ndim - 2)
        emb = MLP(self.config.hidden_sizes, self.config.activation, self.config.layer_norm)(
            flat.reshape(steps, batch, -1)
        )
        cell_type = nn.GRUCell if self.config.torso == "gru" else nn.OptimizedLSTMCell
        cell = cell_type(self.config.recurrent_size)

        def step(cell, carry, inputs):
            x, reset = inputs
            fresh = initial_carry(self.config, (batch,))
            carry = jax.tree.map(lambda c, z: jnp.where(reset[:, None], z, c), carry, fresh)
            return cell(carry, x)

        scan = nn.scan(step, variable_broadcast="params", split_rngs={"params": False})
        return scan(cell, carry, (emb, resets))


def initial_carry(config: NetworkConfig, batch_shape: tuple[int, ...]) -> Any:
    """Zero recurrent state for one torso (LSTM: (cell, hidden); GRU: hidden)."""
    zeros = jnp.zeros(batch_shape + (config.recurrent_size,), jnp.float32)
    return (zeros, zeros) if config.torso == "lstm" else zeros


def network_carry(config: NetworkConfig, batch_shape: tuple[int, ...]) -> Any:
    """The full carry of an `ActorCritic`: one per torso, empty for feed-forward networks."""
    if not config.recurrent:
        return ()
    if config.shared_torso:
        return initial_carry(config, batch_shape)
    return (initial_carry(config, batch_shape), initial_carry(config, batch_shape))


class ActorCritic(nn.Module):
    """Torso(s) + policy head + value head. See the module docstring for the call convention."""

    config: NetworkConfig
    action: ActionSpec
    obs_ndim: int

    @nn.compact
    def __call__(self, carry: Any, obs: jax.Array, resets: jax.Array):
        cfg = self.config
        steps, batch = resets.shape
        obs = obs.astype(jnp.float32)

        def feed_forward(name: str) -> jax.Array:
            flat = obs.reshape((steps * batch,) + obs.shape[2:])
            out = FeedForwardTorso(cfg, self.obs_ndim, name=name)(flat)
            return out.reshape(steps, batch, -1)

        if cfg.recurrent and cfg.shared_torso:
            carry, actor_x = RecurrentTorso(cfg, name="torso")(carry, obs, resets)
            critic_x = actor_x
        elif cfg.recurrent:
            actor_carry, actor_x = RecurrentTorso(cfg, name="actor_torso")(carry[0], obs, resets)
            critic_carry, critic_x = RecurrentTorso(cfg, name="critic_torso")(carry[1], obs, resets)
            carry = (actor_carry, critic_carry)
        elif cfg.shared_torso:
            actor_x = critic_x = feed_forward("torso")
        else:
            actor_x, critic_x = feed_forward("actor_torso"), feed_forward("critic_torso")

        # Small policy-head init keeps the first policy near uniform / zero-mean.
        head_out = _dense(self.action.dim, 0.01, name="policy_head")(actor_x)
        log_std = None
        if self.action.kind == "continuous":
            log_std = self.param(
                "log_std", nn.initializers.constant(cfg.log_std_init), (self.action.dim,)
            )
        dist = make_distribution(self.action, head_out, log_std)
        value = _dense(1, 1.0, name="value_head")(critic_x)[..., 0]
        return carry, dist, value


Q_HEADS = ("q", "dueling")


class QNetwork(nn.Module):
    """Torso + action-value head for value-based agents: obs [B, *obs_shape] -> [B, A] values,
    or [B, A, N] quantiles when `num_quantiles` > 0.

    `head="dueling"` splits the head into a state value and action advantages,
    Q = V + A - mean_a A (Wang et al. 2016), per quantile for distributional heads. Torsos are
    the feed-forward ones of `NetworkConfig` (mlp, cnn, attention); the layer names
    (`torso`, `q_head`, `dueling_value`, `dueling_advantage`) are what export and the numpy
    runner (jaxtrade/live/network.py) read.
    """

    config: NetworkConfig
    num_actions: int
    obs_ndim: int
    head: str = "q"
    num_quantiles: int = 0

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = FeedForwardTorso(self.config, self.obs_ndim, name="torso")(obs.astype(jnp.float32))
        width = max(self.num_quantiles, 1)
        if self.head == "dueling":
            value = _dense(width, 1.0, name="dueling_value")(x).reshape(-1, 1, width)
            adv = _dense(self.num_actions * width, 1.0, name="dueling_advantage")(x)
            adv = adv.reshape(-1, self.num_actions, width)
            q = value + adv - adv.mean(axis=1, keepdims=True)
        else:
            q = _dense(self.num_actions * width, 1.0, name="q_head")(x)
            q = q.reshape(-1, self.num_actions, width)
        return q if self.num_quantiles else q[..., 0]


def make_q_network(
    config: NetworkConfig, num_actions: int, obs_ndim: int, head: str, num_quantiles: int = 0
) -> QNetwork:
    if config.recurrent:
        raise ConfigError(
            f"network.torso={config.torso!r} is recurrent; value-based agents "
            "use feed-forward torsos (mlp, cnn, attention)"
        )
    if head not in Q_HEADS:
        raise ConfigError(f"agent.head must be one of {Q_HEADS}, got {head!r}")
    return QNetwork(config, num_actions, obs_ndim, head, num_quantiles)


class Actor(nn.Module):
    """Policy of off-policy actor-critic agents (SAC, TD3, DDPG): obs [B, *obs_shape] ->
    head [B, D] (a Gaussian mean or deterministic pre-tanh action for continuous actions,
    logits for discrete ones), plus a state-dependent log-std head [B, D] when `log_std`.

    The layer names (`actor_torso`, `policy_head`) are the ones `ActorCritic` uses, so export
    and the numpy runner (jaxtrade/live/network.py, family "actor_critic") read this actor
    as they read PPO's: the head output is the mean the runner squashes, or the logits it
    takes the argmax of. Torsos are the feed-forward ones (mlp, cnn, attention).
    """

    config: NetworkConfig
    action_dim: int
    obs_ndim: int
    log_std: bool = False

    @nn.compact
    def __call__(self, obs: jax.Array):
        x = FeedForwardTorso(self.config, self.obs_ndim, name="actor_torso")(
            obs.astype(jnp.float32)
        )
        # Small head init: the first policy is near zero-mean / uniform.
        head = _dense(self.action_dim, 0.01, name="policy_head")(x)
        if not self.log_std:
            return head
        return head, _dense(self.action_dim, 0.01, name="log_std_head")(x)


class QCritic(nn.Module):
    """One action-value network: Q(s, a) [B, 1] for continuous actions `action` [B, D], or
    Q(s, .) [B, num_outputs] over discrete actions when `action` is None.

    With an mlp torso the action joins the flat observation at the input (the usual SAC/TD3
    critic); window torsos (cnn, attention) embed the observation first and the action joins
    their features before one more hidden layer.
    """

    config: NetworkConfig
    obs_ndim: int
    num_outputs: int = 1

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array | None = None) -> jax.Array:
        obs = obs.astype(jnp.float32)
        act = ACTIVATIONS[self.config.activation]
        if action is None:
            x = FeedForwardTorso(self.config, self.obs_ndim, name="critic_torso")(obs)
        elif self.config.torso == "mlp":
            _, obs = select_observed(self.config, obs, self.obs_ndim)
            flat = jnp.concatenate([obs.reshape(obs.shape[0], -1), action], axis=-1)
            x = MLP(
                self.config.hidden_sizes,
                self.config.activation,
                self.config.layer_norm,
                name="critic_torso",
            )(flat)
        else:
            x = FeedForwardTorso(self.config, self.obs_ndim, name="critic_torso")(obs)
            width = self.config.hidden_sizes[-1] if self.config.hidden_sizes else 64
            x = act(_dense(width, np.sqrt(2.0))(jnp.concatenate([x, action], axis=-1)))
        return _dense(self.num_outputs, 1.0, name="q_head")(x)


class CriticEnsemble(nn.Module):
    """`num_critics` independent `QCritic`s evaluated as one batched network (parameters
    stacked on a leading axis): -> [num_critics, B, num_outputs]. Twin critics (SAC, TD3)
    are num_critics = 2; DDPG's single critic is 1."""

    config: NetworkConfig
    obs_ndim: int
    num_outputs: int = 1
    num_critics: int = 2

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array | None = None) -> jax.Array:
        ensemble = nn.vmap(
            QCritic,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=None,
            out_axes=0,
            axis_size=self.num_critics,
        )
        return ensemble(self.config, self.obs_ndim, self.num_outputs, name="critics")(obs, action)


def check_offpolicy_network(config: NetworkConfig, agent: str) -> None:
    """Off-policy actor-critics keep separate feed-forward actor and critic torsos (the
    replay samples single transitions, and export reads `actor_torso`)."""
    if config.recurrent:
        raise ConfigError(
            f"network.torso={config.torso!r} is recurrent; {agent} uses "
            "feed-forward torsos (mlp, cnn, attention)"
        )
    if config.shared_torso:
        raise ConfigError(
            f"network.shared_torso=true is not allowed for {agent}: its actor "
            "and critics have their own torsos"
        )
