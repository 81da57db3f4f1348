"""`jaxtrade` subcommands end to end on tiny data: exit codes, one-line errors, run dirs, W&B."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
import yaml
from test_logging import wandb_runs

from jaxtrade.cli import main
from jaxtrade.errors import ConfigError

# A few seconds of PPO on a small synthetic market.
TINY = ["experiment=smoke", "data.options.num_bars=400", "env.num_envs=4", "env.window_bars=16",
        "env.episode_bars=64", "agent.rollout_len=32", "agent.updates_per_chunk=2",
        "train.total_steps=512", "train.checkpoint_every_updates=2",
        "train.eval_every_updates=2", "network.hidden_sizes=[16,16]"]


def run_cli(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(["train", *TINY, "logger=wandb", f"run_dir={run_dir}", "seed=3"])
    assert code == 0
    # What train itself wrote (later tests rewrite the report through `jaxtrade backtest`).
    for name in ("positions.csv", "metrics.json"):
        shutil.copy(run_dir / "report" / name, run_dir.parent / f"train_{name}")
    return run_dir, buffer.getvalue()


def test_help_everywhere(capsys: pytest.CaptureFixture) -> None:
    assert run_cli(["--help"], capsys)[0] == 0
    for command in ("train", "backtest", "sweep", "data", "bench", "export", "live", "compare"):
        code, out, err = run_cli([command, "--help"], capsys)
        assert code == 0, (command, err)
        assert f"jaxtrade {command}" in (out + err), command


def test_user_errors_are_one_line_with_exit_2(capsys: pytest.CaptureFixture) -> None:
    code, out, err = run_cli(["nosuch"], capsys)
    assert code == 2 and "unknown command 'nosuch'" in err
    code, out, err = run_cli(["train", "env.num_env=64"], capsys)
    assert code == 2
    assert err.strip().count("\n") == 0
    assert "'env.num_env'" in err and "did you mean 'env.num_envs'?" in err
    code, out, err = run_cli(["train", "experiment=smok"], capsys)
    assert code == 2 and err.strip().count("\n") == 0 and "did you mean 'smoke'?" in err
    code, out, err = run_cli(["train", "data=csv", "data.path=/no/such/bars.csv"], capsys)
    assert code == 2 and err.startswith("jaxtrade: DataError:") and "/no/such/bars.csv" in err
    code, out, err = run_cli(["bench", "nosuch"], capsys)
    assert code == 2 and "bench 'nosuch' is not allowed" in err
    code, out, err = run_cli(["data", "frobnicate"], capsys)
    assert code == 2 and err.count("\n") == 1


def test_train_writes_the_run_directory(trained: tuple[Path, str]) -> None:
    run_dir, stdout = trained
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["env"]["num_envs"] == 4 and cfg["seed"] == 3
    assert cfg["agent"]["hparams"]["learning_rate"] == pytest.approx(2.5e-4)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["update"] for r in rows] == [2, 4]
    assert [r["env_steps"] for r in rows] == [256, 512]
    assert all(r["ppo/loss"] is not None and "validation_sharpe" in r for r in rows)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()) \
        == ["2", "4"]
    metrics = json.loads((run_dir / "report" / "metrics.json").read_text())
    assert {"train", "validation", "test", "baselines"} <= set(metrics)
    assert "buy_and_hold" in metrics["baselines"]
    assert f"report: {run_dir / 'report' / 'report.html'}" in stdout
    assert "buy_and_hold" in stdout and "test Sharpe" in stdout
    # The run records the bars it trained on: config.yaml and the report's title.
    fingerprint = cfg["data"]["fingerprint"]
    assert len(fingerprint) == 16
    html = (run_dir / "report" / "report.html").read_text()
    assert f"ppo on synthetic (bars {fingerprint})" in html


def test_a_file_run_records_the_file_and_refuses_changed_bars(tmp_path: Path) -> None:
    """data.path without data=csv trained on the file but recorded sp500_daily; a config.yaml
    fingerprint that the bars no longer match is refused."""
    from experiments import common
    from jaxtrade.config import compose_run
    from jaxtrade.data.synthetic import synthetic_frame
    from jaxtrade.errors import ConfigError, DataError

    csv = tmp_path / "rw.csv"
    synthetic_frame(num_bars=300, seed=1).write_csv(csv)
    with pytest.raises(ConfigError, match=r"data.path='.*rw.csv' is not allowed with "
                                          r"data=sp500_daily \(an embedded dataset\): add "
                                          r"data=csv"):
        compose_run([f"data.path={csv}"])
    with pytest.raises(ConfigError, match="add data=csv"):
        compose_run(["experiment=smoke", f"data.path={csv}"])
    cfg = compose_run(["data=csv", f"data.path={csv}"])
    assert common.data_label(cfg["data"]) == "rw.csv"
    assert common.resolve_run_dir(cfg).name.startswith("ppo-rw-")
    frame = common.load_frame(cfg["data"])
    cfg["data"]["fingerprint"] = common.data_fingerprint(frame)
    assert common.load_frame(cfg["data"]).equals(frame)
    synthetic_frame(num_bars=300, seed=2).write_csv(csv)
    with pytest.raises(DataError, match="rw.csv: the bars changed since training"):
        common.load_frame(cfg["data"])


def test_splits_too_short_to_judge_a_policy_are_refused(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    """50 bars gave 5-bar validation and test splits and a report of "Sharpe 14.02"."""
    from jaxtrade.data.synthetic import synthetic_frame

    csv = tmp_path / "bars50.csv"
    synthetic_frame(num_bars=50, seed=1).write_csv(csv)
    code, out, err = run_cli(["train", "data=csv", f"data.path={csv}", "env.window_bars=8",
                              "env.num_envs=4", "logger=none", f"run_dir={tmp_path / 'r'}"],
                             capsys)
    assert code == 2 and err.strip().count("\n") == 0
    assert ("the validation and test split(s) are too short to judge a policy: validation 6 "
            "bars, test 6 of 50 (data.train_frac=0.7, data.validation_frac=0.15, "
            "data.embargo_bars=5); each needs at least 30") in err
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_intervals_that_are_not_whole_chunks_are_noticed() -> None:
    """checkpoint_every_updates=5 became 10 and stop_after_updates=1 stopped at 10, silently."""
    from types import SimpleNamespace

    from experiments.train import chunk_notice
    from jaxtrade.config import compose_run

    ppo = SimpleNamespace(updates_per_chunk=10, num_updates=100, steps_per_update=1024)
    assert chunk_notice(compose_run([])["train"], ppo) is None  # 20 and 10: whole chunks
    cfg = compose_run(["train.checkpoint_every_updates=5", "train.stop_after_updates=1"])
    assert chunk_notice(cfg["train"], ppo) == (
        "note: checkpoints every 10 updates (train.checkpoint_every_updates=5); a stop after 10 "
        "updates "
        "(train.stop_after_updates=1): rounded up to whole chunks of agent.updates_per_chunk=10 "
        "(set it to a divisor of the interval for exact intervals)")
    steps = compose_run(["train.eval_every_steps=3000"])["train"]
    assert "validation every 10 updates (train.eval_every_steps=3000)" in chunk_notice(steps, ppo)
    # A stop at or past the end of the run is not a rounding.
    done = compose_run(["train.stop_after_updates=105"])["train"]
    assert chunk_notice(done, ppo) is None


def test_default_intervals_rounded_to_a_dqn_chunk_are_not_noticed() -> None:
    """Every default DQN run printed the rounding notice (the default 20-update checkpoint
    interval vs its 1,000-update chunk), which the user did not cause."""
    from types import SimpleNamespace

    from experiments.common import override_keys
    from experiments.train import chunk_notice
    from jaxtrade.config import compose_run

    dqn = SimpleNamespace(updates_per_chunk=1000, num_updates=100_000, steps_per_update=10)
    argv = ["agent=dqn"]
    assert chunk_notice(compose_run(argv)["train"], dqn, override_keys(argv)) is None
    argv = ["agent=dqn", "train.checkpoint_every_updates=20", "train.eval_every_steps=5000"]
    assert override_keys(argv) == {"agent", "train.checkpoint_every_updates",
                                   "train.eval_every_steps"}
    assert chunk_notice(compose_run(argv)["train"], dqn, override_keys(argv)) == (
        "note: checkpoints every 1000 updates (train.checkpoint_every_updates=20); validation "
        "every 1000 updates (train.eval_every_steps=5000): rounded up to whole chunks of "
        "agent.updates_per_chunk=1000 (set it to a divisor of the interval for exact intervals)")


def test_train_streams_to_wandb_offline(trained: tuple[Path, str]) -> None:
    run_dir, _ = trained
    runs = list(wandb_runs(run_dir).values())
    assert len(runs) == 1
    run = runs[0]
    assert run["group"] == run_dir.name
    info = run["config"]["run_info"]
    assert info["git_commit"] and info["versions"]["jax"] and info["device"]["device_kind"]
    assert len(info["data_fingerprint"]) == 16
    assert run["config"]["env"]["num_envs"] == 4
    assert run["config"]["data"]["fingerprint"] == info["data_fingerprint"]
    steps = [h["_step"] for h in run["history"] if "ppo/loss" in h]
    assert steps == [2, 4]  # streamed at each chunk boundary
    kinds = {kind for kind, _ in run["artifacts"]}
    assert kinds == {"report", "checkpoint"}


def test_backtest_compare_export_and_live(trained: tuple[Path, str], tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    run_dir, _ = trained
    before = (run_dir / "report" / "metrics.json").read_text()
    (run_dir / "report" / "metrics.json").unlink()
    # The training report is for the best checkpoint by validation Sharpe; so is this one.
    code, out, err = run_cli(["backtest", f"run_dir={run_dir}", "checkpoint=best"], capsys)
    assert code == 0, err
    assert "point 0" in out
    assert json.loads((run_dir / "report" / "metrics.json").read_text())["test"] == \
        json.loads(before)["test"]
    code, out, err = run_cli(["backtest", f"run_dir={run_dir}", "chekpoint=best"], capsys)
    assert code == 2 and "did you mean 'checkpoint'?" in err
    code, out, err = run_cli(["backtest", "--compare", str(run_dir), str(run_dir)], capsys)
    assert code in (0, 3) and ("PROMOTE" in out or "KEEP" in out)
    code, out, err = run_cli(["compare", str(run_dir), str(run_dir)], capsys)
    assert code == 0, err
    bundle = tmp_path / "bundle"
    code, out, err = run_cli(["export", f"run_dir={run_dir}", f"out={bundle}"], capsys)
    assert code == 0, err
    assert (bundle / "manifest.json").is_file()


def test_data_subcommands(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run_cli(["data", "list"], capsys)
    assert code == 0 and "sp500_daily" in out and "eurusd_1h" in out
    code, out, _ = run_cli(["data", "inspect", "sp500_daily"], capsys)
    assert code == 0 and json.loads(out)
    target = tmp_path / "bars.csv"
    code, out, _ = run_cli(["data", "convert", "eurusd_1h", str(target)], capsys)
    assert code == 0 and target.is_file()
    code, out, _ = run_cli(["data", "validate", str(target)], capsys)
    assert code == 0 and ": ok," in out
    lines = target.read_text().splitlines()
    header = lines[0].split(",")
    broken = lines[5].split(",")
    broken[header.index("close")] = "-1"
    lines[5] = ",".join(broken)
    target.write_text("\n".join(lines) + "\n")
    code, out, err = run_cli(["data", "validate", str(target)], capsys)
    assert code == 2 and err.startswith("jaxtrade: DataError:") and str(target) in err
    code, out, _ = run_cli(["data", "features"], capsys)
    assert code == 0 and "rsi" in out


def test_bench_lists_and_runs_scripts(capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run_cli(["bench", "--help"], capsys)
    assert code == 0 and "available:" in out
    names = out.split("available:")[1].strip().split(", ")
    assert names and names[0] != "(none found)"
    assert main(["bench", names[0], "--help"]) == 0


def test_persistent_compilation_cache_is_on_by_default_cpu_included(
        tmp_path: Path) -> None:
    """The cache is on by default on every backend (CPU too, since the map bound of
    jaxtrade.xla.module_jit); `compile_cache=false` turns it off, and a null of an older
    config means the default."""
    import jax

    from experiments.common import enable_compile_cache
    from jaxtrade.config import compose_run

    before = jax.config.jax_compilation_cache_dir
    folder = str(tmp_path / "c")
    try:
        assert jax.default_backend() == "cpu"
        assert enable_compile_cache({"compile_cache": False,
                                     "compile_cache_dir": folder}) is None
        assert jax.config.jax_compilation_cache_dir == before
        assert not (tmp_path / "c").exists()
        for setting in ({}, {"compile_cache": None}, {"compile_cache": True}):
            assert enable_compile_cache({**setting, "compile_cache_dir": folder}) == (
                tmp_path / "c")
            assert jax.config.jax_compilation_cache_dir == folder
            jax.config.update("jax_compilation_cache_dir", before)
        assert compose_run([])["compile_cache"] is True
    finally:
        jax.config.update("jax_compilation_cache_dir", before)


def test_an_unwritable_cache_folder_turns_the_cache_off_with_a_warning(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A cache folder that cannot be made (here: below a file; a read-only home alike) does
    not stop the run: one warning, the cache off, JAX's setting untouched."""
    import jax

    from experiments.common import enable_compile_cache

    blocker = tmp_path / "file"
    blocker.write_text("")
    before = jax.config.jax_compilation_cache_dir
    try:
        assert enable_compile_cache({"compile_cache_dir": str(blocker / "cache")}) is None
        assert jax.config.jax_compilation_cache_dir == before
        err = capsys.readouterr().err
        assert err.startswith("warning: compilation cache off: cannot write ") and \
            "compile_cache=false" in err, err
    finally:
        jax.config.update("jax_compilation_cache_dir", before)


