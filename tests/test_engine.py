"""Engine on tiny Pendulum runs: events, controls, failures, resume, and the run log."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import tiny_preset

from rltui import checkpoint as ckpt
from rltui.commands import Checkpoint, Evaluate, Pause, Reply, Resume, SetEvalMode, Stop
from rltui.engine import Engine
from rltui.events import (
    CheckpointSaved,
    EpisodeFinished,
    ErrorRaised,
    EvalResult,
    Event,
    RunStarted,
    RunState,
    StateChanged,
    UpdateMetrics,
    WarningRaised,
)
from rltui.resume import ResumeError
from rltui.rundir import create_run_dir
from rltui.runlog import RunLogWriter, read_events

pytestmark = pytest.mark.timeout(120)


class Recorder:
    """Collects events; `wait_for` blocks until a predicate holds on a new event."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._cond = threading.Condition()

    def __call__(self, event: Event) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def of(self, kind: type[Event]) -> list:
        with self._cond:
            return [e for e in self.events if isinstance(e, kind)]

    def wait_for(self, predicate: Callable[[Event], bool], timeout: float, after: int = 0) -> Event:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events[after:]:
                    if predicate(event):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no matching event within {timeout}s; last: {self.events[-3:]}")
                self._cond.wait(remaining)

    def mark(self) -> int:
        with self._cond:
            return len(self.events)


def state_is(state: RunState) -> Callable[[Event], bool]:
    return lambda e: isinstance(e, StateChanged) and e.state == state


def new_engine(tmp_path: Path, algo: str, **overrides: dict) -> tuple[Engine, Recorder]:
    preset = tiny_preset(algo, overrides)
    engine = Engine(preset, create_run_dir(preset, tmp_path))
    recorder = Recorder()
    engine.subscribe(recorder)
    return engine, recorder


@pytest.mark.parametrize(
    "algo, overrides",
    [
        ("mpo", {}),
        ("mpo", {"mpo": {"use_retrace": True, "retrace_steps": 4}, "env": {"num_envs": 2}}),
        ("trpo", {}),
    ],
    ids=["mpo", "mpo-retrace-2envs", "trpo"],
)
def test_run_emits_events_and_writes_the_log(tmp_path, algo, overrides):
    engine, rec = new_engine(tmp_path, algo, **overrides)
    engine.run()
    assert engine.state == RunState.FINISHED and engine.step == 400
    kinds = [type(e) for e in rec.events]
    assert kinds[0] is RunStarted and kinds[1] is StateChanged and kinds[-1] is StateChanged
    assert rec.events[-1].state == RunState.FINISHED
    episodes = rec.of(EpisodeFinished)
    assert len(episodes) == 2 and all(e.episode_length == 200 and e.episode_return < 0 for e in episodes)
    updates = rec.of(UpdateMetrics)
    assert sum(u.updates for u in updates) == engine.counters.updates > 0
    assert {"perf/steps_per_s", "perf/updates_per_s", "train/skipped_updates", "env/steps"} <= set(updates[-1].metrics)
    assert ("loss/q" if algo == "mpo" else "policy/kl") in set().union(*(u.metrics for u in updates))
    evals = rec.of(EvalResult)
    assert [e.step for e in evals] == [200, 400] and evals[0].deterministic
    saved = rec.of(CheckpointSaved)
    assert [Path(e.path).name for e in saved] == ["step-400"]
    assert (Path(saved[0].path) / "replay.npz").exists() == (algo == "mpo")
    logged, _ = read_events(engine.run_dir / "metrics.jsonl")
    assert [e.to_json() for e in logged] == [json.loads(json.dumps(e.to_json())) for e in rec.events]
    assert engine.agent.num_updates == engine.counters.updates


