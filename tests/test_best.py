"""checkpoints/best: the agent of the best scheduled evaluation, kept through pruning, crashes and
resumes, and evaluated by `rltui eval --best`. Real Pendulum runs (tiny networks, an evaluation
every 50 steps), their metrics.jsonl read back as the independent record of every evaluation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_preset

from rltui import cli
from rltui.checkpoint import (
    BEST_NAME,
    best_checkpoint,
    best_evaluation,
    checkpoints_dir,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    recover_checkpoints,
    save_best_checkpoint,
)
from rltui.engine import Engine
from rltui.evaluation import evaluate_checkpoint
from rltui.events import BestCheckpointSaved, EvalResult, Event
from rltui.rundir import create_run_dir
from rltui.runlog import LOG_NAME, read_events

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parents[1]
# MPO seed 1: its evaluations improve, fall back and improve again in 300 steps; seed 2: the first
# session's best (step 300) beats every evaluation of the resumed session up to 600; seed 3: the
# best of 300 steps is an early one.
FREQUENT_EVALS = {"eval": {"interval": 50, "episodes": 1}, "checkpoint": {"interval": 100, "keep": 1}}


def _preset(seed: int, total_steps: int, **sections: dict):
    return tiny_preset("mpo", {"train": {"total_steps": total_steps, "seed": seed}, **FREQUENT_EVALS, **sections})


def _run(preset, run_dir: Path | None = None, saves: Path | None = None) -> Path:
    """Train `preset` to its end: a new run under `saves`, or a resume of `run_dir`."""
    engine = Engine(preset, run_dir, resume=True) if run_dir else Engine(preset, create_run_dir(preset, saves))
    engine.run()
    return engine.run_dir


def _events(run_dir: Path) -> list[Event]:
    return read_events(run_dir / LOG_NAME)[0]


def _records(evals: list[EvalResult]) -> list[tuple[int, float]]:
    """(step, return) of each evaluation that beat every earlier one."""
    records: list[tuple[int, float]] = []
    for e in evals:
        if not records or e.return_mean > records[-1][1]:
            records.append((e.step, e.return_mean))
    return records


def test_best_is_the_checkpoint_of_the_highest_evaluation(tmp_path):
    run_dir = _run(_preset(seed=1, total_steps=300), saves=tmp_path)
    events = _events(run_dir)
    evals = [e for e in events if isinstance(e, EvalResult)]
    assert [e.step for e in evals] == [50, 100, 150, 200, 250, 300]
    records = _records(evals)
    assert 1 < len(records) < len(evals)  # replaced by better ones, kept against worse ones
    best_step, best_return = records[-1]
    assert best_return == max(e.return_mean for e in evals)

    best = best_checkpoint(run_dir)
    assert best == checkpoints_dir(run_dir) / BEST_NAME
    assert load_checkpoint(best).step == best_step
    assert best_evaluation(best) == {"return_mean": best_return, "return_std": 0.0, "episodes": 1, "step": best_step}
    saved = [e for e in events if isinstance(e, BestCheckpointSaved)]
    assert [(e.step, e.return_mean) for e in saved] == records
    assert all(e.path == os.path.abspath(best) for e in saved)

    # Pruning (keep = 1) left one step checkpoint, and best is none of them.
    assert [step for step, _ in list_checkpoints(run_dir)] == [300]
    assert latest_checkpoint(run_dir).name == "step-300"
    # The saved agent is the one evaluated: the same episode gives the same return again.
    report = evaluate_checkpoint(best, episodes=1, deterministic=True, seed=None)
    assert report["step"] == best_step and report["return_mean"] == pytest.approx(best_return, rel=1e-5)


def test_a_resumed_run_keeps_a_better_best(tmp_path):
    run_dir = _run(_preset(seed=2, total_steps=300), saves=tmp_path)
    first = [e for e in _events(run_dir) if isinstance(e, EvalResult)]
    best_before = load_checkpoint(best_checkpoint(run_dir))
    _run(_preset(seed=2, total_steps=600), run_dir=run_dir)
    events = _events(run_dir)
    evals = [e for e in events if isinstance(e, EvalResult)]
    later = evals[len(first):]
    assert [e.step for e in later] == [350, 400, 450, 500, 550, 600]
    session_best = max(e.return_mean for e in first)
    assert max(e.return_mean for e in later) < session_best, "the setup needs a resumed session that does worse"

    best = best_checkpoint(run_dir)
    assert best_evaluation(best)["return_mean"] == session_best
    assert load_checkpoint(best).step == best_before.step == _records(evals)[-1][0]
    assert [e.step for e in events if isinstance(e, BestCheckpointSaved)] == [s for s, _ in _records(first)]


def test_a_resumed_run_replaces_best_only_with_a_better_one(tmp_path):
    run_dir = _run(_preset(seed=1, total_steps=200), saves=tmp_path)
    _run(_preset(seed=1, total_steps=400), run_dir=run_dir)
    events = _events(run_dir)
    records = _records([e for e in events if isinstance(e, EvalResult)])
    assert records[-1][0] > 200  # the resumed session did better
    assert [(e.step, e.return_mean) for e in events if isinstance(e, BestCheckpointSaved)] == records
    assert load_checkpoint(best_checkpoint(run_dir)).step == records[-1][0]


def test_no_scheduled_evaluations_no_best(tmp_path):
    run_dir = _run(_preset(seed=1, total_steps=100, eval={"interval": 0}), saves=tmp_path)
    assert best_checkpoint(run_dir) is None
    assert not any(isinstance(e, BestCheckpointSaved) for e in _events(run_dir))


# ------------------------------------------------------------------------------ on disk


def _save_best(run_dir: Path, step: int, return_mean: float) -> Path:
    return save_best_checkpoint(run_dir, step, {"w": step}, {"counters": {}}, 'name = "x"\n', None,
                                {"return_mean": return_mean, "return_std": 1.0, "episodes": 3})


def test_best_is_replaced_atomically_never_pruned_and_recovered_after_a_kill(tmp_path):
    _save_best(tmp_path, 10, -5.0)
    assert best_evaluation(best_checkpoint(tmp_path)) == {"return_mean": -5.0, "return_std": 1.0, "episodes": 3,
                                                          "step": 10}
    _save_best(tmp_path, 20, -4.0)
    root = checkpoints_dir(tmp_path)
    assert sorted(p.name for p in root.iterdir()) == ["best"]  # the old copy is gone
    assert load_checkpoint(root / "best").agent_state == {"w": 20}
    assert list_checkpoints(tmp_path) == [] and latest_checkpoint(tmp_path) is None
    prune_checkpoints(tmp_path, keep=1)
    assert (root / "best").is_dir()

    # A replacement killed between its two renames: the set-aside copy stands in, and is renamed back.
    os.rename(root / "best", root / "best.old-999999")
    (root / "best.tmp-999999").mkdir()  # the new copy, half written
    assert best_checkpoint(tmp_path) == root / "best.old-999999"
    recover_checkpoints(tmp_path)
    assert sorted(p.name for p in root.iterdir()) == ["best"]
    assert best_evaluation(root / "best")["step"] == 20

    # A killed first save leaves only a temp directory: no best, and the next owner removes it.
    (root / "best.tmp-999999").mkdir()
    os.rename(root / "best", tmp_path / "elsewhere")
    assert best_checkpoint(tmp_path) is None
    recover_checkpoints(tmp_path)
    assert list(root.iterdir()) == []


def test_a_best_with_an_unreadable_meta_is_replaced_with_a_warning(tmp_path):
    run_dir = _run(_preset(seed=1, total_steps=100), saves=tmp_path)
    meta = best_checkpoint(run_dir) / "meta.json"
    meta.write_text("{not json")
    _run(_preset(seed=1, total_steps=150), run_dir=run_dir)
    events = _events(run_dir)
    warnings = [e.message for e in events if e.kind == "warning"]
    assert any("the best checkpoint cannot be used" in w and "meta.json" in w for w in warnings)
    assert [e.step for e in events if isinstance(e, BestCheckpointSaved)][-1] == 150
    assert load_checkpoint(best_checkpoint(run_dir)).step == 150


# ------------------------------------------------------------------------------ rltui eval --best


def test_eval_best_in_a_real_process(tmp_path):
    run_dir = _run(_preset(seed=3, total_steps=300), saves=tmp_path)  # best at step 150
    best = best_evaluation(best_checkpoint(run_dir))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "rltui", "eval", str(run_dir), "--best", "--json", "--episodes", "1"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["step"] == best["step"] != 300
    assert report["return_mean"] == pytest.approx(best["return_mean"], rel=1e-5)


def test_eval_best_text_names_the_best_checkpoint(tmp_path, capsys):
    run_dir = _run(_preset(seed=1, total_steps=100), saves=tmp_path)
    assert cli.main(["eval", str(run_dir), "--best", "--episodes", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{best_checkpoint(run_dir)} (step {best_evaluation(best_checkpoint(run_dir))['step']}):")


@pytest.mark.parametrize("case, message", [
    ("no best", "{run}: no best checkpoint yet (checkpoints/best is saved after the run's first scheduled "
                "evaluation; none with [eval] interval = 0)"),
    ("a checkpoint", "{run}/checkpoints/step-100: a checkpoint directory (--best takes the run directory "
                     "holding checkpoints/)"),
    ("no checkpoints", "{tmp}: no checkpoints/ (expected a run directory made by `rltui train`)"),
    ("a file", "{run}/preset.toml: not a directory (--best takes a run directory)"),
    ("missing", "{tmp}/nowhere: no such file or directory"),
])
def test_eval_best_bad_cases_exit_2_with_one_line(tmp_path, capsys, case, message):
    run_dir = _run(_preset(seed=1, total_steps=100, eval={"interval": 0}), saves=tmp_path / "runs")
    path = {"no best": run_dir, "a checkpoint": run_dir / "checkpoints" / "step-100", "no checkpoints": tmp_path,
            "a file": run_dir / "preset.toml", "missing": tmp_path / "nowhere"}[case]
    assert cli.main(["eval", str(path), "--best"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {message.format(run=run_dir, tmp=tmp_path)}\n"
