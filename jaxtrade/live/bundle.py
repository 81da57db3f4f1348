"""Loading a bundle: the manifest, then weights that must match their sha256.

Nothing in a bundle is executed or unpickled: the manifest is JSON, weights are safetensors
(or npz read with allow_pickle=False), and a weight file whose sha256 differs from the
manifest's is refused before anything runs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import BundleError
from .tensors import read_npz, read_safetensors

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


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


def load_bundle(root: str | Path) -> Bundle:
    root = Path(root)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{root}: no {MANIFEST} (not an exported bundle)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(f"{manifest_path}: unreadable manifest ({err})") from None
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{manifest_path}: bundle format {version!r}, this runner reads {FORMAT_VERSION}"
        )
    files = manifest.get("weights")
    if not isinstance(files, dict) or not files:
        raise BundleError(f"{manifest_path}: lists no weight files")
    weights: dict[str, np.ndarray] = {}
    for name, expected in files.items():
        # Plain names only: a manifest must not point outside its bundle.
        if Path(name).name != name or name in ("", ".", ".."):
            raise BundleError(f"{manifest_path}: weight file name {name!r} is not allowed")
        path = root / name
        if not path.is_file():
            raise BundleError(f"{root}: weight file {name} is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise BundleError(
                f"{path}: sha256 {actual[:16]}... does not match the manifest's "
                f"{str(expected)[:16]}...; refusing tampered or corrupted weights"
            )
        if name.endswith(".safetensors"):
            weights.update(read_safetensors(path))
        elif name.endswith(".npz"):
            weights.update(read_npz(path))
        else:
            raise BundleError(f"{path}: weights must be .safetensors or .npz")
    return Bundle(root=root, manifest=manifest, weights=weights)
