"""`make test` after a crashed worker: the recipe itself, run on a small suite.

The suite here copies tests/conftest.py (where `--record-passed` / `--rerun-unpassed` live)
next to small tests, one of which kills its worker with SIGSEGV the first CRASHES times it
runs, as XLA:CPU now and then does. The Makefile's own `test` recipe runs it (TEST_RECORD
keeps its files apart from those of the run that runs this test). A crash alone must end in
success after the second run, two crashes after the third; a crash in every run, or a crash
plus a real failure, must still fail. A run stops at a crash instead of going on with fewer
workers: the modules nobody had started wait for the next run. Each case starts two to three
pytest sessions with two workers each, so this takes some 40 s.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

TOY = '''
import os
import signal
from pathlib import Path

MARK = Path(__file__).with_name("crashes")
CRASHES = {crashes}


def test_passes():
    assert 1 + 1 == 2


def test_crashes_its_worker():
    done = len(MARK.read_text()) if MARK.exists() else 0
    if done < CRASHES:
        MARK.write_text("x" * (done + 1))
        os.kill(os.getpid(), signal.SIGSEGV)
'''

LATER = '''
import time


def test_later_module():
    time.sleep(0.5)
'''

FAILS = '''

def test_fails_for_real():
    assert 1 + 1 == 3
'''


def _make_test(tmp_path: Path, with_failure: bool,
               crashes: int = 1) -> subprocess.CompletedProcess[str]:
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_a_toy.py").write_text(TOY.format(crashes=crashes)
                                          + (FAILS if with_failure else ""))
    for name in "abcdef":  # modules queued behind the crash (test_a_toy is scheduled first)
        (tmp_path / f"test_later_{name}.py").write_text(LATER)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    args = f"-c {tmp_path / 'pytest.ini'} --rootdir {tmp_path} -p no:cacheprovider {tmp_path}"
    venv_bin = Path(sys.executable).parent
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), "test", f"BIN={venv_bin}", "TEST_STAMP=",
         "TEST_WORKERS=2", "TEST_RUNS=3", f"TEST_RECORD={tmp_path / 'record'}",
         f"PYTEST_ARGS={args}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600, check=False)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_a_crashed_worker_alone_ends_in_success(tmp_path: Path) -> None:
    done = _make_test(tmp_path, with_failure=False)
    out = done.stdout
    assert "crashed while running" in out, out[-3000:]
    assert "running every test that did not pass once more" in out, out[-3000:]
    assert "unrecognized arguments" not in out, out[-3000:]
    passed = (tmp_path / "record-passed.txt").read_text().split()
    assert any(p.endswith("::test_passes") for p in passed), passed
    assert done.returncode == 0, out[-3000:]
    # the first run stopped at the crash: some modules were left for the second run, which
    # ran only what had not passed (never test_passes again)
    first = out.split("running every test that did not pass once more", 1)[0]
    ran_first = re.search(r"1 failed, (\d+) passed", first)
    assert ran_first is not None and int(ran_first.group(1)) < 7, first[-2000:]
    passed = (tmp_path / "record-passed.txt").read_text().split()
    assert len(passed) == len(set(passed)) == 8, passed


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_two_crashes_end_in_success_on_the_third_run(tmp_path: Path) -> None:
    done = _make_test(tmp_path, with_failure=False, crashes=2)
    out = done.stdout
    assert out.count("running every test that did not pass once more") == 2, out[-3000:]
    assert done.returncode == 0, out[-3000:]
    assert (tmp_path / "record-run-3.log").exists()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_a_crash_in_every_run_fails(tmp_path: Path) -> None:
    done = _make_test(tmp_path, with_failure=False, crashes=3)
    out = done.stdout
    assert out.count("crashed while running") >= 3, out[-3000:]
    assert done.returncode != 0, out[-3000:]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_a_crashed_worker_does_not_hide_a_real_failure(tmp_path: Path) -> None:
    done = _make_test(tmp_path, with_failure=True)
    out = done.stdout
    assert "running every test that did not pass once more" in out, out[-3000:]
    assert "unrecognized arguments" not in out, out[-3000:]
    assert done.returncode != 0, out[-3000:]
    second = out.rsplit("running every test that did not pass once more", 1)[1]
    assert "test_fails_for_real" in second and "1 failed" in second, second[-2000:]