def test_controls_are_answered_within_a_second(tmp_path):
    engine, rec = new_engine(tmp_path, "mpo", train={"total_steps": 1_000_000}, eval={"interval": 0})
    thread = engine.start()
    rec.wait_for(lambda e: isinstance(e, UpdateMetrics) and e.updates > 0, timeout=30)

    reply = engine.submit(Pause()).result(timeout=1.0)
    assert reply.ok and reply.message.startswith("paused") and engine.state is RunState.PAUSED
    assert rec.of(StateChanged)[-1].state is RunState.PAUSED  # the event is out when the reply comes
    frozen = engine.step
    time.sleep(0.3)
    assert engine.step == frozen

    mark = rec.mark()
    reply = engine.submit(Checkpoint()).result(timeout=1.0)
    saved = rec.wait_for(lambda e: isinstance(e, CheckpointSaved), timeout=0.1, after=mark)
    assert reply.ok and reply.data == {"path": saved.path, "step": frozen} and saved.path.endswith(f"step-{frozen}")

    mark = rec.mark()
    reply = engine.submit(Evaluate(1)).result(timeout=5.0)  # evaluations run while paused
    result = rec.wait_for(lambda e: isinstance(e, EvalResult), timeout=0.1, after=mark)
    assert result.episodes == 1 and result.step == frozen and result.source == "requested"
    assert reply.data == {"return_mean": result.return_mean, "return_std": 0.0, "episodes": 1, "step": frozen}

    mark = rec.mark()
    assert engine.submit(SetEvalMode(True)).result(timeout=1.0).ok
    assert engine.state is RunState.EVALUATING
    rec.wait_for(lambda e: isinstance(e, EvalResult), timeout=5.0, after=mark)
    rec.wait_for(lambda e: isinstance(e, EvalResult), timeout=5.0, after=rec.mark())
    streamed = [e for e in rec.events[mark:] if isinstance(e, EvalResult)]
    assert len(streamed) >= 2 and len({e.returns for e in streamed}) == len(streamed)  # fresh seeds each
    assert {e.source for e in streamed} == {"manual"} and all(e.episodes == 1 for e in streamed)
    assert engine.step == frozen

    assert engine.submit(SetEvalMode(False)).result(timeout=1.0).ok
    assert engine.state is RunState.PAUSED  # back to where it was
    assert engine.submit(Resume()).result(timeout=1.0).ok and engine.state is RunState.RUNNING
    rec.wait_for(lambda e: isinstance(e, EpisodeFinished), timeout=30, after=rec.mark())
    assert engine.step > frozen

    assert engine.submit(SetEvalMode(True)).result(timeout=1.0).ok  # from RUNNING straight into evaluation mode
    assert engine.state is RunState.EVALUATING
    mark = rec.mark()
    started = time.monotonic()
    reply = engine.submit(Stop()).result(timeout=5.0)
    assert reply.ok and reply.data == {"state": "finished", "step": engine.step}
    thread.join(5)
    assert not thread.is_alive() and engine.state is RunState.FINISHED
    stop_saved = [e for e in rec.events[mark:] if isinstance(e, CheckpointSaved)]
    assert len(stop_saved) == 1 and time.monotonic() - started < 5
    assert ckpt.load_checkpoint(Path(stop_saved[0].path)).step == engine.step
    late = engine.submit(Pause()).result(timeout=0.1)  # after the end: answered at once
    assert late == Reply(False, "the run has ended")


def test_pause_while_an_evaluation_runs_lets_it_finish(tmp_path):
    engine, rec = new_engine(tmp_path, "trpo", train={"total_steps": 1_000_000}, eval={"interval": 0})
    thread = engine.start()
    rec.wait_for(lambda e: isinstance(e, EpisodeFinished), timeout=30)
    evaluation = engine.submit(Evaluate(3))
    assert engine.submit(Pause()).result(timeout=1.0).ok
    reply = evaluation.result(timeout=10.0)
    assert reply.ok and reply.data["episodes"] == 3 and engine.state is RunState.PAUSED
    engine.submit(Stop(final_checkpoint=False)).result(timeout=5.0)
    thread.join(5)
    assert not rec.of(CheckpointSaved)


def test_commands_left_when_a_run_ends_are_answered(tmp_path):
    engine, rec = new_engine(tmp_path, "trpo", train={"total_steps": 200})
    pending = [engine.submit(Checkpoint()), engine.submit(Evaluate(1))]
    engine.run()  # both run in the first service, before the end
    assert all(f.result(timeout=0).ok for f in pending)
    never_run, _ = new_engine(tmp_path, "trpo")
    waiting = never_run.submit(Pause())
    never_run.close()
    assert waiting.result(timeout=0) == Reply(False, "the run has ended")


def test_stop_without_final_checkpoint(tmp_path):
    engine, rec = new_engine(tmp_path, "trpo", train={"total_steps": 1_000_000})
    thread = engine.start()
    rec.wait_for(lambda e: isinstance(e, EpisodeFinished), timeout=30)
    engine.submit(Stop(final_checkpoint=False))
    thread.join(5)
    assert engine.state == RunState.FINISHED and not rec.of(CheckpointSaved)


def test_exception_in_the_loop_becomes_failed_with_its_message(tmp_path):
    engine, rec = new_engine(tmp_path, "mpo")

    def broken_update(batch):
        raise RuntimeError("boom in update")

    engine.agent.update = broken_update
    engine.run()
    errors = rec.of(ErrorRaised)
    assert len(errors) == 1 and errors[0].message == "RuntimeError: boom in update"
    assert "broken_update" in errors[0].traceback
    assert rec.events[-1] == StateChanged(step=engine.step, state=RunState.FAILED, message=errors[0].message,
                                         time=rec.events[-1].time)
    assert engine.state == RunState.FAILED


def test_raising_subscriber_and_skipped_updates_are_reported_not_fatal(tmp_path):
    engine, rec = new_engine(tmp_path, "mpo", train={"total_steps": 300})
    calls = []

    def bad_subscriber(event):
        calls.append(event)
        raise ValueError("subscriber bug")

    engine.subscribe(bad_subscriber)
    real_update = engine.agent.update
    engine.agent.update = lambda batch: None if engine.counters.skipped_updates < 3 else real_update(batch)
    engine.run()
    assert engine.state == RunState.FINISHED
    assert len(calls) > 5  # still called, errors ignored after the first
    warnings = [e.message for e in rec.of(WarningRaised)]
    assert sum("subscriber" in m for m in warnings) == 1
    assert [m for m in warnings if m.startswith("skipped")] == [
        "skipped 1 update(s) with non-finite values so far", "skipped 2 update(s) with non-finite values so far"]
    assert engine.counters.skipped_updates == 3
    assert rec.of(UpdateMetrics)[-1].metrics["train/skipped_updates"] == 3.0


