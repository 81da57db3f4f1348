"""`make test` after a crashed worker: the recipe itself, run on a small suite.

The suite here copies tests/conftest.py (where `--record-passed` / `--rerun-unpassed` live)
next to three small tests, one of which kills its worker with SIGSEGV the first time it runs,
as XLA:CPU now and then does. The Makefile's own `test` recipe runs it (TEST_RECORD keeps its
files apart from those of the run that runs this test). A crash alone must end in success
after the second run; a crash plus a real failure must still fail. Each run of the recipe
starts two pytest sessions with two workers each, so this takes some 30 s.
"""

from __future__ import annotations

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

MARK = Path(__file__).with_name("crashed-once")


def test_passes():
    assert 1 + 1 == 2


def test_crashes_its_worker_once():
    if not MARK.exists():
        MARK.write_text("x")
        os.kill(os.getpid(), signal.SIGSEGV)
    assert MARK.exists()
'''

FAILS = '''

def test_fails_for_real():
    assert 1 + 1 == 3
'''


def _make_test(tmp_path: Path, with_failure: bool) -> subprocess.CompletedProcess[str]:
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_toy.py").write_text(TOY + (FAILS if with_failure else ""))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    args = f"-c {tmp_path / 'pytest.ini'} --rootdir {tmp_path} -p no:cacheprovider {tmp_path}"
    venv_bin = Path(sys.executable).parent
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), "test", f"BIN={venv_bin}", "TEST_STAMP=",
         "TEST_WORKERS=2", f"TEST_RECORD={tmp_path / 'record'}", f"PYTEST_ARGS={args}"],
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
    # the second run ran only what did not pass: the crashed test, not test_passes again
    second = out.rsplit("running every test that did not pass once more", 1)[1]
    assert "1 passed" in second and "2 passed" not in second, second[-2000:]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_a_crashed_worker_does_not_hide_a_real_failure(tmp_path: Path) -> None:
    done = _make_test(tmp_path, with_failure=True)
    out = done.stdout
    assert "running every test that did not pass once more" in out, out[-3000:]
    assert "unrecognized arguments" not in out, out[-3000:]
    assert done.returncode != 0, out[-3000:]
    second = out.rsplit("running every test that did not pass once more", 1)[1]
    assert "test_fails_for_real" in second and "1 failed" in second, second[-2000:]
