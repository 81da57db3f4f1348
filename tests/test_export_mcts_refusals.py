"""`jaxtrade export` refuses the two mcts runs its bundle cannot trade, in one line with exit
code 2, before anything is restored, fitted or written (experiments/export.py
`check_exportable`, jaxtrade/export.py `check_ensemble_members`):

  agent.search=stochastic        the numpy runner (jaxtrade/live/mcts.py) runs the gumbel
                                 search only; the line says a gumbel run exports
  an ensemble with an mcts member  the runner's member vote (jaxtrade/live/ensemble.py) runs
                                 actor and Q networks; an mcts member's policy is a search
                                 from the book the runner holds, which it does not run; the
                                 line names the members that export

Each run is trained for real through `jaxtrade train` at the smallest sizes (a few updates, no
report, no validation pass), so the refusal is read from a real run's config.yaml. A gumbel
mcts run's export and its parity with the backtest: tests/test_export_mcts.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from live_helpers import tiny_frame

import agents
from jaxtrade.cli import main
from jaxtrade.errors import ExportError
from jaxtrade.export import check_ensemble_members

TINY = ["data=csv", "logger=none", "env.num_envs=2", "env.window_bars=8",
        "env.episode_bars=64", "train.report=false", "train.eval_every_updates=1000"]
MCTS_TINY = {"num_simulations": "2", "learning_starts": "8", "batch_size": "8",
             "buffer_size": "128", "n_step": "2"}


@pytest.fixture(scope="module")
def bars(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("refusals") / "bars.csv"
    tiny_frame(400).write_csv(path)
    return path


def refusal_line(capsys: pytest.CaptureFixture[str], run_dir: Path, out: Path) -> str:
    """Export `run_dir` to `out`: exit code 2, no bundle, and the one line it printed."""
    capsys.readouterr()
    assert main(["export", f"run_dir={run_dir}", f"out={out}"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines()
             if line.startswith("jaxtrade:")]
    assert len(lines) == 1, lines
    assert not out.exists()
    return lines[0]


def test_export_refuses_a_stochastic_search_run(tmp_path, bars, capsys) -> None:
    run_dir = tmp_path / "run"
    assert main(["train", "agent=mcts", "agent.search=stochastic", f"data.path={bars}", *TINY,
                 "agent.updates_per_chunk=4", "train.total_steps=16",
                 "network.hidden_sizes=[8]", f"run_dir={run_dir}",
                 *[f"agent.{k}={v}" for k, v in MCTS_TINY.items()]]) == 0
    line = refusal_line(capsys, run_dir, tmp_path / "bundle")
    assert line.startswith("jaxtrade: ExportError: agent.search='stochastic' cannot be "
                           "exported"), line
    assert "gumbel search only" in line and "agent.search=gumbel exports" in line


def test_export_refuses_an_ensemble_with_an_mcts_member(tmp_path, bars, capsys) -> None:
    run_dir = tmp_path / "run"
    assert main(["train", "agent=ensemble", "agent.members=[ppo,mcts]", f"data.path={bars}",
                 *TINY, "agent.updates_per_chunk=1", "train.total_steps=64",
                 "agent.ppo.rollout_len=16", "agent.ppo.network.hidden_sizes=[8]",
                 "agent.mcts.network.hidden_sizes=[8]", f"run_dir={run_dir}",
                 *[f"agent.mcts.{k}={v}" for k, v in MCTS_TINY.items()]]) == 0
    line = refusal_line(capsys, run_dir, tmp_path / "bundle")
    assert line.startswith("jaxtrade: ExportError: ensemble member 'mcts' (mcts) cannot be "
                           "exported"), line
    assert "(ppo, cvar_ppo, dqn, qrdqn, sac" in line and "without mcts exports" in line


def test_ensemble_member_check_passes_exportable_members_and_names_the_first_other() -> None:
    """The check write_bundle runs too: actor and Q-network members pass; a stochastic mcts
    member (no bundle of its own) is named like a gumbel one."""
    check_ensemble_members(agents.config_from_dict(
        {"name": "ensemble", "members": ["ppo", "qrdqn", "sac"]}))
    config = agents.config_from_dict({"name": "ensemble", "members": ["ppo", "mcts"],
                                      "mcts": {"search": "stochastic"}})
    with pytest.raises(ExportError, match=r"member 'mcts' \(no bundle\) cannot be exported"):
        check_ensemble_members(config)
