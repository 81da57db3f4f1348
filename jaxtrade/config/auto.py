"""`env.num_envs=auto`: how many environments to run side by side on this device.

The rule (documented in configs/env/trading.yaml and the README):

* CPU: 32 envs per core, rounded down to a power of two, between 8 and 1024. More envs than
  that only lengthen each update on a CPU; 32 per core keeps a PPO batch big enough.
* Accelerator (GPU/TPU): the largest power of two whose rollout buffer fits in a quarter of
  the device memory still free, between 64 and 65,536. One env needs
  `rollout_len * (obs_size + 8) * 4 bytes` for the rollout (observations plus action,
  log-prob, value, reward, done, advantage and return, float32) times 4 for minibatch copies,
  activations and gradients. The market itself is shared and not counted per env.

Each agent config states its own figures (`auto_sizing`): PPO the rollout above; replay
agents (DQN, QR-DQN, ...) their per-env collection memory plus the replay buffer, a fixed
amount subtracted from the device memory first (a buffer that does not fit is a ConfigError),
and a smaller CPU rule, since for them more envs only lower the updates per env step.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

from jaxtrade.errors import ConfigError

if TYPE_CHECKING:  # JAX is imported when a size is picked, not with the config package
    import jax

CPU_ENVS_PER_CORE = 32
CPU_RANGE = (8, 1024)
ACCEL_RANGE = (64, 65_536)
ACCEL_MEMORY_FRACTION = 0.25
PER_ENV_OVERHEAD = 4


def _pow2_floor(x: float) -> int:
    return 1 << max(int(math.floor(math.log2(max(x, 1.0)))), 0)


def bytes_per_env(obs_size: int, rollout_len: int) -> int:
    return int(rollout_len * (obs_size + 8) * 4 * PER_ENV_OVERHEAD)


def free_device_bytes(device: jax.Device) -> int | None:
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if not stats or "bytes_limit" not in stats:
        return None
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))


def auto_num_envs(obs_size: int, rollout_len: int, device: jax.Device | None = None,
                  num_minibatches: int = 1, *, per_env_bytes: int | None = None,
                  fixed_bytes: int = 0, cpu_envs_per_core: int = CPU_ENVS_PER_CORE,
                  accel_max: int = ACCEL_RANGE[1]) -> int:
    """The `num_envs` the rule above picks (a power of two, so minibatches divide it).

    `per_env_bytes` replaces the PPO rollout estimate; `fixed_bytes` (a replay buffer) is
    taken from the device memory before sizing the envs."""
    if device is None:
        import jax

        device = jax.devices()[0]
    per_env = per_env_bytes if per_env_bytes is not None else bytes_per_env(obs_size, rollout_len)
    if device.platform == "cpu":
        cores = os.cpu_count() or 1
        n = _pow2_floor(cpu_envs_per_core * cores)
        n = min(max(n, CPU_RANGE[0]), CPU_RANGE[1])
    else:
        free = free_device_bytes(device)
        if free is None:
            n = min(4096, accel_max)
        else:
            if fixed_bytes > 0.9 * free:
                raise ConfigError(
                    f"the replay buffer needs {fixed_bytes / 1e9:.2f} GB but the device has "
                    f"{free / 1e9:.2f} GB free: lower agent.buffer_size")
            budget = ACCEL_MEMORY_FRACTION * (free - fixed_bytes)
            n = _pow2_floor(budget / max(per_env, 1))
        n = min(max(n, ACCEL_RANGE[0]), accel_max)
    # A power of two times rollout_len is divisible by any power-of-two minibatch count;
    # for other counts, grow until it divides.
    while (n * rollout_len) % num_minibatches:
        n += 1
    return n
