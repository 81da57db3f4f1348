"""How long `jaxtrade train <typo>` takes to say so: stored agent defaults vs computed, same run.

Runs the command a user runs (`python -m jaxtrade.cli train <overrides>`, the huge-page
re-exec included) in a fresh process for each sample, from a temporary working directory,
two ways, alternating so both see the same machine load:

  stored    the agents' defaults Hydra composes on are read from the cache folder
            (jaxtrade/config/agent_defaults.py): every command after the first
  computed  an empty cache folder for each sample: the defaults are computed from the agents'
            dataclasses, importing JAX, flax, optax and distrax (what every command did before
            they were stored; now the first after installing or editing the code)

With --peer DIR a third way runs the same command from another checkout (e.g. one before
the defaults were stored), in turn with the other two.

It prints, per command line, the median and minimum wall seconds of each way, the ratio
computed / stored (and peer / stored), the exit code and whether `jax` appeared in the stored
run's `-X importtime` log.

    python scripts/bench_config_errors.py [--samples N] [--peer DIR] [overrides ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The README's own example, a train setting, an agent hyperparameter, an ensemble member's.
TYPOS = [
    ["env.num_env=8"],
    ["train.total_step=5"],
    ["agent.hparams.learning_rat=1"],
    ["agent=ensemble", "agent.ppo.hparams.learning_rat=1"],
]


def run(overrides: list[str], cache: Path, workdir: Path, importtime: bool = False,
        checkout: Path = REPO) -> tuple[float, int, str]:
    """(wall seconds, exit code, stderr) of one `jaxtrade train` in a fresh interpreter."""
    path = os.pathsep.join(filter(None, [str(checkout), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "JAXTRADE_CACHE_DIR": str(cache), "PYTHONPATH": path}
    flags = ["-X", "importtime"] if importtime else []
    start = time.perf_counter()
    child = subprocess.run([sys.executable, *flags, "-m", "jaxtrade.cli", "train", *overrides],
                           capture_output=True, text=True, env=env, cwd=workdir, timeout=300)
    return time.perf_counter() - start, child.returncode, child.stderr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=5, help="runs per way (default 5)")
    parser.add_argument("--peer", type=Path, help="another checkout to time the same way")
    parser.add_argument("overrides", nargs="*",
                        help="one command line's overrides (default: four typical typos)")
    args = parser.parse_args(argv)
    cases = [args.overrides] if args.overrides else TYPOS
    with tempfile.TemporaryDirectory() as tmp:
        workdir, stored_cache = Path(tmp), Path(tmp) / "stored"
        run(cases[0], stored_cache, workdir)  # stores the defaults
        peer_cache = Path(tmp) / "peer"
        if args.peer:
            run(cases[0], peer_cache, workdir, checkout=args.peer)
        header = f"{'jaxtrade train ...':<50} {'stored s':>14} {'computed s':>14} {'ratio':>6}"
        print(header + (f" {'peer s':>14} {'ratio':>6}" if args.peer else "") + "  exit  jax")
        for overrides in cases:
            stored, computed, peer = [], [], []
            for _ in range(args.samples):
                wall, code, _ = run(overrides, stored_cache, workdir)
                stored.append(wall)
                wall, _, _ = run(overrides, Path(tempfile.mkdtemp(dir=tmp)), workdir)
                computed.append(wall)
                if args.peer:
                    peer.append(run(overrides, peer_cache, workdir, checkout=args.peer)[0])
            _, code, log = run(overrides, stored_cache, workdir, importtime=True)
            jax = any(line.rsplit("|", 1)[-1].strip() == "jax"
                      for line in log.splitlines() if line.startswith("import time:"))
            base = statistics.median(stored)
            line = f"{' '.join(overrides):<50} {_cell(stored)} {_cell(computed)} " \
                   f"{statistics.median(computed) / base:5.1f}x"
            if peer:
                line += f" {_cell(peer)} {statistics.median(peer) / base:5.1f}x"
            print(f"{line}  {code:>4}  {'yes' if jax else 'no'}")
    print(f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs")
    return 0


def _cell(samples: list[float]) -> str:
    """'median (min)' in seconds."""
    return f"{statistics.median(samples):5.2f} ({min(samples):.2f})"


if __name__ == "__main__":
    sys.exit(main())
