"""The huge-page malloc re-exec (jaxtrade/hugepages.py) used by the `jaxtrade` command."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from jaxtrade import cli, hugepages

PROBE = ("import os, sys; from jaxtrade import hugepages; hugepages.reexec_with_hugepages(); "
         "print(hugepages.enabled(), os.environ.get('GLIBC_TUNABLES'), sys.argv[1:])")


def _run(extra_env: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", hugepages.OPT_OUT)}
    env.update(extra_env)
    out = subprocess.run([sys.executable, "-c", PROBE, "a", "b=1"], env=env, check=True,
                         capture_output=True, text=True, timeout=60)
    return out.stdout.strip()


@pytest.mark.skipif(not hugepages.supported(), reason="needs Linux with glibc >= 2.35")
def test_reexec_sets_the_tunable_once_and_keeps_arguments():
    assert _run({}) == "True glibc.malloc.hugetlb=1 ['a', 'b=1']"
    # Other tunables are kept, the huge-page one appended.
    assert _run({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}) == (
        "True glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1 ['a', 'b=1']")


def test_opt_out_leaves_the_process_alone():
    assert _run({hugepages.OPT_OUT: "1"}) == "False None ['a', 'b=1']"


def test_command_entry_reexecs_before_running(monkeypatch):
    calls = []
    monkeypatch.setattr(hugepages, "reexec_with_hugepages", lambda: calls.append("reexec"))
    monkeypatch.setattr(cli, "main", lambda argv=None: calls.append("main") or 0)
    assert cli.entry() == 0
    assert calls == ["reexec", "main"]


def test_bench_no_hugepages_flag_reaches_the_script(monkeypatch):
    from experiments import bench

    seen = {}
    monkeypatch.setenv("GLIBC_TUNABLES", f"glibc.malloc.arena_max=2:{hugepages.TUNABLE}")
    monkeypatch.setattr(bench.subprocess, "call",
                        lambda cmd, env: seen.update(cmd=cmd, env=env) or 0)
    assert bench.main(["env", "--quick", "--no-hugepages"]) == 0
    assert seen["cmd"][-2:] == ["--quick", "--no-hugepages"]
    assert seen["env"]["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2"
    assert seen["env"][hugepages.OPT_OUT] == "1"
    assert bench.main(["env", "--quick"]) == 0
    assert hugepages.TUNABLE in seen["env"]["GLIBC_TUNABLES"]
