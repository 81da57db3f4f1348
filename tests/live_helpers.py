"""Shared fixtures for the export/live tests: a small real-data market, a policy, a bundle."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import polars as pl

import envs
from agents.common.distributions import ActionSpec, to_env_action
from agents.common.networks import ActorCritic, NetworkConfig, network_carry
from jaxtrade import features as features_lib
from jaxtrade import market as market_lib
from jaxtrade.data.splits import make_splits
from jaxtrade.evaluate.backtest import backtest
from jaxtrade.export import WEIGHTS, write_bundle
from jaxtrade.live.bundle import MANIFEST, write_checksums
from jaxtrade.xla import jit_light

EMBEDDED = Path(market_lib.__file__).parent / "data" / "embedded"


def reseal(bundle: Path) -> Path:
    """Rewrites a bundle's SHA256SUMS after a test edited its manifest on purpose."""
    return write_checksums(bundle, [MANIFEST, WEIGHTS])


def real_frame(name: str = "sp500_daily", bars: int = 900) -> pl.DataFrame:
    return pl.read_parquet(EMBEDDED / f"{name}.parquet").head(bars)


def write_csv(frame: pl.DataFrame, path: Path) -> Path:
    frame.write_csv(path)
    return path


def build_market(frame: pl.DataFrame, regimes: bool = False):
    """The training pipeline's market: features, train-only normalization, ATR, volatility."""
    splits = make_splits(frame.height, 0.6, 0.2)
    return market_lib.build(frame, features_lib.default_spec(), splits, regimes=regimes)


def make_policy(env, env_params, torso: str = "mlp", seed: int = 0, head_scale: float = 300.0):
    """A randomly initialised actor with a strong head, so its decisions vary bar to bar."""
    obs_shape = env.observation_shape
    window = None
    state_features = 0
    if torso in ("cnn", "attention") and env.obs_layout == "flat":
        width = env.num_assets * env.num_features
        window = (env.window_bars, width)
        state_features = obs_shape[0] - env.window_bars * width
    cfg = NetworkConfig(
        torso=torso, hidden_sizes=(32, 32), window_shape=window, num_state_features=state_features
    )
    if env.action_mode == "discrete":
        spec = ActionSpec("discrete", num_actions=len(env.discrete_levels))
    else:
        space = env.action_space(env_params)
        spec = ActionSpec(
            "continuous",
            shape=(env.num_assets,),
            low=np.broadcast_to(np.asarray(space.low), (env.num_assets,)),
            high=np.broadcast_to(np.asarray(space.high), (env.num_assets,)),
        )
    net = ActorCritic(cfg, spec, len(obs_shape))
    obs = jnp.zeros((1, 1) + tuple(obs_shape))
    resets = jnp.zeros((1, 1), bool)
    params = jit_light(net.init)(jax.random.PRNGKey(seed), network_carry(cfg, (1,)), obs, resets)
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: x * head_scale if "policy_head" in jax.tree_util.keystr(path) else x,
        params,
    )

    def policy_fn(key, obs, state, p):
        _, dist, _ = net.apply(p, network_carry(cfg, (1,)), obs[None, None], resets)
        if spec.kind == "discrete":
            return jnp.argmax(dist.logits[0, 0])
        return to_env_action(spec, dist.mean()[0, 0])  # what Agent.act hands the env

    def bound(key, obs, state, _params):
        return policy_fn(key, obs, state, params)

    bound.network = net  # for callers that run the network themselves (recurrent carry)
    return cfg, params, bound


def backtest_and_bundle(
    tmp: Path,
    frame: pl.DataFrame,
    split: str = "test",
    torso: str = "mlp",
    regimes: bool = False,
    **env_overrides,
):
    """Backtest a policy with the env, and export the same policy (spec, stats from market)."""
    market = build_market(frame, regimes=regimes)
    env, env_params = envs.make("trading", market, **env_overrides)
    cfg, params, policy_fn = make_policy(env, env_params, torso)
    result = backtest(env, env_params, policy_fn, split=split)
    bundle = write_bundle(
        tmp / f"bundle-{torso}", params=params, network_config=cfg, env=env, env_params=env_params
    )
    return result, bundle, market


