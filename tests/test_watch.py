"""Watch mode: following a metrics.jsonl, and the read-only dashboard on top of it."""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from fake_engine import scripted_events, write_metrics_jsonl

from rltui.app import RlTuiApp, run_watch
from rltui.events import RunStarted, RunState, StateChanged, UpdateMetrics, WarningRaised
from rltui.history import MAX_SERIES, TRAIN_RETURN, MetricsHistory, clean_text
from rltui.runlog import FollowUpdate, MetricsFollower, read_events
from rltui.screens.dashboard import DashboardScreen


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
    assert capsys.readouterr().err == f"error: {tmp_path / 'nope'}: no such directory (expected a run directory)\n"


async def _wait_for(pilot, predicate, timeout: float = 30.0) -> None:
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
        await pilot.press("question_mark")
        rows = dict((text, keys) for keys, text in app.screen.rows)
        assert rows["save a checkpoint now (not in watch mode)"] == "c" and rows["this help"] == "?"
        await pilot.press("escape")
        await pilot.press("q")
        await _wait_for(pilot, lambda: not app.is_running)


# ---- a log that is damaged, replaced or removed while it is followed -----------------------------

BAD_LINES = [
    b'{"event": "episode", "step": "abc", "time": 1.0, "episode_return": -1.0, "episode_length": 200}',
    b'{"event": "update", "step": 150, "time": 1.0, "updates": 3, "metrics": [1, 2]}',
    (b'{"event": "eval", "step": 150, "time": 1.0, "return_mean": 1.0, "return_std": 0.0, "length_mean": 1.0, '
     b'"episodes": 1, "returns": 5}'),
    b"\x00\x01garbage\x7f",
    b"\xff\xfe\xfa not utf-8",
    b"[" * 100_000,
    b'{"event": "episode", "step": 150, "time": 1.0, "episode_return": -1.0, "episode_length": ' + b"9" * 5000 + b"}",
]


def _line(event) -> bytes:
    return (json.dumps(event.to_json()) + "\n").encode()


def _write(path: Path, events, extra: bytes = b"") -> None:
    path.write_bytes(b"".join(_line(e) for e in events) + extra)


def test_follower_started_mid_file_reads_on_and_still_notices_a_rewrite(tmp_path):
    path = tmp_path / "metrics.jsonl"
    events = scripted_events("mpo", steps=600)
    _write(path, events[:6])
    first, offset = read_events(path)
    assert first == events[:6] and offset == path.stat().st_size
    with path.open("ab") as f:
        f.write(b"".join(_line(e) for e in events[6:9]) + b'{"event": "upd')
    follower = MetricsFollower(path, start=offset)
    assert follower.read().events == events[6:9]
    assert follower.complete_offset == path.stat().st_size - len(b'{"event": "upd')
    _write(path, scripted_events("trpo", steps=2000))  # rewritten in place, longer: its start differs
    update = follower.read()
    assert update.reset and update.events[0].algo == "trpo"


def test_follower_skips_bad_lines_with_one_warning_and_reads_on(tmp_path):
    path = tmp_path / "metrics.jsonl"
    events = scripted_events("mpo", steps=600)
    _write(path, events[:5])
    follower = MetricsFollower(path)
    assert len(follower.read().events) == 5
    with path.open("ab") as f:
        f.write(b"\n".join(BAD_LINES) + b"\n")
        f.write(b'{"event": "gradient_norms", "step": 1}\n{"event": "gradient_norms", "step": 2}\n')
        f.write(b'{"event": "update", "step": 160, "time": 2.0, "updates": 4, "metrics": {"loss/q": null}}\n')
        f.write(b'{"event": "eval", "step": 160, "time": 2.0, "return_mean": null, "return_std": null, '
                b'"length_mean": 200, "episodes": 1, "returns": [null]}\n')
        f.write(b"".join(_line(e) for e in events[5:]))
    update = follower.read()
    assert not update.reset
    assert [e.kind for e in update.events[:2]] == ["update", "eval"]
    assert math.isnan(update.events[0].metrics["loss/q"]) and math.isnan(update.events[1].return_mean)
    assert update.events[2:] == events[5:]
    assert update.warnings == [
        (f"metrics.jsonl: skipped {len(BAD_LINES)} malformed lines (first line 6: episode event: 'step' must be "
         "an integer in [0, 9223372036854775807], got 'abc')"),
        "metrics.jsonl: skipped 2 events of unknown kind 'gradient_norms' (written by a newer rltui?)",
    ]
    assert follower.bad_lines == len(BAD_LINES) + 2 and follower.caught_up


