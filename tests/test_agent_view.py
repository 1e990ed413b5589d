"""See the agent: frames drawn as half blocks (against the pixels they come from), the engine
rendering evaluation mode at the environment's speed while watched and never failing a run when it
cannot render, and the `v` screen driven through the real app on a real engine."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
from conftest import tiny_preset
from rich.color import Color

from rltui.app import RlTuiApp
from rltui.commands import SetEvalMode, Stop
from rltui.engine import Engine
from rltui.events import EvalResult, RunState, WarningRaised
from rltui.rundir import create_run_dir
from rltui.screens.agent_view import AgentViewScreen
from rltui.screens.dashboard import DashboardScreen
from rltui.widgets.frame_view import RAMP, UPPER_HALF, FrameView, fit, sample, to_lines

pytestmark = pytest.mark.timeout(120)


def test_a_frame_is_fitted_keeping_its_aspect():
    assert fit((500, 500), 40, 20) == (40, 40)  # 40 columns x 20 rows = 40 x 40 pixels
    assert fit((500, 500), 100, 10) == (20, 20)  # limited by the height
    assert fit((480, 640), 64, 100) == (64, 48)
    assert fit((500, 500), 0, 10) == (0, 0)


def test_nearest_neighbour_sampling_takes_the_pixel_centres():
    frame = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    assert np.array_equal(sample(frame, 6, 4), frame)
    assert np.array_equal(sample(frame, 3, 2), frame[[1, 3]][:, [1, 3, 5]])


def test_half_blocks_carry_the_upper_pixel_on_the_lower_one():
    pixels = np.array([[[255, 0, 0], [0, 0, 0]],
                       [[0, 0, 255], [255, 255, 255]]], dtype=np.uint8)  # 2 rows x 2 columns
    (line,) = to_lines(pixels, color=True)
    assert [s.text for s in line] == [UPPER_HALF, UPPER_HALF]
    assert (line[0].style.color, line[0].style.bgcolor) == (Color.from_rgb(255, 0, 0), Color.from_rgb(0, 0, 255))
    assert (line[1].style.color, line[1].style.bgcolor) == (Color.from_rgb(0, 0, 0), Color.from_rgb(255, 255, 255))
    (plain,) = to_lines(pixels, color=False)  # NO_COLOR: a ramp by the mean luminance of the two pixels
    assert [s.text for s in plain] == [RAMP[2] + RAMP[4]]


def _engine(tmp_path) -> Engine:
    preset = tiny_preset("trpo", {"train": {"total_steps": 10_000_000}, "eval": {"interval": 0}})
    return Engine(preset, create_run_dir(preset, tmp_path))


def _wait(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def test_a_watched_evaluation_mode_renders_at_the_environments_speed(tmp_path):
    engine = _engine(tmp_path)
    results: list[EvalResult] = []
    engine.subscribe(lambda e: results.append(e) if isinstance(e, EvalResult) else None)
    thread = engine.start()
    try:
        engine.frames.watching = True
        assert engine.submit(SetEvalMode(True)).result(10).ok
        _wait(lambda: engine.frames.latest() is not None)
        first, frame = engine.frames.latest()
        assert frame.shape == (500, 500, 3) and frame.dtype == np.uint8
        time.sleep(1.0)
        rate = engine.frames.latest()[0] - first
        assert 15 <= rate <= 45, rate  # Pendulum renders at 30 fps (not the thousands unpaced): its natural speed
        assert not results  # a 200-step episode takes ~7 s when watched
        engine.frames.watching = False  # unwatched: the episode finishes at full speed, then the next ones
        _wait(lambda: len(results) >= 3, timeout=30)
        assert all(r.source == "manual" for r in results)
    finally:
        engine.submit(Stop(final_checkpoint=False))
        thread.join(30)


def test_a_run_that_cannot_render_says_so_once_and_evaluates_unseen(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pygame", None)  # classic-control rendering needs pygame
    engine = _engine(tmp_path)
    events = []
    engine.subscribe(events.append)
    thread = engine.start()
    try:
        engine.frames.watching = True
        assert engine.submit(SetEvalMode(True)).result(10).ok
        _wait(lambda: sum(isinstance(e, EvalResult) for e in events) >= 2)
        warnings = [e.message for e in events if isinstance(e, WarningRaised) and "live frames" in e.message]
        assert len(warnings) == 1 and warnings[0].startswith("no live frames: ")
        assert engine.frames.unavailable is not None and engine.frames.latest() is None
        assert engine.state is RunState.EVALUATING
    finally:
        engine.submit(Stop(final_checkpoint=False))
        thread.join(30)


@pytest.mark.asyncio
async def test_v_shows_the_agent_and_gives_evaluation_mode_back(tmp_path):
    engine = _engine(tmp_path)
    app = RlTuiApp(engine=engine, refresh_hz=10)
    async with app.run_test(size=(100, 40)) as pilot:
        async def until(predicate, timeout=20.0):
            deadline = time.monotonic() + timeout
            while not predicate():
                assert time.monotonic() < deadline, "condition not met in time"
                await pilot.pause(0.05)

        await until(lambda: isinstance(app.screen, DashboardScreen) and app.screen.run_state is RunState.RUNNING)
        dashboard = app.screen
        await pilot.press("v")
        await until(lambda: isinstance(app.screen, AgentViewScreen))
        await until(lambda: engine.state is RunState.EVALUATING and engine.frames.watching)
        view = app.screen.query_one(FrameView)
        await until(lambda: view._lines)  # a frame is drawn
        assert len(view._lines) == 38 and all(len(line) == 76 for line in view._lines)  # 76x76 px in 100x38 cells
        await pilot.press("escape")
        await until(lambda: app.screen is dashboard)
        assert not engine.frames.watching
        await until(lambda: engine.state is RunState.RUNNING)  # evaluation mode was off before: off again
        await pilot.press("q")
        await until(lambda: not app.is_running, timeout=60)