@functools.cache
def shared_case(name: str = "sp500_daily", bars: int = 900, window_bars: int = 16):
    """One backtest + bundle per process, shared by the test modules (building costs ~10 s)."""
    tmp = Path(tempfile.mkdtemp(prefix="jaxtrade-live-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    frame = real_frame(name, bars)
    # Regime-dependent leverage caps make the runner's HMM filter part of the parity.
    result, bundle, _ = backtest_and_bundle(
        tmp,
        frame,
        window_bars=window_bars,
        regimes=True,
        regime_caps=True,
        max_leverage=2.0,
        discrete_levels=(-2.0, -1.0, 0.0, 1.0, 2.0),
    )
    return result, bundle, write_csv(frame, tmp / "bars.csv"), frame


# A few seconds of PPO on a small synthetic market read from a CSV (as `jaxtrade train
# data=csv` reads any file): the shared run of the format round trips and of the backtests
# on other bars.
TINY_RUN = ["data=csv", "logger=none",
            "train.fast_compile=true", "env.num_envs=4", "env.window_bars=16",
            "env.episode_bars=64", "agent.rollout_len=32", "agent.updates_per_chunk=2",
            "train.total_steps=512", "train.checkpoint_every_updates=2",
            "train.eval_every_updates=2", "network.hidden_sizes=[16,16]", "seed=0"]


def tiny_frame(bars: int = 400, seed: int = 0) -> pl.DataFrame:
    from jaxtrade.data.synthetic import synthetic_frame

    return synthetic_frame(seed=seed, num_bars=bars, num_assets=1)


def write_tiny_bars(folder: Path) -> list[str]:
    """`tiny_frame()` written to folder/bars.csv; the CLI argument naming it (the `write_data`
    of tests/shared_runs.py for the small CSV runs)."""
    return [f"data.path={write_csv(tiny_frame(), folder / 'bars.csv')}"]


def tiny_run(factory: Any) -> tuple[Path, pl.DataFrame, Path]:
    """(run_dir, its bars, the CSV it trained on): TINY_RUN on `tiny_frame()`, trained once
    per test session (tests/shared_runs.py; `factory`: pytest's tmp_path_factory). Read only:
    a test that changes the run copies it."""
    from shared_runs import shared_run

    run_dir, folder = shared_run(factory, "tiny", ["train", *TINY_RUN], write_tiny_bars)
    return run_dir, tiny_frame(), folder / "bars.csv"


def report_positions(report_dir: Path, split: str | None = None) -> pl.DataFrame:
    positions = pl.read_csv(report_dir / "positions.csv")
    return positions if split is None else positions.filter(pl.col("split") == split)


# --- any registered agent's policy on a market (tests/test_export_pairs.py) -------------------
ON_POLICY = ("ppo", "cvar_ppo")
# Discrete policy / Q heads' kernels are this much larger than a standard init (their biases
# matter less): the attention torso's pooled features vary little from bar to bar, and
# decisions should. Continuous heads keep the standard init, which the squash does not pin
# to the bounds of the action range.
HEADS = ("policy_head", "q_head", "dueling_value", "dueling_advantage")
HEAD_SCALE = 10.0


def make_pair(market: Any, section: dict, mode: str, torso: str):
    """(env, env_params, agent, its config) of an agent section (e.g. {"name": "sac"}) on
    `market` with a small network of `torso`, as `jaxtrade train` builds them."""
    import agents
    from experiments.common import agent_config

    env, env_params = envs.make("trading", market, window_bars=8, action_mode=mode,
                                discrete_levels=(-1.0, -0.5, 0.0, 0.5, 1.0))
    network = {"torso": torso, "hidden_sizes": [16, 16], "recurrent_size": 16,
               "cnn_channels": [8, 8], "attention_dim": 16}
    sizes = ({"rollout_len": 8, "num_minibatches": 1} if section["name"] in ON_POLICY
             else {"buffer_size": 256, "learning_starts": 0})
    cfg = {"agent": {**section, **sizes}, "network": network, "train": {"total_steps": 1024}}
    config = agent_config(cfg, env, env_params, num_envs=2)
    return env, env_params, agents.make_agent(config, env, env_params), config


def random_policy_params(agent: Any, config: Any, obs: jax.Array, discrete: bool,
                         seed: int = 2) -> Any:
    """Parameters of exactly the tree and shapes the agent's network initialises (its `init`
    calls the same `agent.network.init`), drawn at random: kernels ~ N(0, 1 / fan_in), other
    leaves ~ N(0, 0.1^2) (LayerNorm scales 1 + that), discrete head kernels HEAD_SCALE times
    larger. `jax.eval_shape` traces the init without compiling it (a compiled init would cost
    a second per agent and network)."""
    if config.name in ON_POLICY:  # ActorCritic over [time, batch] with a carry and resets
        args = (network_carry(config.network, (1,)), obs[None, None], jnp.zeros((1, 1), bool))
    else:
        args = (obs[None],)
    shapes = jax.eval_shape(agent.network.init, jax.random.key(0), *args)
    return random_like(shapes, discrete, seed)


# The replay actor-critics (their critics are Q networks: tests/test_export_pairs.py).
REPLAY_ACTOR_CRITICS = ("sac", "sac_discrete", "td3", "ddpg")


def random_critic_params(config: Any, env: Any, env_params: Any, obs: jax.Array,
                         discrete: bool, seed: int = 3) -> tuple[Any, Any]:
    """(the agent's own critic module, random parameters of its tree) for a replay
    actor-critic: `actor_critic_parts` builds the critics as the agent does (two for SAC and
    TD3, one for DDPG); parameters drawn as in `random_policy_params`."""
    from agents.common.offpolicy import actor_critic_parts

    parts = actor_critic_parts(config, env, env_params, discrete=discrete,
                               log_std=config.name == "sac",
                               num_critics=2 if getattr(config, "twin_critic", True) else 1,
                               other_agents="")
    args = (obs[None],) if discrete else (obs[None], jnp.zeros((1, parts.spec.dim)))
    shapes = jax.eval_shape(parts.critic.init, jax.random.key(0), *args)
    return parts.critic, random_like(shapes, discrete, seed)


def random_like(shapes: Any, discrete: bool, seed: int) -> Any:
    """Random leaves of the tree `shapes` (see `random_policy_params`)."""
    rng = np.random.default_rng(seed)

    def draw(path: Any, leaf: Any) -> np.ndarray:
        name = jax.tree_util.keystr(path)
        fan_in = np.prod(leaf.shape[:-1]) if "kernel" in name and len(leaf.shape) >= 2 else 0
        std = 1.0 / np.sqrt(fan_in) if fan_in else 0.1
        if discrete and fan_in and any(head in name for head in HEADS):
            std *= HEAD_SCALE
        value = rng.normal(0.0, std, leaf.shape) + (1.0 if name.endswith("['scale']") else 0.0)
        return jnp.asarray(value, leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, shapes)
