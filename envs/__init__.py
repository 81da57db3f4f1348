"""Pure-JAX trading environment (gymnax 1.0 API), its parts, wrappers and baselines."""

from envs.costs import TransactionConfig
from envs.registry import make
from envs.rewards import RewardConfig
from envs.risk import RiskConfig
from envs.trading import EnvParams, EnvState, TradingConfig, TradingEnv

__all__ = [
    "EnvParams",
    "EnvState",
    "RewardConfig",
    "RiskConfig",
    "TradingConfig",
    "TradingEnv",
    "TransactionConfig",
    "make",
]
