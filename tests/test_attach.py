"""`rltui attach`: the full dashboard of a headless run in another process (a real `rltui train`
subprocess), its history from metrics.jsonl and every control key over the control socket; `q`
leaves the run going, `Q` stops it after a y/n; a choice among several live runs; bad input."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from test_app import _enabled, screen_text
from test_background import LONG_RUN, alive, rltui, wait_for
from test_control_process import connect, events, rltui_process, the_run_dir

from rltui.app import RlTuiApp
from rltui.control import RemoteEngine
from rltui.events import CheckpointSaved, EvalResult, RunState, StateChanged
from rltui.screens.choose import ConfirmScreen, LiveRunsScreen
from rltui.screens.dashboard import DashboardScreen

pytestmark = pytest.mark.timeout(300)


async def until(pilot, predicate, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met in {timeout} s")
        await pilot.pause(0.05)


def logged_states(run_dir: Path) -> list[RunState]:
    return [e.state for e in events(run_dir) if isinstance(e, StateChanged)]


@pytest.mark.asyncio
async def test_every_key_of_an_attached_dashboard_reaches_the_run_and_q_leaves_it_going(tmp_path, write_preset_file):
    process = rltui_process("train", str(write_preset_file("mpo")), "--headless", "--saves", "runs", *LONG_RUN,
                            cwd=tmp_path)
    try:
        run_dir = the_run_dir(tmp_path / "runs")
        connect(run_dir).close()
        remote = RemoteEngine(run_dir, poll_s=0.1)
        app = RlTuiApp(remote=remote, refresh_hz=10)
        async with app.run_test(size=(100, 30)) as pilot:
            await until(pilot, lambda: app.history.status().step > 0, what="the history from metrics.jsonl")
            screen = app.screen
            assert isinstance(screen, DashboardScreen) and screen.attached
            footer = screen_text(app).splitlines()[-1]
            assert "Detach" in footer and "Stop run" in footer and "Quit" not in footer
            assert app.history.status().info.run_dir == str(run_dir)

            await pilot.press("p")
            await until(pilot, lambda: remote.state is RunState.PAUSED, what="paused")
            await until(pilot, lambda: RunState.PAUSED in logged_states(run_dir), what="paused in the log")
            await until(pilot, lambda: _enabled(screen, "resume") is True, what="Resume in the footer")
            await pilot.press("c")
            await until(pilot, lambda: any(isinstance(e, CheckpointSaved) for e in events(run_dir)), what="checkpoint")
            await until(pilot, lambda: _enabled(screen, "toggle_eval") is True, what="Eval enabled")
            await pilot.press("e")
            await until(pilot, lambda: any(isinstance(e, EvalResult) for e in events(run_dir)), what="evaluation mode")
            await until(pilot, lambda: screen.run_state is RunState.EVALUATING, what="the dashboard seeing it")
            await pilot.press("e")
            await until(pilot, lambda: remote.state is RunState.PAUSED, what="evaluation mode off")
            await until(pilot, lambda: _enabled(screen, "resume") is True, what="the dashboard seeing it paused")
            await pilot.press("space")
            await until(pilot, lambda: remote.state is RunState.RUNNING, what="resumed")
            await until(pilot, lambda: logged_states(run_dir)[-1] is RunState.RUNNING, what="running in the log")
            step = remote.step
            await pilot.press("q")  # detach
            await until(pilot, lambda: not app.is_running, what="the app to leave")
        assert process.poll() is None and alive(process.pid)  # the run goes on
        wait_for(lambda: connect(run_dir).status()["step"] > step, what="training after the detach")
    finally:
        process.kill()
        process.wait()


@pytest.mark.asyncio
async def test_shift_q_stops_the_attached_run_after_a_yes(tmp_path, write_preset_file):
    process = rltui_process("train", str(write_preset_file("trpo")), "--headless", "--saves", "runs", *LONG_RUN,
                            cwd=tmp_path)
    try:
        run_dir = the_run_dir(tmp_path / "runs")
        connect(run_dir).close()
        app = RlTuiApp(remote=RemoteEngine(run_dir, poll_s=0.1), refresh_hz=10)
        async with app.run_test(size=(100, 30)) as pilot:
            await until(pilot, lambda: app.history.status().step > 0, what="the history")
            await pilot.press("Q")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
            await pilot.press("n")  # not after all
            await pilot.pause(0.3)
            assert process.poll() is None and not app.dashboard.stopping
            await pilot.press("Q")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question again")
            await pilot.press("y")
            await until(pilot, lambda: not app.is_running, timeout=60, what="the app to leave after the stop")
        assert process.wait(timeout=60) == 0
        assert logged_states(run_dir)[-1] is RunState.FINISHED
        assert isinstance(events(run_dir)[-2], CheckpointSaved)  # the final checkpoint, then FINISHED
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.asyncio
async def test_several_live_runs_offer_a_choice(tmp_path, write_preset_file):
    from rltui.runs import probe_all, table

    preset = str(write_preset_file("trpo"))
    processes = [rltui_process("train", preset, "--headless", "--saves", "runs", *LONG_RUN, cwd=tmp_path)
                 for _ in range(2)]
    try:
        wait_for(lambda: len([p for p in probe_all(tmp_path / "runs") if p.live]) == 2, what="two live runs")
        live = [p for p in probe_all(tmp_path / "runs") if p.live]
        app = RlTuiApp(live_runs=([p.status for p in live], table(live)), refresh_hz=10)
        async with app.run_test(size=(120, 30)) as pilot:
            assert isinstance(app.screen, LiveRunsScreen)
            await pilot.press("down", "enter")
            await until(pilot, lambda: isinstance(app.screen, DashboardScreen), what="the chosen run's dashboard")
            assert app.remote is not None and app.remote.run_dir == Path(live[1].status["run_dir"])
            await until(pilot, lambda: app.history.status().step > 0, what="its history")
            await pilot.press("q")
        assert all(p.poll() is None for p in processes)
    finally:
        for process in processes:
            process.kill()
            process.wait()


def test_attach_to_nothing_live_is_one_line_exit_2(tmp_path, write_preset_file):
    result = rltui("attach", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: no live runs under saves (start one with "
                                     "`rltui train PRESET --detach`)")
    assert rltui("train", str(write_preset_file("trpo")), "--headless", "--saves", "saves",
                 "--set", "train.total_steps=200", cwd=tmp_path).returncode == 0
    (run_dir,) = (tmp_path / "saves").iterdir()
    finished = rltui("attach", str(run_dir), cwd=tmp_path)
    assert finished.returncode == 2
    assert finished.stderr.strip() == (f"error: {run_dir}: not a live run (nothing answers on its control socket); "
                                       f"`rltui watch {run_dir}` shows a finished run")
    missing = rltui("attach", "nowhere", cwd=tmp_path)
    assert (missing.returncode, missing.stderr.strip()) == (2, "error: nowhere: not a directory (expected a run "
                                                                "directory)")


@pytest.mark.asyncio
async def test_a_run_that_is_killed_under_an_attached_dashboard_is_shown_failed_and_the_dashboard_stays(
        tmp_path, write_preset_file):
    process = rltui_process("train", str(write_preset_file("trpo")), "--headless", "--saves", "runs", *LONG_RUN,
                            cwd=tmp_path)
    try:
        run_dir = the_run_dir(tmp_path / "runs")
        connect(run_dir).close()
        remote = RemoteEngine(run_dir, poll_s=0.1)
        app = RlTuiApp(remote=remote, refresh_hz=10)
        async with app.run_test(size=(100, 30)) as pilot:
            await until(pilot, lambda: app.history.status().step > 0, what="the history")
            process.kill()
            process.wait()
            await until(pilot, lambda: remote.state is RunState.FAILED, what="the run seen gone")
            await until(pilot, lambda: app.screen.run_state is RunState.FAILED, what="the dashboard saying so")
            await pilot.pause(0.5)
            assert app.is_running and isinstance(app.screen, DashboardScreen)
            status = app.history.status()
            assert status.step > 0 and status.state is RunState.FAILED  # its history is still there
            assert status.message == (f"the run's process (pid {process.pid}) ended without a word: killed or "
                                      f"crashed; `rltui resume {run_dir}` goes on from its last checkpoint")
            await pilot.press("q")
            await until(pilot, lambda: not app.is_running, what="the app to leave")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
