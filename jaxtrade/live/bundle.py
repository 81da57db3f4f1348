"""Loading a bundle: checksums, then the manifest, then weights that must match their sha256.

Nothing in a bundle is executed or unpickled: the manifest is JSON, weights are safetensors
(or npz read with allow_pickle=False). `SHA256SUMS` (the format `sha256sum -c` checks) holds
the sha256 of manifest.json, of every weight file and of policy.onnx when the bundle has one
(its manifest section `onnx` names it); a file whose sha256 differs, or that is
a symbolic link, is refused before anything runs. The manifest is then validated (finite
numbers, positive scales and windows, known modes), so a bundle that cannot trade stops at
start with one line instead of failing at every bar.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import BundleError
from .tensors import read_npz, read_safetensors

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CHECKSUMS = "SHA256SUMS"


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Bundle:
    root: Path
    manifest: dict
    weights: dict[str, np.ndarray]


def write_checksums(root: str | Path, names: list[str]) -> Path:
    """Writes root/SHA256SUMS for the named files (manifest and weights)."""
    root = Path(root)
    lines = [f"{sha256_file(root / name)}  {name}\n" for name in names]
    path = root / CHECKSUMS
    path.write_text("".join(lines), encoding="utf-8")
    return path


def _plain_name(name: object, where: Path) -> str:
    # Plain names only: a bundle must not point outside itself.
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        raise BundleError(f"{where}: file name {name!r} is not allowed")
    return name


def _regular_file(path: Path, what: str) -> None:
    if path.is_symlink():
        raise BundleError(f"{path}: {what} is a symbolic link; a bundle holds its own files")
    if not path.is_file():
        raise BundleError(f"{path.parent}: {what} {path.name} is missing")


def _read_checksums(root: Path) -> dict[str, str]:
    path = root / CHECKSUMS
    if not path.exists() and not path.is_symlink():
        raise BundleError(f"{root}: no {CHECKSUMS} (exported by an older jaxtrade, or "
                          "incomplete): export the bundle again")
    _regular_file(path, "the checksum file")
    sums: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise BundleError(f"{path}: unreadable ({err})") from None
    for line in lines:
        if not line.strip():
            continue
        digest, _, name = line.strip().partition(" ")
        name = name.lstrip(" *")  # "HASH  name" or, written in binary mode, "HASH *name"
        if len(digest) != 64 or not name:
            raise BundleError(f"{path}: malformed line {line[:80]!r}")
        sums[_plain_name(name, path)] = digest.lower()
    return sums


def _verify(path: Path, expected: str, what: str) -> None:
    _regular_file(path, what)
    actual = sha256_file(path)
    if actual != expected:
        raise BundleError(
            f"{path}: sha256 {actual[:16]}... does not match the bundle's "
            f"{str(expected)[:16]}...; refusing a tampered or corrupted {what}"
        )


def _json_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number a manifest may hold")


def _json_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is not a finite number")
    return value


def load_bundle(root: str | Path) -> Bundle:
    root = Path(root)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file() and not manifest_path.is_symlink():
        raise BundleError(f"{root}: no {MANIFEST} (not an exported bundle)")
    sums = _read_checksums(root)
    if MANIFEST not in sums:
        raise BundleError(f"{root / CHECKSUMS}: lists no {MANIFEST}")
    _verify(manifest_path, sums[MANIFEST], "manifest")
    try:
        manifest = json.loads(
            manifest_path.read_text(encoding="utf-8"),
            parse_constant=_json_constant,
            parse_float=_json_float,
        )
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise BundleError(f"{manifest_path}: unreadable manifest ({err})") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path}: not a JSON object")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{manifest_path}: bundle format {version!r}, this runner reads {FORMAT_VERSION}"
        )
    check_manifest(manifest, manifest_path)
    files = manifest.get("weights")
    if not isinstance(files, dict) or not files:
        raise BundleError(f"{manifest_path}: lists no weight files")
    weights: dict[str, np.ndarray] = {}
    for name, expected in files.items():
        name = _plain_name(name, manifest_path)
        if sums.get(name) != expected:
            raise BundleError(f"{root / CHECKSUMS}: the sha256 of {name} differs from the "
                              "manifest's (or is missing)")
        path = root / name
        _verify(path, expected, "weights")
        if name.endswith(".safetensors"):
            weights.update(read_safetensors(path))
        elif name.endswith(".npz"):
            weights.update(read_npz(path))
        else:
            raise BundleError(f"{path}: weights must be .safetensors or .npz")
    graph = manifest.get("onnx")
    if graph is not None:  # policy.onnx (export format=onnx): checked even when unused
        if not isinstance(graph, dict):
            raise BundleError(f"{manifest_path}: onnx is not an object")
        name = _plain_name(graph.get("file"), manifest_path)
        if sums.get(name) != graph.get("sha256"):
            raise BundleError(f"{root / CHECKSUMS}: the sha256 of {name} differs from the "
                              "manifest's (or is missing)")
        _verify(root / name, graph["sha256"], "ONNX graph")
    return Bundle(root=root, manifest=manifest, weights=weights)


# --- manifest validation ----------------------------------------------------------------------
def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_manifest(m: dict, where: Path | str = MANIFEST) -> None:
    """Refuses (BundleError, one line naming the field) a manifest the runner cannot trade
    with. JSON parsing already refused NaN and infinities."""

    def bad(field: str, value: object, expected: str) -> BundleError:
        shown = json.dumps(value)[:60] if value is not ... else "missing"
        return BundleError(f"{where}: {field} is {shown}; expected {expected}")

    def section(name: str, parent: dict = m, prefix: str = "") -> dict:
        value = parent.get(name, ...)
        if not isinstance(value, dict):
            raise bad(prefix + name, value, "an object")
        return value

    def count(value: object, field: str, low: int) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise bad(field, value, f"a whole number >= {low}")
        return value

    def numbers(value: object, field: str, size: int | None = None) -> list:
        if not isinstance(value, list) or not all(_number(v) for v in value) or \
                (size is not None and len(value) != size):
            raise bad(field, value, "a list of numbers" + (f" of length {size}" if size else ""))
        return value

    features = section("features")
    spec = section("spec", features, "features.")
    if not isinstance(spec.get("features"), list) or not spec["features"]:
        raise bad("features.spec.features", spec.get("features", ...), "a list of features")
    normalizer = section("normalizer", features, "features.")
    columns = features.get("columns")
    size = len(columns) if isinstance(columns, list) else None
    center = numbers(normalizer.get("center", ...), "features.normalizer.center", size)
    scale = numbers(normalizer.get("scale", ...), "features.normalizer.scale", len(center))
    for i, value in enumerate(scale):
        if value <= 0:
            raise bad(f"features.normalizer.scale[{i}]", value, "a positive number")
    clip = normalizer.get("clip")
    if clip is not None and not (_number(clip) and clip > 0):
        raise bad("features.normalizer.clip", clip, "null or a positive number")

    observation = section("observation")
    count(observation.get("window_bars", ...), "observation.window_bars", 1)
    if observation.get("layout", "flat") not in ("flat", "window"):
        raise bad("observation.layout", observation["layout"], '"flat" or "window"')

    action = section("action")
    mode = action.get("mode", ...)
    if mode == "discrete":
        levels = numbers(action.get("discrete_levels", ...), "action.discrete_levels")
        if not levels:
            raise bad("action.discrete_levels", levels, "at least one level")
    elif mode == "continuous":
        low = numbers(action.get("low", ...), "action.low")
        high = numbers(action.get("high", ...), "action.high", len(low))
        if not low or any(a >= b for a, b in zip(low, high)):
            raise bad("action.high", high, "numbers above action.low")
    else:
        raise bad("action.mode", mode, '"discrete" or "continuous"')

    for name in ("trading", "costs", "risk"):
        for key, value in section(name).items():
            values = value if isinstance(value, list) else [value]
            for v in values:
                if isinstance(v, bool) or v is None:
                    continue
                # Funding can be received (negative); every other cost, limit or size is >= 0.
                if not _number(v) or (v < 0 and key != "funding_bps_per_bar"):
                    raise bad(f"{name}.{key}", value, "a number >= 0")
    trading = m["trading"]
    for key in ("initial_equity", "max_leverage"):
        if key in trading and not (_number(trading[key]) and trading[key] > 0):
            raise bad(f"trading.{key}", trading[key], "a positive number")

    market = m.get("market", {})
    if not isinstance(market, dict):
        raise bad("market", market, "an object")
    for key in ("atr_window", "volatility_window"):
        if key in market:
            count(market[key], f"market.{key}", 1)
    section("network")
    if "bars_per_year" in m and not (_number(m["bars_per_year"]) and m["bars_per_year"] > 0):
        raise bad("bars_per_year", m["bars_per_year"], "a positive number")
    for key in ("bar_interval_seconds", "gap_threshold_seconds"):
        if key in m and not (_number(m[key]) and m[key] >= 0):
            raise bad(key, m[key], "a number >= 0")
