"""The agents' config defaults as plain data, cached on disk so composing a config needs no JAX.

Hydra composes every run config on nodes read from the agents' config dataclasses (see
`jaxtrade.config.schema.register_configs`): each agent's defaults, its default network and
NetworkConfig's defaults. Reading them means importing the agents, and with them JAX, flax,
optax and distrax, about 1.5 s on an idle 2-core machine; a typo on the command line waited for
it. These nodes are a function of the source files of `agents`, `envs` and `jaxtrade` alone,
so they are computed once per version of those files and kept as JSON in
`jaxtrade.paths.cache_dir()/config_defaults/<sha256 of the sources>.json`. A command whose
sources hash to a stored file composes from it; any other computes the nodes (importing the
agents, as composing always did) and stores them. Editing any source file changes the key,
so a stored file is never stale, and whether the nodes came from the file or from the
dataclasses, Hydra composes on the same JSON-shaped data.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from jaxtrade.paths import cache_dir

# The packages whose source the defaults can depend on (the agents import envs and jaxtrade).
PACKAGES = ("agents", "envs", "jaxtrade")
# Bumped when the shape of the stored data changes.
FORMAT = 1
# Stored files kept (one per version of the sources: worktrees, branches, edits).
KEEP_FILES = 8


def folder() -> Path:
    return cache_dir() / "config_defaults"


def package_roots() -> list[Path] | None:
    """The source folders of PACKAGES, found without importing them (importing `agents`
    would start JAX); None when one is not installed."""
    roots = []
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            return None
        roots.extend(Path(p) for p in spec.submodule_search_locations)
    return roots


def source_digest(roots: list[Path]) -> str:
    """sha256 (hex) of every .py file under `roots`: its path below the root and its bytes."""
    digest = hashlib.sha256(f"format {FORMAT}\n".encode())
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            digest.update(f"{root.name}/{path.relative_to(root).as_posix()}\n".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def compute() -> dict[str, Any] | None:
    """The nodes from the agents' dataclasses (imports the agents; None when they are not
    importable: a config check without them composes no agent defaults):

      {"agents": {name: {"defaults": every default but the keys set by other sections,
                         "network": its default network}},
       "network_config": NetworkConfig's defaults}
    """
    try:
        import agents
        from agents.common.config import config_to_dict
        from agents.common.networks import NetworkConfig
    except ImportError:
        return None
    from jaxtrade.config.validate import AGENT_KEYS_SET_ELSEWHERE

    nodes: dict[str, Any] = {}
    for name, spec in agents.AGENTS.items():
        # A composite agent (the ensemble) states its own defaults and has no network of
        # its own: its members' are under agent.<member>.network.
        own = getattr(spec.config_class, "registered_defaults", None)
        defaults = own() if own is not None else config_to_dict(spec.config_class())
        network = defaults.pop("network", {})
        for key in AGENT_KEYS_SET_ELSEWHERE:
            defaults.pop(key, None)
        nodes[name] = {"defaults": defaults, "network": network}
    return {"agents": nodes, "network_config": config_to_dict(NetworkConfig())}


def load() -> dict[str, Any] | None:
    """The nodes for the installed sources: the stored file when there is one, else computed
    (and stored for the next command). Always the JSON form, wherever they came from."""
    roots = package_roots()
    try:
        path = folder() / f"{source_digest(roots)}.json" if roots else None
    except OSError:  # a file that vanished while read, a dangling editor lock link...
        path = None
    if path is not None:
        try:
            stored = json.loads(path.read_text())
            if stored.get("format") == FORMAT:
                return stored["nodes"]
        except (OSError, ValueError, KeyError, AttributeError):
            pass  # absent, unreadable or half-written by a crashed writer: compute it
    nodes = compute()
    if nodes is None:
        return None
    try:
        text = json.dumps({"format": FORMAT, "nodes": nodes}, sort_keys=True)
    except (TypeError, ValueError):  # a default JSON cannot hold: compose from it as is
        return nodes
    if path is not None:
        _store(path, text)
    return json.loads(text)["nodes"]


def _store(path: Path, text: str) -> None:
    """Write atomically (parallel commands may store the same file) and keep the newest
    KEEP_FILES; a cache folder that cannot be written is not an error."""
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp",
                                         delete=False) as tmp:
            tmp_name = tmp.name
            tmp.write(text)
        os.chmod(tmp_name, 0o644)  # readable like the other files a shared cache folder holds
        os.replace(tmp_name, path)
        tmp_name = None
        stored = sorted(path.parent.glob("*.json"), key=lambda p: p.stat().st_mtime,
                        reverse=True)
        for old in stored[KEEP_FILES:]:
            old.unlink(missing_ok=True)
    except OSError:
        pass
    finally:
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)
