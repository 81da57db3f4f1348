"""`jaxtrade bench <name> [args]`: run scripts/bench_<name>.py with the same Python."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from jaxtrade.errors import ConfigError

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def available() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in SCRIPTS.glob("bench_*.py"))


HELP = """usage: jaxtrade bench <name> [script options]

Runs scripts/bench_<name>.py (each prints its ratio against a peer measured in the same run;
most take --quick for a short smoke run). `jaxtrade bench <name> --help` shows its options.
"""


def main(argv: Sequence[str]) -> int:
    argv = list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        names = available()
        print(HELP + "\navailable: " + (", ".join(names) if names else "(none found)"))
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    script = SCRIPTS / f"bench_{name}.py"
    if not script.is_file():
        names = available()
        raise ConfigError(f"bench {name!r} is not allowed: choose one of "
                          f"{', '.join(names) or '(none found)'}")
    env = dict(os.environ)
    if "--no-hugepages" in rest:
        # The jaxtrade command turned glibc's huge-page malloc on for itself (and so for the
        # child's inherited environment); the script's flag asks for the default malloc.
        from jaxtrade.hugepages import TUNABLE

        kept = [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t and t != TUNABLE]
        env["GLIBC_TUNABLES"] = ":".join(kept)
        env["JAXTRADE_NO_HUGEPAGES"] = "1"
    return subprocess.call([sys.executable, str(script), *rest], env=env)