def _tensors_equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_tensors_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_tensors_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.parametrize("algo", ["mpo", "trpo"])
def test_resume_continues_counters_optimisers_duals_and_log(tmp_path, algo):
    engine, _ = new_engine(tmp_path, algo, train={"total_steps": 300})
    engine.run()
    saved_agent = engine.agent.state_dict()
    counters = engine.counters
    normalizer = engine.obs_normalizer.state_dict()
    lines_before = len((engine.run_dir / "metrics.jsonl").read_text().splitlines())

    raised = tiny_preset(algo, {"train": {"total_steps": 500}})
    resumed = Engine(raised, engine.run_dir, resume=True)
    assert resumed.step == 300 and resumed.counters == counters
    assert _tensors_equal(resumed.agent.state_dict(), saved_agent)  # nets, targets, optimisers, duals
    assert resumed.obs_normalizer.state_dict() == normalizer
    if algo == "mpo":
        assert len(resumed.loop.replay) == len(engine.loop.replay)
    rec = Recorder()
    resumed.subscribe(rec)
    resumed.run()
    assert resumed.state == RunState.FINISHED and resumed.step == 500
    assert rec.events[0].resumed and rec.events[0].step == 300
    assert resumed.agent.num_updates > engine.agent.num_updates
    assert not rec.of(WarningRaised)
    lines = (engine.run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == lines_before + len(rec.events)
    assert [json.loads(line)["event"] for line in lines].count("run_started") == 2
    assert "total_steps = 500" in (engine.run_dir / "preset.toml").read_text()


def test_resume_without_saved_replay_warns_and_refills(tmp_path):
    engine, _ = new_engine(tmp_path, "mpo", train={"total_steps": 200}, checkpoint={"save_replay": False})
    engine.run()
    updates = engine.counters.updates
    resumed = Engine(tiny_preset("mpo", {"train": {"total_steps": 350}, "checkpoint": {"save_replay": False}}),
                     engine.run_dir, resume=True)
    rec = Recorder()
    resumed.subscribe(rec)
    resumed.run()
    assert any("holds no replay buffer" in e.message for e in rec.of(WarningRaised))
    # 100 refill steps without updates, then steps 300..350 at 0.5 updates each plus the saved 0.5 credit
    assert resumed.counters.warmup_until == 300
    assert resumed.counters.updates - updates == 26


def test_resume_errors_are_checkpoint_errors(tmp_path, make_preset):
    run_dir = create_run_dir(make_preset("mpo"), tmp_path)
    with pytest.raises(ckpt.CheckpointError, match="no checkpoints to resume from"):
        Engine(make_preset("mpo"), run_dir, resume=True)
    engine, _ = new_engine(tmp_path, "mpo", train={"total_steps": 150})
    engine.run()
    with pytest.raises(ResumeError, match=r"\[network\] policy_layer_sizes cannot change when resuming"):
        Engine(make_preset("mpo", {"network": {"policy_layer_sizes": [8]}}), engine.run_dir, resume=True)


def test_run_log_reader_tolerates_a_partial_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    writer = RunLogWriter(path)
    writer(EpisodeFinished(step=1, episode_return=-5.0, episode_length=3))
    writer(UpdateMetrics(step=2, updates=1, metrics={"loss/q": float("nan"), "x": 1.0}))
    writer.close()
    with open(path, "a") as handle:
        handle.write('{"event": "episode", "step": 3, "episode_re')
    events, offset = read_events(path)
    assert [e.step for e in events] == [1, 2] and events[1].metrics["x"] == 1.0
    assert math.isnan(events[1].metrics["loss/q"])  # written as null, read back as NaN (a float)
    assert offset < path.stat().st_size
    writer = RunLogWriter(path)  # appending after a cut line starts a new line
    writer(EpisodeFinished(step=4, episode_return=-1.0, episode_length=1))
    writer.close()
    more, _ = read_events(path, offset)
    assert [e.step for e in more] == [4]
    for line in path.read_text().splitlines()[:2]:
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))


def test_frequent_evaluations_do_not_starve_update_metrics(monkeypatch):
    """Restarting the rate baseline after each evaluation/checkpoint must not reset the emission clock."""
    from rltui.engine import shell as engine_module

    monkeypatch.setattr(engine_module, "METRICS_INTERVAL_S", 0.05)
    window = engine_module._MetricsWindow(step=0)
    window.add({"loss/q": 1.0})
    time.sleep(0.06)
    window.restart(step=10)  # what the loop does after an evaluation
    assert window.due()
    event = window.take(step=20, skipped_total=0)
    assert event.metrics["loss/q"] == 1.0 and not window.due()
