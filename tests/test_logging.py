"""Run logger (metrics.jsonl, console, W&B offline read back from run-*.wandb) and progress."""

from __future__ import annotations

import io
import json
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jaxtrade.logging import RunLogger, read_metrics, scrub, to_jsonable
from jaxtrade.progress import Progress


def read_wandb_records(path: Path) -> list[Any]:
    """Protobuf records of a W&B transaction log (a LevelDB-style log: 32 KiB blocks of
    [crc32 u32, length u16, type u8] chunks after a 7-byte ':W&B' header), read with the SDK's
    record definitions and checked against their CRC."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    block, header = 32768, 7
    pos, pending, records = 7, b"", []
    while pos + header <= len(data):
        room = block - pos % block
        if room < header:
            pos += room
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + header])
        body = data[pos + header:pos + header + length]
        if length == 0 and kind == 0:
            break
        assert zlib.crc32(body, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF == crc
        pos += header + length
        pending += body
        if kind in (1, 4):  # FULL or LAST: one whole record
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_runs(run_dir: Path, wait_s: float = 15.0) -> dict[str, dict[str, Any]]:
    """{run id: {group, name, config, history rows, artifacts}} from every run-*.wandb file.

    The files are written by W&B's own service process; under load it may still be flushing
    just after `finish()` returns, so an incomplete file is read again for a few seconds.
    """
    deadline = time.time() + wait_s
    while True:
        try:
            return _read_wandb_runs(run_dir)
        except KeyError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)


def _read_wandb_runs(run_dir: Path) -> dict[str, dict[str, Any]]:
    runs = {}
    for path in sorted(run_dir.glob("wandb/*run-*/run-*.wandb")):
        info: dict[str, Any] = {"history": [], "artifacts": [], "config": {}}
        for record in read_wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                info.update(id=record.run.run_id, group=record.run.run_group,
                            name=record.run.display_name)
                for item in record.run.config.update:
                    info["config"][item.key] = json.loads(item.value_json)
            elif kind == "history":
                info["history"].append({
                    item.key or "/".join(item.nested_key): json.loads(item.value_json)
                    for item in record.history.item})
            elif kind == "artifact":
                info["artifacts"].append((record.artifact.type, record.artifact.name))
        runs[info["id"]] = info
    return runs


def test_metrics_jsonl_rows_per_point_and_resume_truncation(tmp_path: Path) -> None:
    lines: list[str] = []
    with RunLogger(tmp_path, kind="console", points=[{"seed": 0}, {"seed": 1}],
                   print_fn=lines.append, verbose=True) as logger:
        for update in (10, 20, 30):
            logger.log(update, update * 64, {"loss": np.array([0.5, 0.25]) * update,
                                             "lr": 3e-4, "nan_metric": np.array([np.nan, 1.0])})
    rows = read_metrics(tmp_path)
    assert [(r["point"], r["update"]) for r in rows] == [
        (0, 10), (1, 10), (0, 20), (1, 20), (0, 30), (1, 30)]
    assert rows[3]["loss"] == pytest.approx(5.0) and rows[3]["env_steps"] == 1280
    assert rows[0]["lr"] == pytest.approx(3e-4) and rows[0]["nan_metric"] is None
    assert len(lines) == 3 and lines[0].startswith("[10] update=10") and "loss=5" in lines[0]
    # Resuming from update 20 drops rows written after that checkpoint.
    with RunLogger(tmp_path, kind="none", points=[{}, {}], resume_after_update=20) as logger:
        logger.log(30, 30 * 64, {"loss": np.array([1.0, 2.0])})
    rows = read_metrics(tmp_path)
    assert [r["update"] for r in rows] == [10, 10, 20, 20, 30, 30]
    assert rows[-1]["loss"] == 2.0


def test_scrub_and_jsonable() -> None:
    cfg = {"logger": {"api_key": "abc", "project": "p"}, "WANDB_TOKEN": "x",
           "list": [{"password": 1, "ok": 2}]}
    assert scrub(cfg) == {"logger": {"project": "p"}, "list": [{"ok": 2}]}
    assert to_jsonable({"a": np.float32(1.5), "b": np.arange(2), "c": float("inf")}) == {
        "a": 1.5, "b": [0, 1], "c": None}


def test_wandb_offline_one_run_per_point_in_one_group(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "local-test-secret-0123456789abcdef0123"
    monkeypatch.setenv("WANDB_API_KEY", secret)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    points = [{"seed": 0, "agent.hparams.learning_rate": 1e-3},
              {"seed": 0, "agent.hparams.learning_rate": 3e-3}]
    info = {"git_commit": "abc123", "device": {"device_kind": "cpu"}, "data_fingerprint": "f00d"}
    with RunLogger(tmp_path / "run", kind="wandb", config={"agent": {"name": "ppo"}},
                   points=points, run_info=info, group="grp") as logger:
        for update in (5, 10):
            logger.log(update, update * 100, {"loss": np.array([1.0, 2.0]) / update,
                                              "validation_sharpe": np.array([0.1, 0.2])})
        logger.log_artifact(tmp_path / "run" / "metrics.jsonl", "metrics", "report", point=1)
        logger.summary({"validation_sharpe": 0.2}, point=1)
    runs = wandb_runs(tmp_path / "run")
    assert len(runs) == 2
    by_lr = {r["config"]["point"]["agent.hparams.learning_rate"]: r for r in runs.values()}
    assert set(by_lr) == {1e-3, 3e-3}
    for index, lr in enumerate((1e-3, 3e-3)):
        run = by_lr[lr]
        assert run["group"] == "grp"
        assert run["config"]["run_info"]["git_commit"] == "abc123"
        assert run["config"]["run_info"]["data_fingerprint"] == "f00d"
        losses = [h["loss"] for h in run["history"] if "loss" in h]
        assert losses == pytest.approx([(index + 1) / 5, (index + 1) / 10])
        assert [h["_step"] for h in run["history"] if "loss" in h] == [5, 10]
    assert ("report", "metrics") in by_lr[3e-3]["artifacts"]
    assert not by_lr[1e-3]["artifacts"]
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_progress_plain_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    with Progress(1000, stream=stream) as progress:
        progress.update(250, episode_return=0.5)
        progress.update(1000, episode_return=0.75, validation_sharpe=1.25)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("train: steps 250/1000 (25%)") and "val Sharpe -" in lines[0]
    assert "steps/s" in lines[1] and "ETA 0:00" in lines[1]
    assert "return 0.75" in lines[1] and "val Sharpe 1.250" in lines[1]


def test_progress_rich_display_renders() -> None:
    stream = io.StringIO()
    with Progress(100, stream=stream, rich=True) as progress:
        progress.update(50, episode_return=1.0, validation_sharpe=0.5)
        progress.print("a message")
    out = stream.getvalue()
    assert "a message" in out and "50/100" in out and "val Sharpe 0.500" in out


def test_console_shows_progress_lines_and_metrics_only_when_verbose(tmp_path: Path) -> None:
    """Every chunk printed a ~300-character line of raw metric names beside the progress
    line; the metrics now go to metrics.jsonl, and to the console with logger.verbose=true."""
    lines: list[str] = []
    with RunLogger(tmp_path, kind="console", print_fn=lines.append) as logger:
        logger.log(10, 640, {"loss": 0.5, "entropy": 1.0})
    assert lines == [] and read_metrics(tmp_path)[0]["loss"] == 0.5
    from jaxtrade.config import compose_run

    assert compose_run([])["logger"]["verbose"] is False
    assert compose_run(["logger.verbose=true"])["logger"]["verbose"] is True


def test_progress_says_it_compiles_and_how_long_it_took() -> None:
    stream = io.StringIO()
    with Progress(1000, stream=stream) as progress:
        progress.compiling()
        progress.update(250, episode_return=0.5)
        progress.update(500)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "compiling (first run of this shape; later runs use the cache)"
    assert lines[1].startswith("compiled and ran the first chunk in ") and lines[1].endswith(" s")
    # steps/s count from the end of the compile: none yet after the first chunk.
    assert lines[2].startswith("train: steps 250/1000") and "| - steps/s |" in lines[2]
    assert lines[3].startswith("train: steps 500/1000") and "| - steps/s |" not in lines[3]
    stream = io.StringIO()
    with Progress(1000, stream=stream) as progress:
        progress.compiling(cached=False)  # no persistent cache: no promise that later runs use it
    assert stream.getvalue().splitlines()[0] == "compiling"


def test_a_clean_resume_prints_no_orbax_item_warnings(tmp_path: Path) -> None:
    """Resuming printed orbax's 'Item "metadata" was found in the checkpoint, but could not
    be restored' (and "state") warnings, which read like a failure."""
    import logging

    from jaxtrade.checkpoint import CheckpointManager
    from jaxtrade.logging import silence_expected_orbax_warnings

    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Keep(level=logging.WARNING)
    logging.getLogger("absl").addHandler(handler)
    try:
        silence_expected_orbax_warnings()
        manager = CheckpointManager(tmp_path / "ck")
        manager.save(1, {"x": np.zeros(3)}, metadata={"a": 1})
        manager.close()
        manager = CheckpointManager(tmp_path / "ck")
        state, meta = manager.restore({"x": np.zeros(3)})
        manager.close()
    finally:
        logging.getLogger("absl").removeHandler(handler)
    assert meta["a"] == 1 and not [m for m in seen if "could not be restored" in m]


def test_counts_read_in_the_right_number() -> None:
    """Output said "1 pods", "1 trials" and "1 point(s)"."""
    from jaxtrade.logging import plural

    assert [plural(n, "pod") for n in (0, 1, 2)] == ["0 pods", "1 pod", "2 pods"]
    assert plural(1, "trial") == "1 trial" and plural(3, "padding point") == "3 padding points"
