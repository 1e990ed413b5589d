"""Watch mode: following a metrics.jsonl, and the read-only dashboard on top of it."""

from __future__ import annotations

import json
import time

import pytest

from fake_engine import scripted_events, write_metrics_jsonl
from rltui.app import RlTuiApp, run_watch
from rltui.events import RunState, StateChanged
from rltui.history import TRAIN_RETURN
from rltui.screens.dashboard import DashboardScreen
from rltui.watch import MetricsFollower


def test_follower_reads_growing_file_and_waits_for_partial_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    follower = MetricsFollower(path)
    assert follower.poll() == []  # no file yet
    events = scripted_events("mpo", steps=1000)
    write_metrics_jsonl(path, events[:10], partial_tail=True)
    assert [e.step for e in follower.poll()] == [e.step for e in events[:10]]
    assert not follower.caught_up or follower.poll() == []
    with path.open("a") as f:  # the writer finishes the half-written line, then adds one more
        f.write(', "time": 5.0, "updates": 3, "metrics": {"loss/q": 1.0}}\n')
        f.write(json.dumps(events[10].to_json()) + "\n")
        f.write("not json\n")
    new = follower.poll()
    assert [e.kind for e in new] == ["update", events[10].kind]
    assert new[0].step == 99 and new[0].metrics == {"loss/q": 1.0}
    assert follower.bad_lines == 1 and follower.caught_up


def test_follower_starts_over_when_the_file_is_rewritten(tmp_path):
    path = tmp_path / "metrics.jsonl"
    events = scripted_events("trpo", steps=1000)
    write_metrics_jsonl(path, events)
    follower = MetricsFollower(path)
    assert len(follower.poll()) == len(events)
    write_metrics_jsonl(path, events[:3])
    assert len(follower.poll()) == 3


def test_follower_reads_big_files_in_chunks(tmp_path):
    path = tmp_path / "metrics.jsonl"
    events = scripted_events("mpo", steps=6000)
    write_metrics_jsonl(path, events)
    follower = MetricsFollower(path, chunk_bytes=4096)
    got = []
    while not follower.caught_up:
        got.extend(follower.poll())
    assert len(got) == len(events)


def test_run_watch_rejects_a_missing_directory(tmp_path, capsys):
    assert run_watch(tmp_path / "nope") == 2
    assert "not a directory" in capsys.readouterr().err


async def _wait_for(pilot, predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await pilot.pause(0.05)


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_watch_mode_follows_a_recorded_run_read_only(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    events = scripted_events("mpo", steps=4000)
    write_metrics_jsonl(run_dir / "metrics.jsonl", events[: len(events) // 2], partial_tail=False)
    app = RlTuiApp(watch_dir=run_dir, refresh_hz=20.0)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        assert isinstance(screen, DashboardScreen) and screen.read_only
        await _wait_for(pilot, lambda: app.history.status().step > 0)
        half = app.history.status().step
        await _wait_for(pilot, lambda: screen.charts()[1].spec is not None)  # configured from RunStarted
        assert screen.charts()[1].spec.title == "KL"
        with (run_dir / "metrics.jsonl").open("a") as f:  # the run goes on elsewhere
            for event in events[len(events) // 2 :]:
                f.write(json.dumps(event.to_json()) + "\n")
            f.write(json.dumps(StateChanged(4000, state=RunState.FINISHED, time=events[-1].time).to_json()) + "\n")
        await _wait_for(pilot, lambda: app.history.status().state is RunState.FINISHED)
        assert app.history.status().step == 4000 > half
        assert len(app.history.series(TRAIN_RETURN)) == 20
        for action in ("pause", "checkpoint", "toggle_eval"):
            assert screen.check_action(action, ()) is None
        await pilot.press("p", "c", "e", "2", "s")  # control keys do nothing; view keys work
        assert screen.maximised == 2
        await pilot.press("q")
        await _wait_for(pilot, lambda: not app.is_running)
