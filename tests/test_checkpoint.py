"""Checkpoints: keep-last + best, exact resume (N + N == 2N), SIGKILL then resume, NaN stop.

The training loop is exercised with a small agent defined here that follows the agent
protocol (init / run_chunk / num_updates / updates_per_chunk / steps_per_update): SGD with
momentum on a linear regression whose minibatches are drawn from the RNG in the state, so
the result depends on params, optimizer state, RNG and update counter all being restored.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import struct

from experiments.loop import init_points, run_loop
from jaxtrade.checkpoint import CheckpointManager
from jaxtrade.errors import CheckpointError, TrainingError
from jaxtrade.logging import RunLogger, read_metrics

DIM = 6


@struct.dataclass
class ToyHParams:
    learning_rate: Any = 0.05


@struct.dataclass
class ToyState:
    params: Any
    opt_state: Any
    rng: jax.Array
    hparams: ToyHParams
    update_step: jax.Array


class ToyAgent(NamedTuple):
    init: Any
    run_chunk: Any
    num_updates: int
    updates_per_chunk: int
    steps_per_update: int
    # The protocol's accessors (agents/common/types.py) the loop reaches the state through.
    policy_params: Any = lambda state: state.params
    env_steps: Any = lambda state: state.update_step


def make_toy_agent(num_updates: int = 12, updates_per_chunk: int = 3, batch: int = 32
                   ) -> ToyAgent:
    init, run_chunk = _toy_functions(updates_per_chunk, batch)
    return ToyAgent(init, run_chunk, num_updates, updates_per_chunk, batch)


@functools.cache
def _toy_functions(updates_per_chunk: int, batch: int) -> tuple[Any, Any]:
    """The toy agent's `init` and `run_chunk`, made once per chunk size and batch: the loop
    caches its compiled chunk by `run_chunk`, so the tests training the same toy agent
    (whatever its number of updates) compile it once."""
    true_w = jnp.linspace(-1.0, 1.0, DIM)
    tx = optax.trace(decay=0.9)

    def init(key: jax.Array, hparams: Any = None, env_params: Any = None) -> ToyState:
        hp = ToyHParams() if hparams is None else hparams
        key, sub = jax.random.split(key)
        params = {"w": 0.1 * jax.random.normal(sub, (DIM,)), "b": jnp.zeros(())}
        return ToyState(params, tx.init(params), key, jax.tree.map(jnp.float32, hp),
                        jnp.zeros((), jnp.int32))

    def loss_fn(params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
        return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)

    def one_update(state: ToyState, _: Any) -> tuple[ToyState, dict]:
        rng, kx, kn = jax.random.split(state.rng, 3)
        x = jax.random.normal(kx, (batch, DIM))
        y = x @ true_w + 0.1 * jax.random.normal(kn, (batch,))
        loss, grads = jax.value_and_grad(loss_fn)(state.params, x, y)
        updates, opt_state = tx.update(grads, state.opt_state)
        params = jax.tree.map(lambda p, u: p - state.hparams.learning_rate * u,
                              state.params, updates)
        new = state.replace(params=params, opt_state=opt_state, rng=rng,
                            update_step=state.update_step + 1)
        return new, {"loss": loss, "episode_return": -loss}

    def run_chunk(state: ToyState, env_params: Any = None) -> tuple[ToyState, dict]:
        return jax.lax.scan(one_update, state, None, updates_per_chunk)

    return init, run_chunk


def train_toy(run_dir: Path, agent: ToyAgent, *, resume: bool = False,
              stop_after: int | None = None, every: int = 3, hparams: Any = None,
              num_points: int = 1) -> Any:
    keys = jnp.stack([jax.random.key(s) for s in range(num_points)])
    state = init_points(agent, keys, hparams, None)
    manager = CheckpointManager(run_dir / "checkpoints", keep_last=2, keep_best=1)
    start = 0
    if resume:
        state, meta = manager.restore(state)
        start = meta["update"]
    evaluate = lambda s: {"validation_sharpe": -np.asarray(
        jax.vmap(lambda p: jnp.sum((p["w"] - jnp.linspace(-1, 1, DIM)) ** 2))(s.params))}
    with RunLogger(run_dir, kind="none", points=[{}] * num_points,
                   resume_after_update=start if resume else None) as logger:
        try:
            result = run_loop(agent, None, state, start_update=start, logger=logger,
                              checkpoints=manager, checkpoint_every_updates=every,
                              metadata={"note": "toy"}, evaluate=evaluate,
                              stop_after_updates=stop_after)
        finally:
            manager.close()
    return result


def test_keep_last_and_best_and_typed_keys(tmp_path: Path) -> None:
    state = {"w": jnp.arange(3.0), "rng": jax.random.key(7), "n": jnp.int32(0)}
    sharpes = [0.5, 2.0, 0.1, 0.3, 0.2]
    with CheckpointManager(tmp_path / "ck", keep_last=2, keep_best=1) as manager:
        for step, sharpe in enumerate(sharpes, start=1):
            state = dict(state, w=state["w"] + 1, n=state["n"] + 1)
            manager.save(step, state, metadata={"config": {"a": 1}},
                         metrics={"validation_sharpe": sharpe})
        assert manager.all_steps() == [2, 4, 5]  # last two + the best (step 2, Sharpe 2.0)
        assert manager.best_step() == 2
        restored, meta = manager.restore(state, "best")
        assert int(restored["n"]) == 2 and meta["config"] == {"a": 1}
        assert meta["metrics"]["validation_sharpe"] == 2.0
        latest, _ = manager.restore(state)
        np.testing.assert_array_equal(latest["w"], state["w"])
        assert jax.random.key_impl(latest["rng"]) == jax.random.key_impl(state["rng"])
        np.testing.assert_array_equal(jax.random.key_data(latest["rng"]),
                                      jax.random.key_data(state["rng"]))
        with pytest.raises(CheckpointError, match="no checkpoint 3"):
            manager.restore(state, 3)
        with pytest.raises(CheckpointError, match="does not match"):
            manager.restore({"w": jnp.zeros(5), "rng": state["rng"], "n": state["n"]})


def test_an_abstract_template_restores_what_an_initialized_one_does(tmp_path: Path) -> None:
    """`abstract_points` (shapes only, `agent.init` neither compiled nor run) as the restore
    template gives the same arrays, dtypes, typed keys and placement as `init_points`."""
    from jaxtrade.runs import abstract_points, restore_point

    agent = make_toy_agent()
    hparams = ToyHParams(learning_rate=jnp.array([0.05, 0.1]))
    train_toy(tmp_path, agent, hparams=hparams, num_points=2)
    keys = jnp.stack([jax.random.key(s) for s in (5, 6)])  # values are the checkpoint's
    abstract = abstract_points(agent, keys, hparams, None)
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(abstract))
    assert abstract.rng.shape == (2,) and jnp.issubdtype(abstract.rng.dtype,
                                                         jax.dtypes.prng_key)
    concrete = init_points(agent, keys, hparams, None)
    one = restore_point(tmp_path / "checkpoints", abstract, "latest", point=1)
    other = restore_point(tmp_path / "checkpoints", concrete, "latest", point=1)
    assert one.step == other.step == agent.num_updates
    for x, y in zip(jax.tree.leaves(one.state), jax.tree.leaves(other.state), strict=True):
        assert (x.dtype, x.shape, x.sharding) == (y.dtype, y.shape, y.sharding)
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # the trained values, not the template's initial ones
    assert float(one.state.update_step[1]) == agent.num_updates
    assert not np.allclose(one.params["w"], concrete.params["w"][1])


def test_resume_equals_straight_run(tmp_path: Path) -> None:
    agent = make_toy_agent(num_updates=12, updates_per_chunk=3)
    straight = train_toy(tmp_path / "straight", agent)
    first = train_toy(tmp_path / "split", agent, stop_after=6)
    assert first.updates_done == 6 and not first.finished
    second = train_toy(tmp_path / "split", agent, resume=True)
    assert second.updates_done == 12 and second.finished
    for a, b in zip(jax.tree.leaves(straight.state), jax.tree.leaves(second.state)):
        a, b = np.asarray(jax.random.key_data(a) if jnp.issubdtype(a.dtype, jax.dtypes.prng_key)
                          else a), np.asarray(jax.random.key_data(b) if jnp.issubdtype(
                              b.dtype, jax.dtypes.prng_key) else b)
        np.testing.assert_array_equal(a, b)
    # The resumed run's metrics.jsonl continues without duplicated updates.
    updates = [row["update"] for row in read_metrics(tmp_path / "split")]
    assert updates == [3, 6, 9, 12]
    # And it trained: the loss went down.
    rows = read_metrics(tmp_path / "split")
    assert rows[-1]["loss"] < rows[0]["loss"]


def test_nan_stops_with_update_named_and_keeps_last_good(tmp_path: Path) -> None:
    agent = make_toy_agent(num_updates=30, updates_per_chunk=3)
    hparams = ToyHParams(learning_rate=jnp.asarray([3.0], jnp.float32))  # diverges
    with pytest.raises(TrainingError, match=r"loss is (nan|inf) at update \d+ \(point 0\)") as err:
        train_toy(tmp_path, agent, hparams=hparams, every=3)
    bad_update = int(str(err.value).split("at update ")[1].split()[0])
    with CheckpointManager(tmp_path / "checkpoints", read_only=True) as manager:
        last = manager.latest_step()
        assert last is not None and last < bad_update
        like = init_points(agent, jnp.stack([jax.random.key(0)]), hparams, None)
        state, _ = manager.restore(like)
        assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))
    assert f"last good checkpoint: update {last}" in str(err.value)


class Killed(BaseException):
    """Stands in for a SIGKILL at a chosen moment of the loop (nothing after it runs)."""


@pytest.mark.parametrize("when", ["after", "before"])
def test_kill_around_a_checkpoint_write_keeps_each_metrics_row_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str) -> None:
    """Killed just after checkpoint 6 is on disk (or just before it is written): metrics.jsonl
    then holds every update up to the checkpoint, and after resume each update exactly once."""
    agent = make_toy_agent(num_updates=12, updates_per_chunk=3)
    save = CheckpointManager.save

    def save_and_die(self: CheckpointManager, step: int, *args: Any, **kwargs: Any) -> None:
        if step == 6 and when == "before":
            raise Killed
        save(self, step, *args, **kwargs)
        if step == 6:
            raise Killed

    monkeypatch.setattr(CheckpointManager, "save", save_and_die)
    with pytest.raises(Killed):
        train_toy(tmp_path, agent)
    monkeypatch.undo()
    with CheckpointManager(tmp_path / "checkpoints", read_only=True) as manager:
        saved = manager.latest_step()
    assert saved == (6 if when == "after" else 3)
    updates = [row["update"] for row in read_metrics(tmp_path)]
    assert [u for u in updates if u <= saved] == list(range(3, saved + 1, 3))
    train_toy(tmp_path, agent, resume=True)
    assert [row["update"] for row in read_metrics(tmp_path)] == [3, 6, 9, 12]


def test_torn_metrics_lines_are_skipped_and_reported(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    """A garbage line and a torn last line (a kill mid-write) in metrics.jsonl: resume drops
    them with a warning and continues; the report's reader skips them likewise."""
    from experiments.train import training_metrics

    agent = make_toy_agent(num_updates=12, updates_per_chunk=3)
    train_toy(tmp_path, agent, stop_after=6)
    path = tmp_path / "metrics.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + "\x00\xff garbage\n" + "".join(lines[1:]) + '{"point": 0, "upd')
    warnings: list[str] = []
    assert training_metrics(tmp_path, 0, 6, warn=warnings.append)["update"] == 6
    assert len(warnings) == 1 and "skipped 2 line(s)" in warnings[0] and "line 2, 4" in warnings[0]
    capsys.readouterr()
    train_toy(tmp_path, agent, resume=True)
    assert "skipped 2 line(s)" in capsys.readouterr().out
    assert [row["update"] for row in read_metrics(tmp_path)] == [3, 6, 9, 12]


