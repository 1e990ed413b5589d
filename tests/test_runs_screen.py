"""The runs browser over runs recorded by the real engine (finished, a second seed, stopped, failed)
and a live one in a real `rltui train` process: the table as the summaries say, sorting (key and
header click), the filter, grouping with its mean ± std, marks and compare, Enter into a run's
dashboard (read-only, or attached to the live one) and back, a refresh that keeps the cursor on its
run; the picker's way in; `rltui runs` on an empty or a missing directory."""

from __future__ import annotations

import json
import shutil
import statistics
import time
from pathlib import Path

import pytest
from test_app import screen_text
from test_background import LONG_RUN, alive, rltui
from test_control_process import connect, rltui_process
from test_summaries import record, stop_after_first_eval

from rltui.app import RlTuiApp
from rltui.control import RemoteEngine
from rltui.events import RunState
from rltui.screens.choose import ConfirmScreen
from rltui.screens.compare import CompareScreen
from rltui.screens.info import InfoScreen, info_rows
from rltui.screens.picker import PickerScreen
from rltui.screens.runs import GROUP_PREFIX, ListedRunDashboard, RunsScreen, RunsTable, sparkline
from rltui.summaries import FAILED, FINISHED, LIVE, STOPPED, RunIndex, RunSummary

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """The runs index caches its summaries per user: here in the test's own folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def saves(tmp_path_factory) -> Path:
    saves = tmp_path_factory.mktemp("saves")
    record(saves, "trpo")
    record(saves, "trpo", {"train": {"seed": 5}})
    record(saves, "trpo", {"train": {"total_steps": 1_000_000}, "eval": {"interval": 100}},
           on_event=stop_after_first_eval)
    record(saves, "mpo", failing=True)
    return saves


def summaries(saves: Path) -> list[RunSummary]:
    return RunIndex([saves], use_cache=False).refresh()


async def until(pilot, predicate, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met in {timeout} s")
        await pilot.pause(0.05)


async def opened(pilot, app: RlTuiApp, count: int) -> RunsScreen:
    await until(pilot, lambda: isinstance(app.screen, RunsScreen) and len(app.screen.runs) == count,
                what=f"{count} runs listed")
    await pilot.pause()
    return app.screen


async def shows(pilot, app: RlTuiApp, text: str) -> None:
    """Wait until the terminal shows `text` (the views draw on their next refresh)."""
    await until(pilot, lambda: text in " ".join(screen_text(app).split()), what=f"{text!r} on screen")


def names(screen: RunsScreen) -> list[str]:
    return [row.runs[0].name if not row.key.startswith(GROUP_PREFIX) else row.key for row in screen.rows]


def cells(screen: RunsScreen, run: RunSummary) -> list[str]:
    table = screen.query_one(RunsTable)
    return [str(cell) for cell in table.get_row(str(run.run_dir))]


def test_sparkline_scales_each_run_to_its_own_range():
    assert sparkline([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]) == "▁▂▃▄▅▆▇█"
    assert sparkline([-100.0, float("nan"), -50.0, 0.0]) == "▁▅█"  # round(3.5) -> 4 of 0..7: ▅
    assert sparkline([3.0, 3.0]) == "▄▄" and sparkline([]) == ""
    assert sparkline(list(range(40)), width=4) == "▁▃▆█"  # the last 4: 36..39


@pytest.mark.asyncio
async def test_the_table_shows_each_run_as_its_summary_says(saves):
    expected = summaries(saves)
    assert sorted(s.state for s in expected) == sorted([FINISHED, FINISHED, STOPPED, FAILED])
    app = RlTuiApp(runs_roots=[saves])
    async with app.run_test(size=(140, 30)) as pilot:
        screen = await opened(pilot, app, 4)
        assert names(screen) == sorted(s.name for s in expected)  # by name at first
        for run in expected:
            row = cells(screen, run)
            assert row[1:5] == [run.name, run.algo, "Pendulum-v1", str(run.seed)]
            assert row[5] == run.state
            total = "1M" if run.total_steps == 1_000_000 else str(run.total_steps)  # (the stopped run's)
            assert row[6] == f"{run.step}/{total}"
            last = "–" if run.last_eval is None else f"{run.last_eval:.1f}"
            best = "–" if run.best_eval is None else f"{max(run.eval_curve.returns):.1f}"
            assert (row[7], row[8]) == (last, best)
            assert len(row[10]) == len(run.eval_curve.returns)  # one block per evaluation (a few here)
        await shows(pilot, app, f"runs under {saves} · 4 runs")
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running, what="the app to leave")


@pytest.mark.asyncio
async def test_sort_by_key_and_by_header_click_filter_and_grouping(saves):
    expected = {s.name: s for s in summaries(saves)}
    app = RlTuiApp(runs_roots=[saves])
    async with app.run_test(size=(160, 30)) as pilot:
        screen = await opened(pilot, app, 4)
        await pilot.press("s")  # name -> algo
        assert screen.sort_column == "algo"
        assert [expected[n].algo for n in names(screen)] == ["mpo", "trpo", "trpo", "trpo"]
        await shows(pilot, app, "algo ▲")
        await pilot.press("S")
        assert [expected[n].algo for n in names(screen)] == ["trpo", "trpo", "trpo", "mpo"]

        # A click on the "best eval" header sorts by it (highest last on the first click); the
        # failed MPO run has no evaluation: last either way.
        table = screen.query_one(RunsTable)
        x = sum(c.get_render_width(table) for c in table.ordered_columns[:8]) + 2
        await pilot.click(RunsTable, offset=(x, 0))
        assert screen.sort_column == "best" and not screen.descending
        bests = [expected[n].best_eval for n in names(screen)]
        assert bests[-1] is None and bests[:-1] == sorted(bests[:-1])
        await pilot.click(RunsTable, offset=(x, 0))
        assert screen.descending
        bests = [expected[n].best_eval for n in names(screen)]
        assert bests[-1] is None and bests[:-1] == sorted(bests[:-1], reverse=True)

        await pilot.press("slash", *"fail")
        await pilot.pause()
        assert [expected[n].state for n in names(screen)] == [FAILED]
        await shows(pilot, app, "filter “fail”: 1 shown")
        await pilot.press("enter")  # keeps the filter, back in the table
        assert isinstance(app.focused, RunsTable) and len(screen.rows) == 1
        await pilot.press("escape")
        assert len(screen.rows) == 4 and screen.filter_text == ""
        await pilot.press("slash", *"nothing-like-this")
        await pilot.pause()
        await shows(pilot, app, "no run matches the filter")
        await pilot.press("escape")

        await pilot.press("g")
        header = next(row for row in screen.rows if row.key == GROUP_PREFIX + "tiny-trpo")
        members = [r for r in expected.values() if r.preset == "tiny-trpo"]
        assert len(header.runs) == 3
        lasts = [r.last_eval for r in members]
        shown = str(screen.query_one(RunsTable).get_row(header.key)[7])
        assert shown == f"{statistics.mean(lasts):.1f} ± {statistics.stdev(lasts):.1f}"
        await shows(pilot, app, "tiny-trpo · 3 runs")
        await pilot.press("g")
        assert not any(row.key.startswith(GROUP_PREFIX) for row in screen.rows)


@pytest.mark.asyncio
async def test_marks_compare_and_the_group_under_the_cursor(saves):
    runs = sorted(summaries(saves), key=lambda s: s.name)
    app = RlTuiApp(runs_roots=[saves])
    async with app.run_test(size=(140, 30)) as pilot:
        screen = await opened(pilot, app, 4)
        await pilot.press("space", "down", "space")  # the first and the third run
        assert screen.marked == {str(runs[0].run_dir), str(runs[2].run_dir)}
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, CompareScreen), what="the compare view")
        compare = app.screen
        assert [r.run.run_dir for r in compare.runs] == [runs[0].run_dir, runs[2].run_dir]
        assert [r.run.group for r in compare.runs] == [runs[0].group, runs[2].group]
        await until(pilot, lambda: all(r.history.status().state.is_final for r in compare.runs), what="their logs")
        await pilot.press("q")
        await until(pilot, lambda: app.screen is screen, what="back to the list")
        assert screen.marked == {str(runs[0].run_dir), str(runs[2].run_dir)}  # kept

        screen.query_one(RunsTable).move_cursor(row=0)
        await pilot.press("space", "down", "space")  # unmark both
        assert not screen.marked
        seeds = [r for r in runs if r.preset == "tiny-trpo" and r.state == FINISHED]
        assert len(seeds) == 2 and seeds[0].group == seeds[1].group  # seeds 4 and 5 of the same settings
        screen.query_one(RunsTable).move_cursor(row=names(screen).index(seeds[0].name))
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, CompareScreen), what="the group's compare view")
        assert sorted(r.run.run_dir for r in app.screen.runs) == sorted(r.run_dir for r in seeds)
        await pilot.press("q")


@pytest.mark.asyncio
async def test_enter_opens_a_finished_run_read_only_and_q_comes_back_to_the_same_row(saves):
    runs = sorted(summaries(saves), key=lambda s: s.name)
    failed = next(r for r in runs if r.state == FAILED)
    app = RlTuiApp(runs_roots=[saves])
    async with app.run_test(size=(140, 36)) as pilot:
        screen = await opened(pilot, app, 4)
        table = screen.query_one(RunsTable)
        table.move_cursor(row=names(screen).index(failed.name))
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ListedRunDashboard), what="the run's dashboard")
        dashboard = app.screen
        assert dashboard.read_only
        await until(pilot, lambda: dashboard.history.status().state is RunState.FAILED, what="its history")
        assert dashboard.history.status().step == failed.step
        await shows(pilot, app, "boom in update")
        await pilot.press("q")
        await until(pilot, lambda: app.screen is screen, what="back to the list")
        assert dashboard.stop_following.is_set()
        assert screen.cursor_row().runs[0].name == failed.name
        await pilot.press("down", "enter")  # another one, and back with Esc
        await until(pilot, lambda: isinstance(app.screen, ListedRunDashboard), what="another dashboard")
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is screen, what="back again")


@pytest.mark.asyncio
async def test_i_on_a_copied_run_reads_the_copy_not_the_directory_its_log_names(tmp_path):
    original = record(tmp_path / "original", "trpo")
    copy = tmp_path / "copies" / "moved-run"
    shutil.copytree(original, copy)
    meta = json.loads((copy / "run.json").read_text())
    (copy / "run.json").write_text(json.dumps({**meta, "command": ["rltui", "train", "the-copy"]}))
    app = RlTuiApp(runs_roots=[tmp_path / "copies"])
    async with app.run_test(size=(140, 36)) as pilot:
        await opened(pilot, app, 1)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ListedRunDashboard), what="the run's dashboard")
        dashboard = app.screen
        await until(pilot, lambda: dashboard.history.status().info is not None, what="its history")
        assert dashboard.history.status().info.run_dir == str(original)  # what the copied log says
        await pilot.press("i")
        await until(pilot, lambda: isinstance(app.screen, InfoScreen), what="the information")
        rows = dict(info_rows(app.screen.facts))
        assert rows["run directory"] == str(copy) and rows["command"] == "rltui train the-copy"


@pytest.mark.asyncio
async def test_a_live_run_is_listed_live_attached_left_going_then_stopped_from_the_list(saves, tmp_path, write_preset_file):
    root = tmp_path / "runs"
    process = rltui_process("train", str(write_preset_file("trpo")), "--headless", "--saves", str(root),
                            "--set", "train.seed=9", *LONG_RUN, cwd=tmp_path)
    try:
        connect(next(iter(_wait_dir(root).iterdir()))).close()  # its socket answers, training
        app = RlTuiApp(runs_roots=[saves, root], refresh_hz=10)
        async with app.run_test(size=(140, 36)) as pilot:
            screen = await opened(pilot, app, 5)
            live = next(r for r in screen.runs if r.state == LIVE)
            assert live.pid == process.pid and live.seed == 9
            await shows(pilot, app, "● running")
            await shows(pilot, app, "(1 live)")
            screen.query_one(RunsTable).move_cursor(row=names(screen).index(live.name))
            step = live.step
            await until(pilot, lambda: next(r for r in screen.runs if r.state == LIVE).step > step,
                        what="the list following the live run")
            assert screen.cursor_row().runs[0].name == live.name  # the refresh kept the cursor on it
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, ListedRunDashboard), what="its dashboard")
            dashboard = app.screen
            assert isinstance(dashboard.control, RemoteEngine) and dashboard.attached
            await until(pilot, lambda: dashboard.history.status().step > 0, what="its history")
            footer = screen_text(app).splitlines()[-1]
            assert "Back" in footer and "Stop run" in footer
            await pilot.press("p")
            await until(pilot, lambda: dashboard.control.state is RunState.PAUSED, what="paused over the socket")
            await pilot.press("q")
            await until(pilot, lambda: app.screen is screen, what="back to the list")
            assert not dashboard.control.connected  # detached: its connection closed
            assert process.poll() is None and alive(process.pid)  # the run goes on

            await pilot.press("enter", "Q")  # again, and stop it this time
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
            await pilot.press("y")
            assert process.wait(timeout=60) == 0
            await until(pilot, lambda: isinstance(app.screen, ListedRunDashboard)
                        and app.screen.history.status().state is RunState.FINISHED, what="the run's end shown")
            await pilot.press("q")
            await until(pilot, lambda: next(r for r in screen.runs if r.seed == 9).state == STOPPED,
                        what="the list saying it stopped")
            await pilot.press("q")
    finally:
        process.kill()
        process.wait()


def _wait_dir(root: Path) -> Path:
    deadline = time.monotonic() + 60
    while not (root.is_dir() and any(root.iterdir())):
        assert time.monotonic() < deadline, "the live run's directory"
        time.sleep(0.1)
    return root


@pytest.mark.asyncio
async def test_a_new_run_appears_at_the_next_refresh_and_the_cursor_stays(saves, tmp_path):
    import shutil

    root = tmp_path / "saves"
    first, second = sorted(r.run_dir for r in summaries(saves))[:2]
    shutil.copytree(second, root / second.name)
    app = RlTuiApp(runs_roots=[root])
    async with app.run_test(size=(140, 30)) as pilot:
        screen = await opened(pilot, app, 1)
        shutil.copytree(first, root / first.name)  # sorts before the one under the cursor
        await pilot.press("r")
        await until(pilot, lambda: len(screen.runs) == 2, what="the new run")
        assert names(screen) == [first.name, second.name]
        assert screen.cursor_row().runs[0].name == second.name


@pytest.mark.asyncio
async def test_an_empty_directory_says_so_and_the_picker_opens_the_browser(tmp_path):
    app = RlTuiApp(saves_root=tmp_path / "empty")
    (tmp_path / "empty").mkdir()
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, PickerScreen)
        await pilot.press("ctrl+r")
        await until(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.loaded, what="the browser")
        await shows(pilot, app, f"no runs under {tmp_path / 'empty'} yet: start one with `rltui train PRESET`")
        assert app.screen.check_action("compare", ()) is None and app.screen.check_action("mark", ()) is None
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, PickerScreen), what="back to the picker")


def test_rltui_runs_refuses_a_missing_directory_or_a_file(tmp_path):
    (tmp_path / "file").write_text("")
    result = rltui("runs", "nowhere", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (
        2, "error: nowhere: no such directory (expected a directory of runs, e.g. ./saves)\n")
    result = rltui("runs", "file", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (
        2, "error: file: not a directory (expected a directory of runs, e.g. ./saves)\n")
    result = rltui("runs", cwd=tmp_path)  # no ./saves
    assert (result.returncode, result.stderr) == (
        2, "error: saves: no such directory (expected a directory of runs, e.g. ./saves)\n")
