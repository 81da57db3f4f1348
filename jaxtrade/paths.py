"""Where jaxtrade keeps files of its own (not a run's): the cache folder."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$JAXTRADE_CACHE_DIR, else $XDG_CACHE_HOME/jaxtrade, else ~/.cache/jaxtrade.

    JAX's compilation cache lives below it (experiments.common.default_cache_dir), so one
    variable moves everything jaxtrade caches.
    """
    if os.environ.get("JAXTRADE_CACHE_DIR"):
        return Path(os.environ["JAXTRADE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "jaxtrade"
