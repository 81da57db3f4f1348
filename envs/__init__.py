"""Pure-JAX trading environment (gymnax 1.0 API), its parts, wrappers and baselines.

    env, params = envs.make("trading", market, action_mode="continuous", fee_bps=2.0)
    obs, state = env.reset(key, params)
    obs, state, reward, terminated, truncated, info = env.step(key, state, action, params)

Baseline policies are in envs.baselines; jaxtrade.evaluate.backtest walks them (and agents)
over a split. The Gymnasium adapter lives in envs.gymnasium_adapter (imports gymnasium, a
dev dependency). Training shards its points over devices in jaxtrade.sharding.
"""


import jaxtrade  # noqa: F401  (first: sets XLA:CPU flags before JAX starts its backend)
from envs.baselines import BASELINES
from envs.costs import TransactionConfig
from envs.registry import make
from envs.rewards import RewardConfig
from envs.risk import RiskConfig
from envs.trading import EnvParams, EnvState, TradingConfig, TradingEnv
from envs.wrappers import AdversarialWrapper, LogWrapper, NormalizeObservation

__all__ = [
    "BASELINES",
    "AdversarialWrapper",
    "LogWrapper",
    "NormalizeObservation",
    "EnvParams",
    "EnvState",
    "RewardConfig",
    "RiskConfig",
    "TradingConfig",
    "TradingEnv",
    "TransactionConfig",
    "make",
]