def test_follower_drops_an_overlong_line_without_holding_it(tmp_path):
    path = tmp_path / "metrics.jsonl"
    events = scripted_events("trpo", steps=400)
    _write(path, events[:3], extra=b"x" * 5000)  # a line without end, longer than the limit
    follower = MetricsFollower(path, chunk_bytes=1024, max_line_bytes=2000)
    got, warnings = [], []
    for _ in range(10):
        update = follower.read()
        got += update.events
        warnings += update.warnings
        assert len(follower._partial) <= 2000
    assert got == events[:3] and warnings == []
    with path.open("ab") as f:
        f.write(b"y" * 3000 + b"\n" + b"".join(_line(e) for e in events[3:]))
    while not follower.caught_up or not warnings:
        update = follower.read()
        got += update.events
        warnings += update.warnings
    assert got == events
    assert warnings == ["metrics.jsonl: skipped 1 malformed line (line 4: longer than 2,000 bytes)"]


def test_follower_reads_a_valid_10_mb_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    events = scripted_events("mpo", steps=200)
    big = WarningRaised(100, message="m" * (10 << 20), time=1.0)
    _write(path, [events[0], big, *events[1:]])
    follower = MetricsFollower(path)
    got = []
    while not follower.caught_up:
        got += follower.read().events
    assert got == [events[0], big, *events[1:]]


def test_follower_reloads_a_truncated_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    events = scripted_events("mpo", steps=600)
    _write(path, events)
    follower = MetricsFollower(path)
    follower.read()
    with path.open("r+b") as f:  # same file, cut short: the writer started over
        f.truncate(len(_line(events[0])) + len(_line(events[1])))
    update = follower.read()
    assert update.reset and update.events == events[:2]
    assert update.warnings[0].startswith("metrics.jsonl shrank from ") and update.warnings[0].endswith("; reloading")


def test_follower_reloads_a_file_rewritten_in_place_even_if_longer(tmp_path):
    path = tmp_path / "metrics.jsonl"
    first, second = scripted_events("mpo", steps=400), scripted_events("trpo", steps=1000)
    _write(path, first)
    follower = MetricsFollower(path)
    follower.read()
    inode = path.stat().st_ino
    _write(path, second)  # opened with "w": same inode, longer content
    assert path.stat().st_ino == inode
    update = follower.read()
    assert update.reset and update.events == second
    assert update.warnings == ["metrics.jsonl was rewritten in place; reloading"]


@pytest.mark.parametrize("steps", [200, 1000])  # the new file is shorter / longer than what was read
def test_follower_reloads_a_file_renamed_over_it(tmp_path, steps):
    path = tmp_path / "metrics.jsonl"
    first, second = scripted_events("mpo", steps=600), scripted_events("trpo", steps=steps)
    _write(path, first)
    follower = MetricsFollower(path)
    assert follower.read().events == first
    _write(tmp_path / "other.jsonl", second)
    os.replace(tmp_path / "other.jsonl", path)
    update = follower.read()
    assert update.reset and update.events == second
    assert update.warnings == ["metrics.jsonl was replaced by another file; reloading"]
    assert follower.read() == FollowUpdate()  # and it goes on quietly