def damage(step_dir: Path, how: str) -> Path:
    """Truncate the largest array file of a checkpoint, or flip bytes in its middle."""
    target = max((p for p in (step_dir / "state").rglob("*") if p.is_file()),
                 key=lambda p: p.stat().st_size)
    data = target.read_bytes()
    if how == "truncate":
        target.write_bytes(data[: len(data) // 2])
    else:
        middle = len(data) // 2
        target.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 16])
                           + data[middle + 16:])
    return target


@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_damaged_latest_checkpoint_falls_back_to_the_newest_intact_one(
        tmp_path: Path, capsys: pytest.CaptureFixture, how: str) -> None:
    """A truncated array file (orbax raised a bare Exception: a 160-line traceback) or flipped
    bytes (loaded silently) in the latest checkpoint: its checksums name the damage; "latest"
    falls back to the newest intact checkpoint with a warning, its number is one line, and a
    resume continues from the intact one, bit-exactly."""
    agent = make_toy_agent(num_updates=12, updates_per_chunk=3)
    straight = train_toy(tmp_path / "straight", agent)
    run_dir = tmp_path / "run"
    first = train_toy(run_dir, agent, stop_after=9)
    damage(run_dir / "checkpoints" / "9", how)
    like = first.state
    warnings: list[str] = []
    with CheckpointManager(run_dir / "checkpoints", read_only=True, warn=warnings.append) as m:
        assert m.damage(6) is None and "state/" in (m.damage(9) or "")
        _, meta = m.restore(like)
        assert meta["update"] == 6
        assert len(warnings) == 1 and "checkpoint 9" in warnings[0] and "damaged" in warnings[0]
        assert "using checkpoint 6" in warnings[0]
        with pytest.raises(CheckpointError, match="checkpoint 9 .* is damaged") as err:
            m.restore(like, 9)
        assert "\n" not in str(err.value) and len(str(err.value)) < 400
    capsys.readouterr()
    second = train_toy(run_dir, agent, resume=True)
    assert "checkpoint 9" in capsys.readouterr().err
    assert (run_dir / "checkpoints.damaged" / "9").is_dir()  # moved aside, not deleted
    assert second.updates_done == 12
    for a, b in zip(jax.tree.leaves(straight.state.params), jax.tree.leaves(second.state.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert [row["update"] for row in read_metrics(run_dir)] == [3, 6, 9, 12]


def test_no_intact_checkpoint_is_one_line(tmp_path: Path) -> None:
    agent = make_toy_agent(num_updates=6, updates_per_chunk=3)
    result = train_toy(tmp_path, agent)
    for step in (3, 6):
        damage(tmp_path / "checkpoints" / str(step), "truncate")
    with CheckpointManager(tmp_path / "checkpoints", read_only=True) as manager:
        with pytest.raises(CheckpointError, match="no intact checkpoint") as err:
            manager.restore(result.state)
    assert "\n" not in str(err.value)


def test_nan_guard_never_names_a_damaged_checkpoint_last_good(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checkpoint 27 is damaged on disk after its write; the run then diverges at update 28:
    the last good checkpoint named is 24, the newest that passes its checksums."""
    save = CheckpointManager.save

    def save_then_damage(self: CheckpointManager, step: int, *args: Any, **kwargs: Any) -> None:
        save(self, step, *args, **kwargs)
        if step == 27:
            damage(self.step_dir(step), "flip")

    monkeypatch.setattr(CheckpointManager, "save", save_then_damage)
    agent = make_toy_agent(num_updates=30, updates_per_chunk=3)
    hparams = ToyHParams(learning_rate=jnp.asarray([3.0], jnp.float32))  # diverges at 28
    with pytest.raises(TrainingError, match="at update 28") as err:
        train_toy(tmp_path, agent, hparams=hparams, every=3)
    assert "last good checkpoint: update 24 " in str(err.value)


KILL_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from pathlib import Path
    from test_checkpoint import make_toy_agent, train_toy
    agent = make_toy_agent(num_updates=16, updates_per_chunk=2)
    train_toy(Path({run_dir!r}), agent, every=2, resume={resume})
""")


@pytest.mark.slow
def test_sigkill_during_training_then_resume(tmp_path: Path) -> None:
    agent = make_toy_agent(num_updates=16, updates_per_chunk=2)
    straight = train_toy(tmp_path / "straight", agent, every=2)
    run_dir = tmp_path / "killed"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    script = KILL_SCRIPT.format(tests=str(Path(__file__).parent), run_dir=str(run_dir),
                                resume=False)
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    ckpts = run_dir / "checkpoints"
    deadline = time.time() + 60
    while time.time() < deadline:
        steps = [p for p in ckpts.glob("*") if p.name.isdigit()] if ckpts.is_dir() else []
        if len(steps) >= 2 or proc.poll() is not None:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    resumed = subprocess.run([sys.executable, "-c", KILL_SCRIPT.format(
        tests=str(Path(__file__).parent), run_dir=str(run_dir), resume=True)], env=env)
    assert resumed.returncode == 0
    with CheckpointManager(ckpts, read_only=True) as manager:
        assert manager.latest_step() == 16
        state, meta = manager.restore(straight.state)
    assert meta["update"] == 16
    for a, b in zip(jax.tree.leaves(straight.state.params), jax.tree.leaves(state.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