def test_train_report_is_the_backtest_of_the_checkpoint_it_names(
        trained: tuple[Path, str], capsys: pytest.CaptureFixture) -> None:
    """The report `jaxtrade train` writes for checkpoint C equals `jaxtrade backtest
    checkpoint=C` exactly (positions.csv byte for byte), and it says which C it is."""
    run_dir, stdout = trained
    report = run_dir / "report"
    source = json.loads((run_dir.parent / "train_metrics.json").read_text())["checkpoint"]
    assert source["requested"] == "best" and source["point"] == 0 and source["seed"] == 3
    assert source["update"] in (2, 4)
    assert f"report of checkpoint {source['update']} (best), point 0" in stdout
    assert "validation: policy Sharpe" in stdout and "test: policy Sharpe" in stdout
    code, out, err = run_cli(["backtest", f"run_dir={run_dir}",
                              f"checkpoint={source['update']}"], capsys)
    assert code == 0, err
    assert f"at update {source['update']}, point 0" in out
    assert (report / "positions.csv").read_bytes() == \
        (run_dir.parent / "train_positions.csv").read_bytes()
    assert json.loads((report / "metrics.json").read_text())["checkpoint"] == dict(
        source, requested=str(source["update"]))


@pytest.mark.slow
def test_recurrent_run_validates_and_its_report_equals_the_backtest(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """network=gru: validation Sharpe is computed (with the carry threaded through the split),
    and train.report_from=latest writes what `backtest checkpoint=latest` writes."""
    run_dir = tmp_path / "gru"
    code, out, err = run_cli(["train", *TINY, "network=gru", "network.recurrent_size=16",
                              "train.report_from=latest",
                              f"run_dir={run_dir}"], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(isinstance(r.get("validation_sharpe"), float) for r in rows)
    report = run_dir / "report"
    assert json.loads((report / "metrics.json").read_text())["checkpoint"]["update"] == 4
    trained_positions = (report / "positions.csv").read_bytes()
    (report / "positions.csv").unlink()
    code, out, err = run_cli(["backtest", f"run_dir={run_dir}", "checkpoint=latest"], capsys)
    assert code == 0, err
    assert (report / "positions.csv").read_bytes() == trained_positions

    # The exported GRU bundle, started at the test split's first bar, trades those positions.
    import polars as pl

    from experiments import common
    bundle, bars = tmp_path / "bundle", tmp_path / "bars.csv"
    code, out, err = run_cli(["export", f"run_dir={run_dir}", f"out={bundle}",
                              "checkpoint=latest"], capsys)
    assert code == 0, err
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    common.load_frame(cfg["data"]).select(
        "timestamp", "open", "high", "low", "close", "volume").write_csv(bars)
    test = pl.read_csv(io.BytesIO(trained_positions)).filter(pl.col("split") == "test")
    start = test["timestamp"][0][:19] + "Z"
    code, out, err = run_cli(["live", f"bundle={bundle}", "source=replay", f"path={bars}",
                              f"start={start}"], capsys)
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    targets = [x["target_position"] for x in lines if "target_position" in x]
    assert len(targets) == test.height
    assert targets[:-1] == test["target_position"].to_list()[:-1]


def test_backtest_names_a_missing_or_bad_checkpoint(trained: tuple[Path, str],
                                                     capsys: pytest.CaptureFixture) -> None:
    run_dir, _ = trained
    code, out, err = run_cli(["backtest", f"run_dir={run_dir}", "checkpoint=newest"], capsys)
    assert code == 2 and "checkpoint='newest' is not allowed" in err
    code, out, err = run_cli(["backtest", f"run_dir={run_dir}", "checkpoint=3"], capsys)
    assert code != 0 and "no checkpoint 3" in err and "[2, 4]" in err


def test_volume_less_bars_train_without_volume_features_and_adjust_is_a_cli_key(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Bars without volume were refused; now the features that need volume are left out, in
    one line naming them. data.adjust=true takes Yahoo's Adj Close as the close."""
    from experiments import common
    from jaxtrade.config import compose_run
    from jaxtrade.data.synthetic import synthetic_frame
    from jaxtrade.errors import ConfigError

    bars = synthetic_frame(num_bars=400, seed=1)
    csv = tmp_path / "fx.csv"
    bars.drop("volume").write_csv(csv)
    cfg = compose_run(["data=csv", f"data.path={csv}"])
    market = common.build_market(cfg, common.load_frame(cfg["data"]))
    out = capsys.readouterr().out
    assert ("note: the bars have no volume; left out the feature(s) that need it: obv, "
            "volume_roc, zscore(log_volume)") in out
    names = market.meta.feature_names
    assert not any(n.startswith(("obv", "volume_roc")) or "log_volume" in n for n in names)
    assert any(n.startswith("rsi") for n in names)

    yahoo = tmp_path / "SPY.csv"
    bars.with_columns((bars["close"] * 0.5).alias("Adj Close")).rename(
        {"timestamp": "Date", "open": "Open", "high": "High", "low": "Low", "close": "Close",
         "volume": "Volume"}).write_csv(yahoo)
    plain = common.load_frame(compose_run(["data=csv", f"data.path={yahoo}"])["data"])
    adjusted = common.load_frame(
        compose_run(["data=csv", f"data.path={yahoo}", "data.adjust=true"])["data"])
    for col in ("open", "high", "low", "close"):
        assert (adjusted[col] / plain[col] - 0.5).abs().max() < 1e-12
    with pytest.raises(ConfigError, match="data.adjust=true is not allowed with data=synthetic"):
        compose_run(["data=synthetic", "data.adjust=true"])


def test_help_piped_into_a_reader_that_leaves_early_is_quiet() -> None:
    """`jaxtrade train --help | head -1`: the closed pipe ends the command without a
    traceback (BrokenPipeError) and with exit status 0."""
    import os
    import subprocess
    import sys

    code = ("import sys; sys.argv = ['jaxtrade', 'train', '--help']; "
            "from jaxtrade.cli import entry; sys.exit(entry())")
    env = {**os.environ, "JAXTRADE_NO_HUGEPAGES": "1"}
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env)
    assert child.stdout is not None and child.stderr is not None
    first = child.stdout.readline()
    child.stdout.close()  # the reader leaves after one line
    stderr = child.stderr.read().decode()
    assert child.wait(timeout=60) == 0, stderr
    assert first.startswith(b"usage: jaxtrade train")
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr


def test_compile_cache_is_bounded_and_locked(tmp_path: Path) -> None:
    """Parallel jobs share the cache: JAX reads and writes it under a real file lock only when
    it is bounded (an unbounded cache writes entries in place, and a reader of a half-written
    entry crashes). An entry an unbounded cache wrote gets an access time so writes work."""
    import filelock
    import jax
    from jax._src import compilation_cache

    from experiments.common import enable_compile_cache

    old = tmp_path / "c" / "0123abcd-cache"
    old.parent.mkdir()
    old.write_bytes(b"x")
    before = (jax.config.jax_compilation_cache_dir, jax.config.jax_compilation_cache_max_size)
    try:
        path = enable_compile_cache({"compile_cache": True,
                                     "compile_cache_dir": str(tmp_path / "c"),
                                     "compile_cache_max_gb": 0.5})
        assert jax.config.jax_compilation_cache_max_size == 2**29
        cache, _ = compilation_cache.get_file_cache(str(path))
        assert cache.eviction_enabled and isinstance(cache.lock, filelock.FileLock)
        assert (path / "0123abcd-atime").exists()
        cache.put("fedc", b"y" * 10)
        assert cache.get("fedc") == b"y" * 10 and cache.get("0123abcd") == b"x"
        with pytest.raises(ConfigError, match="compile_cache_max_gb"):
            enable_compile_cache({"compile_cache": True, "compile_cache_dir": str(path),
                                  "compile_cache_max_gb": 0})
    finally:
        jax.config.update("jax_compilation_cache_dir", before[0])
        jax.config.update("jax_compilation_cache_max_size", before[1])