def test_follower_survives_deletion_of_the_file_and_of_the_run_dir(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    path = run_dir / "metrics.jsonl"
    events = scripted_events("mpo", steps=600)
    _write(path, events[:4])
    follower = MetricsFollower(path)
    assert follower.read().events == events[:4]
    with path.open("ab") as f:
        f.write(_line(events[4]))
    path.unlink()  # the last line was written just before: it is still read from the open file
    update = follower.read()
    assert update.events == [events[4]] and not update.reset
    assert update.warnings == ["metrics.jsonl was deleted; following the open file until a new one appears"]
    assert follower.read() == FollowUpdate()  # warned once
    _write(path, events[:2])
    update = follower.read()
    assert update.reset and update.events == events[:2]
    assert update.warnings == ["metrics.jsonl appeared again (a new file); reloading"]

    shutil.rmtree(run_dir)
    update = follower.read()
    assert update.events == []
    assert update.warnings == [f"the run directory {run_dir} was deleted; following the open file until a new one appears"]
    assert follower.read() == FollowUpdate()
    run_dir.mkdir()
    _write(path, events[:3])
    update = follower.read()
    assert update.reset and update.events == events[:3]


def test_follower_never_opens_a_fifo_and_never_raises(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    os.mkfifo(path)  # opening it for reading would block until a writer comes
    follower = MetricsFollower(path)
    assert follower.read().warnings == [f"{path} is not a regular file; not reading it"]
    assert follower.caught_up and follower._fd is None
    path.unlink()
    path.mkdir()
    assert follower.read() == FollowUpdate()  # the same problem: said once
    path.rmdir()
    events = scripted_events("mpo", steps=200)
    _write(path, events)

    def failing_pread(*args):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "pread", failing_pread)
    assert follower.read().warnings == ["metrics.jsonl: read failed (input/output error); retrying"]
    assert follower.read() == FollowUpdate()  # said once
    monkeypatch.undo()
    assert follower.read().events == events


def test_follower_retries_a_file_it_may_not_read(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    events = scripted_events("mpo", steps=200)
    _write(path, events)
    real_open = os.open

    def denied(file, *args, **kwargs):
        if Path(file) == path:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)
    follower = MetricsFollower(path)
    assert follower.read().warnings == [f"{path}: cannot be read (permission denied); retrying"]
    assert follower.read() == FollowUpdate()
    monkeypatch.undo()
    assert follower.read().events == events


def _log_texts(app) -> list[str]:
    return [entry.text for entry in app.history.log_since(0)]


def _shown_log(screen) -> str:
    from rltui.widgets.event_log import EventLog

    return "\n".join(screen.query_one(EventLog).shown_texts())


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_watch_app_follows_on_through_bad_lines_nulls_and_huge_lines(tmp_path):
    from rltui.widgets.metrics_table import MetricsTable

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    events = scripted_events("mpo", steps=2000)
    half = len(events) // 2
    _write(run_dir / "metrics.jsonl", events[:half])
    app = RlTuiApp(watch_dir=run_dir, refresh_hz=20.0)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await _wait_for(pilot, lambda: app.history.status().step == events[half - 1].step)
        with (run_dir / "metrics.jsonl").open("ab") as f:
            f.write(b"\n".join(BAD_LINES) + b"\n")
            f.write(b'{"event": "gradient_norms", "step": 1, "time": 1.0}\n')
            f.write(_line(WarningRaised(1000, message="m" * (10 << 20), time=events[half].time)))
            f.write(_line(WarningRaised(1000, message="\x1b[2J\x07bell \ud800", time=events[half].time)))
            f.write(b"".join(_line(e) for e in events[half:]))
            f.write(b'{"event": "update", "step": 2000, "time": 1700000004.0, "updates": 500, '
                    b'"metrics": {"loss/q": null, "perf/steps_per_s": null}}\n')
            f.write(b'{"event": "eval", "step": 2000, "time": 1700000004.0, "return_mean": null, '
                    b'"return_std": null, "length_mean": 200, "episodes": 1, "returns": [null]}\n')
            f.write(b'{"event": "state", "step": 2000, "time": 1700000004.0, "state": "finished"}\n')
        await _wait_for(pilot, lambda: app.history.status().state is RunState.FINISHED)
        texts = _log_texts(app)
        assert f"metrics.jsonl: skipped {len(BAD_LINES)} malformed lines (first line {half + 1}: episode event: " \
               "'step' must be an integer in [0, 9223372036854775807], got 'abc')" in texts
        assert "metrics.jsonl: skipped 1 event of unknown kind 'gradient_norms' (written by a newer rltui?)" in texts
        assert "m" * 999 + "…" in texts  # the 10 MB message, cut for the log
        assert "\ufffd[2J\ufffdbell \ufffd" in texts  # no escape sequence or lone surrogate reaches the terminal
        assert "eval (deterministic, 1 ep): nan ± nan" in texts
        assert app.history.status().step == 2000
        # NaN is a gap in the charts and a dash in the table, not a crash
        evals = app.history.series("eval/return_mean")
        assert len(evals) == 1 and np.isfinite(evals.y).all()
        _, latest = app.history.latest()
        assert math.isnan(latest["loss/q"])
        await _wait_for(pilot, lambda: screen.query_one(MetricsTable)._values.get("loss/q") == "–")
        await _wait_for(pilot, lambda: "skipped 1 event of unknown kind" in _shown_log(screen))
        await pilot.press("s", "1", "l", "1")  # the view still answers
        assert screen.maximised is None
        await pilot.press("q")
        await _wait_for(pilot, lambda: not app.is_running)


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_watch_app_reloads_a_replaced_truncated_or_deleted_log(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    log = run_dir / "metrics.jsonl"
    mpo, trpo = scripted_events("mpo", steps=3000), scripted_events("trpo", steps=1000)
    _write(log, mpo)
    app = RlTuiApp(watch_dir=run_dir, refresh_hz=20.0)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await _wait_for(pilot, lambda: app.history.status().step == 3000)
        await _wait_for(pilot, lambda: screen.charts()[2].spec is not None)
        assert screen.charts()[2].spec.title == "Duals"

        _write(tmp_path / "other.jsonl", trpo)  # another (shorter) run's log renamed over it
        os.replace(tmp_path / "other.jsonl", log)
        await _wait_for(pilot, lambda: "metrics.jsonl was replaced by another file; reloading" in _log_texts(app))
        await _wait_for(pilot, lambda: app.history.status().step == 1000)
        assert app.history.status().info.algo == "trpo"
        assert len(app.history.series(TRAIN_RETURN)) == 5  # the new run's episodes only, nothing doubled
        await _wait_for(pilot, lambda: screen.charts()[2].spec.title == "Line search")

        with log.open("r+b") as f:  # truncated to its first two lines (step 0)
            f.truncate(len(_line(trpo[0])) + len(_line(trpo[1])))
        await _wait_for(pilot, lambda: any(t.startswith("metrics.jsonl shrank") for t in _log_texts(app)))
        await _wait_for(pilot, lambda: app.history.status().step == 0)
        assert app.history.series(TRAIN_RETURN) is None or len(app.history.series(TRAIN_RETURN)) == 0
        with log.open("ab") as f:
            f.write(b"".join(_line(e) for e in trpo[2:]))
        await _wait_for(pilot, lambda: app.history.status().step == 1000)

        shutil.rmtree(run_dir)
        await _wait_for(pilot, lambda: any("was deleted" in t for t in _log_texts(app)))
        assert app.history.status().step == 1000  # what was read stays on screen
        run_dir.mkdir()
        _write(log, mpo[:20])
        await _wait_for(pilot, lambda: "metrics.jsonl appeared again (a new file); reloading" in _log_texts(app))
        await _wait_for(pilot, lambda: app.history.status().step == mpo[19].step)
        assert app.history.status().info.algo == "mpo"
        await _wait_for(pilot, lambda: screen.charts()[2].spec.title == "Duals")
        assert "run directory" in _shown_log(screen) and "appeared again" in _shown_log(screen)
        await pilot.press("q")
        await _wait_for(pilot, lambda: not app.is_running)


def test_history_reset_keeps_the_log_and_never_reuses_a_version():
    history = MetricsHistory(capacity=8)
    events = scripted_events("mpo", steps=1000)
    history.extend(events)
    before = {name: history.series_version(name) for name in history.series_names()}
    status_version, (latest_version, _) = history.status().version, history.latest()
    log_count = len(history.log_since(0))
    history.reset()
    history.note("warning", "metrics.jsonl was replaced by another file; reloading")
    assert history.series_names() == [] and history.status().step == 0 and history.status().info is None
    assert all(history.series_version(name) > version for name, version in before.items())
    assert history.status().version > status_version and history.latest()[0] > latest_version
    assert [e.text for e in history.log_since(0)][-1] == "metrics.jsonl was replaced by another file; reloading"
    assert len(history.log_since(0)) == log_count + 1
    history.extend(events[:3])  # reloading: versions go on from where they were
    assert all(history.series_version(name) > before[name] for name in history.series_names())


def test_history_bounds_what_a_hostile_log_can_make_it_hold():
    history = MetricsHistory(capacity=8)
    history(UpdateMetrics(1, updates=1, metrics={f"m{i}": 1.0 for i in range(MAX_SERIES + 100)},
                           time=math.nan))
    assert len(history.series_names()) == MAX_SERIES and len(history.latest()[1]) == MAX_SERIES
    assert [e.text for e in history.log_since(0)] == [
        f"more than {MAX_SERIES} metric names: new ones are not shown (first: m{MAX_SERIES})"]
    history(RunStarted(0, name="n" * 10_000 + "\x1b[31m", algo="mpo", env_id="e", device="cpu", total_steps=10,
                       run_dir="d", time=math.nan))
    status = history.status()
    assert len(status.info.name) == 200 and status.start_time is None and status.last_time is None
    assert clean_text("a\x1b[2Jb\nc\ud800\u00e9") == "a\ufffd[2Jb\nc\ufffd\u00e9"


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_watch_app_follows_a_real_engine_run_and_a_line_cut_by_a_kill(tmp_path):
    from conftest import tiny_preset

    from rltui.engine import Engine
    from rltui.rundir import create_run_dir

    preset = tiny_preset("trpo", {"train": {"total_steps": 100}, "eval": {"interval": 0}})
    engine = Engine(preset, create_run_dir(preset, tmp_path))
    engine.run()
    log = engine.run_dir / "metrics.jsonl"
    with log.open("ab") as f:  # a writer killed mid-line, then garbage from a broken disk
        f.write(b'{"event": "episode", "step": 1')
    app = RlTuiApp(watch_dir=engine.run_dir, refresh_hz=20.0)
    async with app.run_test(size=(100, 30)) as pilot:
        await _wait_for(pilot, lambda: app.history.status().state is RunState.FINISHED)
        assert app.history.status().step == 100 and app.history.status().info.algo == "trpo"
        await _wait_for(pilot, lambda: app.screen.charts()[2].spec is not None)
        assert app.screen.charts()[2].spec.title == "Line search"
        with log.open("ab") as f:
            f.write(b"\n\x00\x00\x00\x00\n")
            f.write(_line(WarningRaised(100, message="still followed", time=1.0)))
        await _wait_for(pilot, lambda: "still followed" in _log_texts(app))
        assert any(t.startswith("metrics.jsonl: skipped 2 malformed lines") for t in _log_texts(app))
        await pilot.press("q")
        await _wait_for(pilot, lambda: not app.is_running)
