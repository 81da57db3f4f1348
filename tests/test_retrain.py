"""`jaxtrade retrain`: continued training on new bars behind a deploy gate, atomic promotion.

One tiny run trains on the first 400 bars of a synthetic market (module fixture); retrains
bring the next 200. The end-to-end retrain trains for real; the crash tests replace the
training by the resumed checkpoint itself (what they test is the bookkeeping around it):
an exception or a SIGKILL after every step leaves the pointer naming a complete bundle whose
files are unchanged, and the next retrain starts cleanly.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from live_helpers import TINY_RUN, tiny_frame, write_csv

from experiments import retrain as retrain_mod
from jaxtrade import deploy
from jaxtrade.cli import main
from jaxtrade.live.bars import Bar
from jaxtrade.live.bundle import load_bundle
from jaxtrade.live.engine import Runner
from jaxtrade.live.pointer import read_pointer, swap_pointer
from jaxtrade.live.sinks import Sink
from jaxtrade.live.store import ReplayStore

REPO = Path(__file__).resolve().parents[1]


def _quiet(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(args))
    return code, out.getvalue()


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    """(folder, history CSV (bars 0-399), new-bars CSV (400-599), the whole frame (650))."""
    root = tmp_path_factory.mktemp("retrain")
    frame = tiny_frame(bars=650)
    history = write_csv(frame.head(400), root / "history.csv")
    new = write_csv(frame.slice(400, 200), root / "new.csv")
    return root, history, new, frame


@pytest.fixture(scope="module")
def base_run(market):
    root, history, _, _ = market
    run_dir = root / "base"
    code, _ = _quiet("train", *TINY_RUN, f"data.path={history}", f"run_dir={run_dir}")
    assert code == 0
    return run_dir


def _copy_run(base: Path, where: Path) -> Path:
    """A copy of the trained run (its config names the history CSV, which stays put)."""
    run = where / "run"
    shutil.copytree(base, run, ignore=shutil.ignore_patterns("retrains", "deployed"))
    config = (run / "config.yaml").read_text().replace(str(base), str(run))
    (run / "config.yaml").write_text(config)
    return run


def _tree_hash(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


class Recorder(Sink):
    def __init__(self) -> None:
        self.decisions: list[dict] = []

    def emit(self, decision: dict) -> None:
        self.decisions.append(decision)


@pytest.fixture(scope="module")
def real_retrain(base_run, market, tmp_path_factory):
    """The loop end to end, with real training: the incumbent deployed, a runner following
    the pointer trades bars 0-599 into its store, a retrain reads the new bars from that
    store; returns (run, record, stdout, incumbent bundle, its files' hashes, runner)."""
    _, _, _, frame = market
    run = _copy_run(base_run, tmp_path_factory.mktemp("real"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        retrain_mod.deploy_initial(run, run / "retrains", run / "deployed", print)
    incumbent = read_pointer(run / "deployed")
    before = _tree_hash(incumbent)
    runner = Runner(
        load_bundle(incumbent),
        sink=Recorder(),
        store=ReplayStore(run / "replay.sqlite"),
        max_ahead_seconds=0,
        max_jump_seconds=0,
        pointer=run / "deployed",
    )
    for bar in _bars(frame.head(600)):
        runner.process(bar)
    # The gates' judgement is tested on constructed returns below; here a PSR threshold of
    # ~0 promotes any candidate that trades differently, so the loop's mechanics are tested
    # whatever a smoke-sized training happens to learn.
    code, text = _quiet(
        "retrain",
        f"run_dir={run}",
        f"bars={run / 'replay.sqlite'}",
        "steps=256",
        "gate=psr",
        "psr_threshold=1e-9",
    )
    record = deploy.read_history(run / "retrains")[-1]
    assert code == (0 if record["decision"] == "promoted" else retrain_mod.EXIT_KEPT)
    return run, record, out.getvalue() + text, incumbent, before, runner


def _bars(frame) -> list[Bar]:
    stamps = retrain_mod._stamps_us(frame)
    rows = frame.select("open", "high", "low", "close", "volume").rows()
    return [Bar(int(t), *row) for t, row in zip(stamps, rows, strict=True)]


def test_retrain_records_a_decision_both_scores_and_the_data_range(real_retrain, market):
    run, record, text, incumbent, before, _ = real_retrain
    assert record["number"] == 1 and record["gate"] == "psr"
    data = record["data"]
    assert data["history_bars"] == 400 and data["new_bars_used"] == 200 and data["bars"] == 600
    # The runner's store holds the history's bars too, exactly as the run's file has them.
    assert data["new_bars_before_history_end"] == 400 and data["conflicting_bars"] == 0
    assert data["last_bar"] == "2011-08-23T00:00:00Z"
    # The validation window rolled forward: it lies in the merged bars' validation split,
    # after the history's training split, and both bundles were scored on the same bars.
    assert data["validation"]["first_bar"] > data["history_last_bar"][:10]
    cand, inc = record["candidate"]["scores"], record["incumbent"]["scores"]
    assert cand["num_bars"] == inc["num_bars"] > 50
    assert record["incumbent"]["bundle"] == str(incumbent)
    # The gate's inputs are recorded: one retrain so far, so one trial and no luck benchmark.
    inputs = record["gate_inputs"]
    assert inputs["trials"] == 1 and inputs["benchmark_sharpe_per_bar"] == 0.0
    assert inputs["num_bars"] == cand["num_bars"] and inputs["threshold"] == 1e-9
    assert record["decision"] == ("promoted" if inputs["psr"] >= 1e-9 else "kept")
    assert set(record["timings_s"]) >= {"bars", "trained", "exported", "evaluated", "total"}
    decision = json.loads((run / "retrains" / "0001" / "decision.json").read_text())
    assert decision == record
    report = run / "retrains" / "0001" / "run" / "report" / "metrics.json"
    assert json.loads(report.read_text())["retrain"] == record
    # The pointer names the candidate exactly when it was promoted; the incumbent's files
    # are untouched either way.
    deployed = read_pointer(run / "deployed")
    expected = record["candidate"]["bundle"] if inputs["psr"] >= 1e-9 else str(incumbent)
    assert deployed == Path(expected)
    assert _tree_hash(incumbent) == before
    load_bundle(deployed)


def test_the_candidate_continues_the_incumbent_checkpoint_on_refitted_features(real_retrain):
    run, record, _, _, _, _ = real_retrain
    candidate = load_bundle(record["candidate"]["bundle"]).manifest
    incumbent = load_bundle(record["incumbent"]["bundle"]).manifest
    # Resumed from update 4 of the base run (512 steps of 4 envs x 32) plus steps=256.
    assert candidate["source"]["update"] == 6
    assert candidate["run_config"]["train"]["total_steps"] == 512 + 256
    # Normalization refitted on the new (longer) training split; how bars are read is kept.
    assert (
        candidate["features"]["normalizer"]["center"]
        != incumbent["features"]["normalizer"]["center"]
    )
    assert candidate["bars"] == incumbent["bars"]


def test_history_command_prints_every_decision(real_retrain):
    run, record, _, _, _, _ = real_retrain
    code, text = _quiet("retrain", "--history", str(run))
    assert code == 0
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["#", "finished", "(UTC)"]
    assert lines[1].split()[0] == "0" and "initial deployment" in lines[1]
    assert lines[2].split()[0] == "1" and record["decision"] in lines[2]
    assert f"{record['candidate']['scores']['sharpe']:.2f}" in lines[2]
    assert "deployed now:" in lines[-1]
    assert (run / "retrains" / "history.txt").read_text().splitlines() == lines[:-1]


def test_the_running_runner_switches_to_a_promoted_bundle_and_not_to_a_kept_one(
    real_retrain, market
):
    run, record, _, incumbent, _, runner = real_retrain
    _, _, _, frame = market
    assert record["decision"] == "promoted", record["reason"]
    ledger, later = runner.ledger, _bars(frame.slice(600, 50))
    runner.process(later[0])
    assert runner.bundle_root == Path(record["candidate"]["bundle"]) and runner.switches == 1
    assert runner.ledger is ledger
    for bar in later[1:]:
        runner.process(bar)
    # A candidate that must beat the incumbent 1000-fold is kept out; the runner stays.
    code, _ = _quiet(
        "retrain", f"run_dir={run}", f"bars={run / 'replay.sqlite'}", "steps=256", "factor=1000"
    )
    kept = deploy.read_history(run / "retrains")[-1]
    assert code == retrain_mod.EXIT_KEPT and kept["decision"] == "kept"
    assert kept["gate"] == "ratio" and kept["gate_inputs"]["factor"] == 1000
    assert "Sharpe not better by the factor" in kept["reason"]
    assert kept["incumbent"]["bundle"] == record["candidate"]["bundle"]
    assert kept["data"]["new_bars_used"] == 50
    assert read_pointer(run / "deployed") == Path(record["candidate"]["bundle"])
    runner.process(_bars(frame.tail(1))[0])  # nothing new to follow
    assert runner.switches == 1
    kinds = [k for k, _, _ in runner.store.events()]
    assert kinds == ["bundle_switched"]
    # The run's report.html shows every attempt: date, gate, decision, both bundles' scores.
    page = (run / "report" / "report.html").read_text()
    section = page.split(deploy.HISTORY_BEGIN, 1)[1].split(deploy.HISTORY_END, 1)[0]
    history = deploy.read_history(run / "retrains")  # the initial deployment, then both
    assert len(history) == 3
    assert "Retrain history" in section
    assert "2 retrain attempt(s) after the initial deployment, 1 promoted" in section
    rows = section.split("<tr")[2:]
    assert len(rows) == 3 and "<b>promoted</b>" in rows[1] and "<b>kept</b>" in rows[2]
    assert record["finished_utc"][:19] in rows[1] and kept["finished_utc"][:19] in rows[2]
    assert "<td>psr</td>" in rows[1] and "<td>ratio</td>" in rows[2]
    for row, rec in ((rows[1], record), (rows[2], kept)):
        assert f"<td>{rec['candidate']['scores']['sharpe']:.2f}</td>" in row
        assert f"<td>{rec['incumbent']['scores']['sharpe']:.2f}</td>" in row
    assert page.count(deploy.HISTORY_BEGIN) == 1  # replaced, not appended, by the 2nd retrain


def test_gate_ratio_matches_backtest_compare():
    inc = {"sharpe": 1.0, "max_drawdown": -0.10}
    assert deploy.ratio_gate({"sharpe": 1.06, "max_drawdown": -0.10}, inc).passed
    assert not deploy.ratio_gate({"sharpe": 1.04, "max_drawdown": -0.05}, inc).passed
    assert not deploy.ratio_gate({"sharpe": 2.0, "max_drawdown": -0.11}, inc).passed
    # A negative incumbent needs |5 %| better too.
    neg = {"sharpe": -1.0, "max_drawdown": -0.2}
    assert deploy.ratio_gate({"sharpe": -0.94, "max_drawdown": -0.2}, neg).passed
    assert not deploy.ratio_gate({"sharpe": -0.96, "max_drawdown": -0.2}, neg).passed
    assert not deploy.ratio_gate({"sharpe": math.nan, "max_drawdown": 0.0}, inc).passed


def test_gate_psr_needs_a_reliable_edge_and_pays_for_trials():
    rng = np.random.default_rng(0)
    incumbent = rng.normal(0.0, 0.01, 500)
    better = incumbent + rng.normal(0.002, 0.002, 500)
    noise = incumbent + rng.normal(0.0, 0.002, 500)
    one = deploy.psr_gate(better, incumbent, trials=1)
    assert one.passed and one.inputs["psr"] > 0.99
    assert not deploy.psr_gate(noise, incumbent, trials=1).passed
    assert not deploy.psr_gate(incumbent, incumbent, trials=1).passed  # identical: no edge
    slight = incumbent + rng.normal(0.00012, 0.002, 500)
    first, tenth = (deploy.psr_gate(slight, incumbent, trials=n) for n in (1, 10))
    assert tenth.inputs["benchmark_sharpe_per_bar"] > first.inputs["benchmark_sharpe_per_bar"]
    assert tenth.inputs["psr"] < first.inputs["psr"]


def test_bars_not_closed_are_never_read(market, base_run):
    _, history, new, frame = market
    from experiments import common

    hist = common.load_frame({"source": "csv", "path": str(history)})
    fresh = retrain_mod.read_new_bars(new, {"source": "csv"})
    # 'now' in the middle of the bar stamped 2011-08-23 (daily bars): that one is still open.
    now = dt.datetime(2011, 8, 23, 12, tzinfo=dt.timezone.utc)
    merged, info = retrain_mod.merge_bars(hist, fresh, now)
    assert info["new_bars_not_closed"] == 1 and info["new_bars_used"] == 199
    assert merged.height == 599 and info["last_bar"] == "2011-08-22T00:00:00Z"
    # Bars already in the history are left out (a changed one is counted as a conflict).
    overlap = frame.slice(390, 30).with_columns(close=frame["close"].slice(390, 30) * 1.01)
    merged, info = retrain_mod.merge_bars(hist, overlap, now)
    assert info["new_bars_before_history_end"] == 10 and info["conflicting_bars"] == 10
    assert info["new_bars_used"] == 20


def test_new_bars_from_the_runners_sqlite_store_and_a_folder(market, tmp_path):
    _, _, new, frame = market
    from jaxtrade.live.bars import Bar
    from jaxtrade.live.store import ReplayStore

    store = ReplayStore(tmp_path / "replay.sqlite")
    part = frame.slice(400, 50)
    stamps = retrain_mod._stamps_us(part)
    for stamp, row in zip(
        stamps, part.select("open", "high", "low", "close", "volume").rows(), strict=True
    ):
        store.record_bar(Bar(int(stamp), *row))
    store.close()
    from_store = retrain_mod.read_new_bars(tmp_path / "replay.sqlite", {"source": "csv"})
    assert from_store.equals(part)
    folder = tmp_path / "drop"
    folder.mkdir()
    frame.slice(400, 100).write_csv(folder / "a.csv")
    frame.slice(450, 150).write_parquet(folder / "b.parquet")
    assert retrain_mod.read_new_bars(folder, {"source": "csv"}).equals(frame.slice(400, 200))


# ------------------------------------------------------------------------ crash safety


def _no_training(cfg, print_fn):
    """The candidate is the resumed checkpoint itself, recorded as trained on the new bars
    (the crash tests test the bookkeeping around training, not training)."""
    step = next(p for p in (Path(cfg["run_dir"]) / "checkpoints").iterdir() if p.name.isdigit())
    path = step / "metadata" / "metadata"
    meta = json.loads(path.read_text())
    meta["run_info"]["data_fingerprint"] = cfg["data"]["fingerprint"]
    path.write_text(json.dumps(meta))
    sums = json.loads((step / "jaxtrade_sha256.json").read_text())
    sums["files"]["metadata/metadata"] = {
        "bytes": path.stat().st_size,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    (step / "jaxtrade_sha256.json").write_text(json.dumps(sums))


STAGES = (
    "recovered",
    "bars",
    "prepared",
    "trained",
    "exported",
    "evaluated",
    "decided",
    "promoted",
    "recorded",
)


def _check_deployed(run: Path, expected: Path | None = None) -> Path:
    deployed = read_pointer(run / "deployed")
    load_bundle(deployed)  # complete and sha256-valid
    if expected is not None:
        assert deployed == expected
    return deployed


@pytest.mark.parametrize("gate_passes", [True, False])
def test_an_exception_after_any_step_leaves_the_deployed_bundle_intact(
    base_run, market, tmp_path, monkeypatch, gate_passes
):
    _, _, new, _ = market
    run = _copy_run(base_run, tmp_path)
    monkeypatch.setattr(retrain_mod, "train_candidate", _no_training)
    monkeypatch.setattr(
        deploy,
        "ratio_gate",
        lambda c, i, f: deploy.GateResult("ratio", gate_passes, "forced by the test", {}),
    )
    with contextlib.redirect_stdout(io.StringIO()):
        retrain_mod.deploy_initial(run, run / "retrains", run / "deployed", print)
    incumbent = _check_deployed(run)
    before = _tree_hash(incumbent)
    kwargs = {"print_fn": lambda _: None}
    for stage in STAGES:

        def hook(name, stage=stage):
            if name == stage:
                raise RuntimeError(f"crash after {stage}")

        monkeypatch.setattr(retrain_mod, "STAGE_HOOK", hook)
        if stage == "promoted" and not gate_passes:
            continue  # no promotion step when the gate fails
        with pytest.raises(RuntimeError, match=stage):
            retrain_mod.retrain(run, new, **kwargs)
        swapped = stage in ("promoted", "recorded") and gate_passes
        deployed = _check_deployed(run, None if swapped else incumbent)
        assert _tree_hash(incumbent) == before
        if swapped:
            incumbent, before = deployed, _tree_hash(deployed)
    monkeypatch.setattr(retrain_mod, "STAGE_HOOK", None)
    record = retrain_mod.retrain(run, new, **kwargs)  # starts cleanly after all of that
    history = deploy.read_history(run / "retrains")
    numbers = [r["number"] for r in history]
    assert numbers == sorted(set(numbers)), "each retrain recorded once"
    assert record["number"] == numbers[-1]
    # Only finished retrains remain; interrupted ones were removed or recorded.
    finished = {int(p.name) for p in (run / "retrains").iterdir() if p.name.isdigit()}
    assert finished == set(numbers)
    recovered = [r for r in history if r.get("recovered")]
    assert recovered, "a decision written before its history line was recorded on recovery"
    promoted = [r for r in history if r["decision"] == "promoted"]
    assert _check_deployed(run) == Path(promoted[-1]["candidate"]["bundle"])
    if gate_passes:
        # The decision of the retrain killed between decision.json and the swap was kept.
        interrupted = [r for r in recovered if "before the pointer swap" in r["reason"]]
        assert interrupted and all(r["decision"] == "kept" for r in interrupted)
        assert len(promoted) == 2  # the initial one, then the one killed after the swap
    else:
        assert _check_deployed(run) == incumbent and len(promoted) == 1


_KILLER = """
import os, signal, sys
from experiments import retrain
from test_retrain import _no_training
retrain.train_candidate = _no_training
stage = sys.argv[1]
retrain.STAGE_HOOK = lambda name: os.kill(os.getpid(), signal.SIGKILL) if name == stage else None
sys.exit(retrain.main(sys.argv[2:]))
"""


@pytest.mark.parametrize("stage", ["trained", "decided", "promoted"])
def test_sigkill_during_a_retrain_leaves_the_pointer_and_the_next_retrain_runs(
    base_run, market, tmp_path, monkeypatch, stage
):
    _, _, new, _ = market
    run = _copy_run(base_run, tmp_path)
    with contextlib.redirect_stdout(io.StringIO()):
        retrain_mod.deploy_initial(run, run / "retrains", run / "deployed", print)
    incumbent = _check_deployed(run)
    before = _tree_hash(incumbent)
    env = dict(os.environ, PYTHONPATH=f"{REPO}:{REPO / 'tests'}")
    args = [f"run_dir={run}", f"bars={new}", "gate=psr", "psr_threshold=1e-9"]  # promotes
    done = subprocess.run(
        [sys.executable, "-c", _KILLER, stage, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    swapped = run / "retrains" / "0001" / "bundle"
    assert _check_deployed(run) == (swapped if stage == "promoted" else incumbent)
    assert _tree_hash(incumbent) == before
    monkeypatch.setattr(retrain_mod, "train_candidate", _no_training)
    record = retrain_mod.retrain(run, new, print_fn=lambda _: None)
    # Killed before its decision: the folder is removed and its number used again. Killed
    # after it: the decision is recorded, as promoted only if the pointer had been swapped.
    assert record["number"] == (1 if stage == "trained" else 2)
    first = deploy.read_history(run / "retrains")[1]
    assert first["number"] == 1
    if stage != "trained":
        assert first["recovered"]
        assert first["decision"] == ("promoted" if stage == "promoted" else "kept")
    _check_deployed(run)
    assert _tree_hash(incumbent) == before


def test_swap_pointer_is_one_rename_to_a_relative_link(tmp_path):
    a, b = tmp_path / "bundles" / "a", tmp_path / "bundles" / "b"
    a.mkdir(parents=True)
    b.mkdir()
    pointer = tmp_path / "deployed"
    swap_pointer(pointer, a)
    assert os.readlink(pointer) == "bundles/a" and read_pointer(pointer) == a
    swap_pointer(pointer, b)
    assert read_pointer(pointer) == b
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    text = tmp_path / "pointer.txt"
    text.write_text(f"{a}\n")
    assert read_pointer(text) == a


def test_usage_errors_are_one_line(tmp_path):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["retrain", "run_dir=x"]) == 2
        assert main(["retrain", f"run_dir={tmp_path}", "bars=nope.csv", "gate=best"]) == 2
    lines = err.getvalue().splitlines()
    assert len(lines) == 2 and "bars is required" in lines[0] and "gate='best'" in lines[1]


def test_report_html_shows_the_history_and_a_later_retrain_replaces_the_section(tmp_path):
    run = tmp_path / "run"
    (run / "report").mkdir(parents=True)
    (run / "retrains").mkdir()
    page = run / "report" / "report.html"
    page.write_text("<html><body><h1>report</h1></body></html>")
    initial = {"number": 0, "gate": None, "decision": "promoted", "finished_utc": "2026-01-01T00"}
    promoted = {
        "number": 1, "gate": "ratio", "decision": "promoted", "finished_utc": "2026-01-02T01",
        "reason": "Sharpe 1.30 > 1.05 x 1.00", "data": {"new_bars_used": 24, "validation": {
            "first_bar": "2025-12-01T00:00:00Z", "last_bar": "2025-12-31T00:00:00Z"}},
        "candidate": {"scores": {"sharpe": 1.3, "max_drawdown": -0.1, "total_return": 0.05}},
        "incumbent": {"scores": {"sharpe": 1.0, "max_drawdown": -0.12, "total_return": 0.03}},
    }
    for rec in (initial, promoted):
        deploy.append_history(run / "retrains", rec)
    deploy.update_report_history(run)
    deploy.append_history(run / "retrains", dict(promoted, number=2, decision="kept",
                                                 finished_utc="2026-01-03T01"))
    deploy.update_report_history(run)
    text = page.read_text()
    assert text.count(deploy.HISTORY_BEGIN) == 1 and text.index("<h1>") < text.index(
        deploy.HISTORY_BEGIN) < text.index("</body>")
    assert "2 retrain attempt(s) after the initial deployment, 1 promoted" in text
    rows = text.split("<tr")[2:]
    assert len(rows) == 3
    assert all(c in rows[1] for c in ("<td>1.30</td>", "<td>1.00</td>", "<td>-10.0%</td>",
                                      "<td>-12.0%</td>", "2025-12-01T00:00:00 to", "<td>24</td>"))
    assert "<b>kept</b>" in rows[2] and "2026-01-03T01" in rows[2]
