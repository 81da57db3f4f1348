"""The deployed bundle as a pointer: a symbolic link (or a one-line text file) naming a bundle.

`jaxtrade retrain` promotes a bundle by swapping the pointer in one `os.replace`: a reader
sees the old target or the new one, never a half-written state, and the bundles themselves
are never modified. A runner started with `--bundle-pointer P` reads the pointer between bars
and follows a promotion (engine.Runner.follow_pointer).

Standard library only: this module is copied into every bundle with the rest of the runner.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import BundleError


def read_pointer(pointer: str | Path) -> Path:
    """The bundle directory `pointer` names (absolute). A symbolic link is read with
    `readlink` (relative targets are relative to the link's folder); a regular file holds the
    bundle's path on its first line."""
    pointer = Path(pointer)
    if pointer.is_symlink():
        target = Path(os.readlink(pointer))
    elif pointer.is_file():
        try:
            text = pointer.read_text(encoding="utf-8").strip().splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise BundleError(f"{pointer}: unreadable bundle pointer ({err})") from None
        if not text or not text[0].strip():
            raise BundleError(f"{pointer}: the bundle pointer is empty")
        target = Path(text[0].strip())
    elif pointer.is_dir():
        raise BundleError(
            f"{pointer} is a bundle directory, not a pointer; make one with "
            f"`ln -s {pointer} deployed` and pass that"
        )
    else:
        raise BundleError(f"{pointer}: no such bundle pointer")
    if not target.is_absolute():
        target = pointer.parent / target
    return Path(os.path.normpath(target))


def swap_pointer(pointer: str | Path, bundle: str | Path) -> Path:
    """Point `pointer` at `bundle` in one rename (a symbolic link, relative when the bundle
    is under the pointer's folder). Crash-safe: until the rename the old pointer stands; a
    temporary link left by a kill is removed by `clean_pointer_temps`."""
    pointer, bundle = Path(pointer), Path(bundle)
    pointer.parent.mkdir(parents=True, exist_ok=True)
    if pointer.exists() and not pointer.is_symlink() and pointer.is_dir():
        raise BundleError(f"{pointer} is a directory; the deployed bundle must be a pointer")
    target = os.path.relpath(bundle.resolve(), pointer.parent.resolve())
    temp = pointer.parent / f".{pointer.name}.swap-{os.getpid()}"
    if temp.is_symlink() or temp.exists():
        temp.unlink()
    os.symlink(target, temp)
    os.replace(temp, pointer)
    _sync_dir(pointer.parent)
    return pointer


def clean_pointer_temps(pointer: str | Path) -> list[Path]:
    """Remove temporary links a killed `swap_pointer` left beside `pointer`."""
    pointer = Path(pointer)
    removed = []
    if pointer.parent.is_dir():
        for temp in pointer.parent.glob(f".{pointer.name}.swap-*"):
            temp.unlink()
            removed.append(temp)
    return removed


def _sync_dir(folder: Path) -> None:
    """fsync a folder so a rename in it survives power loss (where the OS allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
