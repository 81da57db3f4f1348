"""`env.num_envs=auto`: how many environments to run side by side on this device.

The rule (documented in configs/env/trading.yaml and the README):

* CPU: 32 envs per core, rounded down to a power of two, between 8 and 1024. More envs than
  that only lengthen each update on a CPU; 32 per core keeps a PPO batch big enough.
* Accelerator (GPU/TPU): the largest power of two whose rollout buffer fits in a quarter of
  the device memory still free, between 64 and 65,536. One env needs
  `rollout_len * (obs_size + 8) * 4 bytes` for the rollout (observations plus action,
  log-prob, value, reward, done, advantage and return, float32) times 4 for minibatch copies,
  activations and gradients. The market itself is shared and not counted per env.
"""

from __future__ import annotations

import math
import os

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
                  num_minibatches: int = 1) -> int:
    """The `num_envs` the rule above picks (a power of two, so minibatches divide it)."""
    device = device or jax.devices()[0]
    if device.platform == "cpu":
        cores = os.cpu_count() or 1
        n = _pow2_floor(CPU_ENVS_PER_CORE * cores)
        n = min(max(n, CPU_RANGE[0]), CPU_RANGE[1])
    else:
        free = free_device_bytes(device)
        if free is None:
            n = 4096
        else:
            n = _pow2_floor(ACCEL_MEMORY_FRACTION * free / bytes_per_env(obs_size, rollout_len))
        n = min(max(n, ACCEL_RANGE[0]), ACCEL_RANGE[1])
    # A power of two times rollout_len is divisible by any power-of-two minibatch count;
    # for other counts, grow until it divides.
    while (n * rollout_len) % num_minibatches:
        n += 1
    return n
