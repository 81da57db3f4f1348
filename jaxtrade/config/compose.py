"""Compose a run configuration from `configs/` with Hydra's compose API, then validate it.

The CLI uses `initialize_config_dir` + `compose` rather than `@hydra.main`: Hydra keeps
its working directory and logging out of the way, and every failure becomes one
`ConfigError` line (unknown group choice or key with the closest valid one suggested).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jaxtrade.config.schema import register_configs
from jaxtrade.config.validate import (
    AGENT_KEYS_SET_ELSEWHERE,
    TOP_LEVEL_KEYS,
    suggest,
    unknown_key,
    validate_run,
)
from jaxtrade.errors import ConfigError

CONFIG_DIR_ENV = "JAXTRADE_CONFIG_DIR"


def config_dir() -> Path:
    """`$JAXTRADE_CONFIG_DIR`, else the repository's `configs/` next to the packages."""
    if os.environ.get(CONFIG_DIR_ENV):
        return Path(os.environ[CONFIG_DIR_ENV]).resolve()
    return (Path(__file__).resolve().parents[2] / "configs").resolve()


def group_options(group: str) -> list[str]:
    """The YAML options of a config group: `configs/<group>/*.yaml`, and `sub/name` for
    files in subfolders (experiment_agent/smoke/dqn.yaml is `smoke/dqn`)."""
    folder = config_dir() / group
    if not folder.is_dir():
        return []
    return sorted(p.relative_to(folder).with_suffix("").as_posix()
                  for p in folder.rglob("*.yaml"))


def groups() -> list[str]:
    return sorted(p.name for p in config_dir().iterdir() if p.is_dir())


def parse_overrides(overrides: Sequence[str]) -> list[Any]:
    """Hydra `Override` objects; a malformed one is a ConfigError naming it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        try:
            parsed.extend(parser.parse_overrides([text]))
        except OverrideParseException as err:
            raise ConfigError(f"cannot parse override '{text}': expected key=value "
                              f"({str(err).splitlines()[0]})") from None
    return parsed


def compose_raw(overrides: Sequence[str], config_name: str = "config") -> dict[str, Any]:
    """The composed, interpolation-resolved config as plain dicts (not yet validated)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    folder = config_dir()
    if not (folder / f"{config_name}.yaml").is_file():
        raise ConfigError(f"config directory {folder} has no {config_name}.yaml "
                          f"(set {CONFIG_DIR_ENV} to the folder holding jaxtrade's configs/)")
    # Group-choice typos are answered before the agents (and JAX) load for their defaults.
    check_group_choices(parse_overrides(overrides))
    register_configs()
    overrides = [_open_dict_entry(_integral_exponent(o)) for o in overrides]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(folder), version_base=None):
            cfg = compose(config_name=config_name, overrides=list(overrides))
            return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except ConfigError:
        raise
    except (Exception, OmegaConfBaseException) as err:  # Hydra's own errors: explain them
        raise explain_failure(err, overrides, config_name) from None
    finally:
        GlobalHydra.instance().clear()


_EXPONENT = re.compile(r"^[+]?\d+(\.\d*)?[eE][+]?\d+$")


def _integral_exponent(override: str) -> str:
    """`train.total_steps=2e5` -> `train.total_steps=200000`, so integer fields accept it."""
    key, sep, value = override.partition("=")
    if sep and _EXPONENT.match(value.strip()) and float(value).is_integer():
        return f"{key}={int(float(value))}"
    return override


# Settings that are open mappings (any key): `data.columns.close=Price` adds an entry.
OPEN_DICTS = ("data.columns.", "data.options.")


def _open_dict_entry(override: str) -> str:
    """`data.columns.close=Price` -> `++data.columns.close=Price`: an entry of an open
    mapping is set whether or not the mapping (or the entry) exists yet, as the error for
    an unmapped column tells users to type it (Hydra refuses a new key without `+`)."""
    if override.startswith(OPEN_DICTS) and "=" in override:
        return "++" + override
    return override


def compose_run(overrides: Sequence[str], config_name: str = "config") -> dict[str, Any]:
    """Compose and validate: the run config every command works from."""
    return validate_run(compose_raw(overrides, config_name))


def check_group_choices(parsed: Sequence[Any]) -> None:
    """A group choice that names no YAML file (`experiment=smok`) is a ConfigError naming
    the closest option, for every group: Hydra would skip an `optional` group's missing
    choice silently and train with the defaults."""
    group_names = set(groups())
    for ov in parsed:
        key = ov.key_or_group
        if key not in group_names or ov.is_delete():
            continue
        value = ov.value()
        # A multirun list (agent=ppo,dqn) is checked option by option.
        choices = list(value.list) if hasattr(value, "list") else [value]
        options = group_options(key)
        for choice in choices:
            if isinstance(choice, str) and choice not in options:
                raise ConfigError(f"{key}={choice!r} is not allowed: choose one of "
                                  f"{', '.join(options)}{suggest(choice, options)}")


def explain_failure(err: BaseException, overrides: Sequence[str], config_name: str) -> ConfigError:
    """Turn a Hydra composition error into one line naming the offending override."""
    parsed = parse_overrides(overrides)
    group_names = set(groups())
    # A key or value: replay the value overrides on the config composed from the group
    # choices alone (each checked by check_group_choices), checking each with the validator.
    selections = [o for o, ov in zip(overrides, parsed, strict=True)
                  if ov.key_or_group in group_names]
    try:
        base = compose_raw(selections, config_name) if len(selections) < len(overrides) else None
    except ConfigError as inner:
        return inner
    if base is not None:
        for text, ov in zip(overrides, parsed, strict=True):
            if ov.key_or_group in group_names:
                continue
            apply_override(base, ov.key_or_group, ov.value(), text)
        try:
            validate_run(base)
        except ConfigError as explained:
            return explained
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return ConfigError(" / ".join(lines[:2]) if lines else type(err).__name__)


def apply_override(cfg: dict[str, Any], dotted: str, value: Any, text: str = "") -> None:
    """Set `dotted` in the plain config; an unknown path is a ConfigError with a suggestion."""
    parts = dotted.split(".")
    node: Any = cfg
    for depth, part in enumerate(parts[:-1]):
        if not isinstance(node, Mapping) or part not in node:
            valid = list(node) if isinstance(node, Mapping) else []
            raise unknown_key(".".join(parts[: depth + 1]), value,
                              valid or TOP_LEVEL_KEYS)
        node = node[part]
    leaf = parts[-1]
    if parts[0] == "agent" and len(parts) == 2 and leaf in AGENT_KEYS_SET_ELSEWHERE:
        raise ConfigError(f"{dotted}={value!r} is not allowed: set "
                          f"{AGENT_KEYS_SET_ELSEWHERE[leaf]}")
    open_entry = isinstance(node, dict) and (dotted.rsplit(".", 1)[0] + ".") in OPEN_DICTS
    if not isinstance(node, dict) or (leaf not in node and not open_entry):
        valid = list(node) if isinstance(node, Mapping) else []
        raise unknown_key(dotted, value, valid)
    node[leaf] = value
