"""Does a training run fit in memory? Refused in one line before anything is allocated.

The estimate counts what a run keeps for its whole length, per training point (a seed or a
sweep point; all points train side by side in one program):

* per env: its state and current observation (exact shapes, from `jax.eval_shape` of the
  env's reset), plus the agent's per-env storage, the figure `env.num_envs=auto` sizes with
  (`auto_sizing`: PPO's rollout with its minibatch copies, a replay agent's collection);
* per point: the agent's fixed memory, the replay buffer (as stored, sum tree included).

The limit is what the run's device has free (`memory_stats`: what XLA's allocator may still
hand out) or, on CPU, what the host has available (MemAvailable, within a cgroup's limit).
The estimate leaves out networks, optimizer states and XLA's temporaries, so a run just
under the limit may still fail; one over it cannot run.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from jaxtrade.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a run holds on one device (on CPU: on the host)."""

    points: int  # training points held there (seeds x sweep points)
    num_envs: int  # envs per point held there
    env_bytes: int  # one env's state and observation
    storage_bytes: int  # one env's rollout / collection storage (the agent's figure)
    fixed_bytes: int  # per point, not per env: the replay buffer

    @property
    def per_env(self) -> int:
        return self.env_bytes + self.storage_bytes

    @property
    def per_point(self) -> int:
        return self.num_envs * self.per_env + self.fixed_bytes

    @property
    def total(self) -> int:
        return self.points * self.per_point


def _meminfo_available(path: Path = Path("/proc/meminfo")) -> int | None:
    try:
        for line in path.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_available(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes left under this process's cgroup memory limit (v2, else v1), if it has one."""
    for limit_file, usage_file in (
        ("memory.max", "memory.current"),
        ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes"),
    ):
        try:
            limit = (root / limit_file).read_text().strip()
            usage = int((root / usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or not limit.isdigit() or int(limit) >= 2**60:
            return None
        return max(int(limit) - usage, 0)
    return None


def host_available_bytes() -> int | None:
    """Memory the host can give this process now, or None when it cannot be read."""
    available = _meminfo_available()
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = None
    cgroup = _cgroup_available()
    if available is None:
        return cgroup
    return available if cgroup is None else min(available, cgroup)


def device_available_bytes(device: Any) -> tuple[int, str] | None:
    """(bytes, what they are) that a run on `device` may use, or None when unknown."""
    if device.platform == "cpu":
        available = host_available_bytes()
        return None if available is None else (available, "RAM this host has available")
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if not stats or "bytes_limit" not in stats:
        return None
    free = int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    return free, f"memory free on {device.platform.upper()} {device.id}"


def format_bytes(n: float) -> str:
    """Decimal units, as memory sizes are quoted: 1.5 GB, 820.0 MB, 64 B."""
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} PB"


def check_fits(
    estimate: MemoryEstimate,
    available: int,
    where: str,
    *,
    num_envs: Any,
    num_seeds: int,
    sweep_points: int,
    buffer_size: int | None,
) -> None:
    """ConfigError naming the setting to change when `estimate` exceeds `available`.

    `num_envs`, `num_seeds`, `sweep_points`, `buffer_size` are the run's settings (not the
    per-device shares in `estimate`), for the message."""
    if estimate.total <= available:
        return
    envs_total = estimate.points * estimate.num_envs * estimate.per_env
    buffers_total = estimate.points * estimate.fixed_bytes
    if estimate.points > 1 and estimate.per_point <= available:
        setting = f"train.num_seeds={num_seeds}"
        if sweep_points > 1:
            setting += f" with {sweep_points} sweep points"
    elif buffer_size is not None and buffers_total > envs_total:
        setting = f"agent.buffer_size={buffer_size}"
    else:
        setting = f"env.num_envs={num_envs}"
    held = (
        f"{estimate.num_envs} envs x {format_bytes(estimate.per_env)} per env [state and "
        f"observation {format_bytes(estimate.env_bytes)}, rollout storage "
        f"{format_bytes(estimate.storage_bytes)}]"
    )
    if estimate.fixed_bytes:
        held += f" + replay buffer {format_bytes(estimate.fixed_bytes)}"
    if estimate.points > 1:
        held = f"{estimate.points} points x ({held})"
    knobs = ["env.num_envs (or env.num_envs=auto)"]
    if buffer_size is not None:
        knobs.append("agent.buffer_size")
    knobs.append("train.num_seeds" + (" or the sweep points" if sweep_points > 1 else ""))
    raise ConfigError(
        f"{setting} is not allowed: training needs about {format_bytes(estimate.total)} "
        f"({held}), more than the {format_bytes(available)} of {where}; lower "
        f"{', '.join(knobs[:-1])} or {knobs[-1]}"
    )
