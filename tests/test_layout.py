"""The dashboard for people: room for the charts at every terminal size, titles that keep every
series, what `s` and `l` do to a chart, series told apart without colour (NO_COLOR), the event log
(wrapping, floods, scrolling back) and the summary printed when the dashboard leaves.

Pilot tests against the deterministic fake engine; the chart maths is pinned against values
computed here independently; one real `rltui train` runs in a pseudo-terminal.
"""

from __future__ import annotations

import io
import itertools
import math
import os
import pty
import re
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fake_engine import T0, FakeEngine, scripted_events
from test_app import _ready, _wait_for
from textual.app import App

from rltui.app import RlTuiApp
from rltui.cli import HeadlessProgress
from rltui.commands import Stop
from rltui.events import EpisodeFinished, EvalResult, RunState, WarningRaised
from rltui.history import DownsampledSeries, MetricsHistory
from rltui.runlog import read_events
from rltui.screens.dashboard import WIDE_LAYOUT_COLUMNS, DashboardScreen
from rltui.widgets.event_log import MAX_LESSER, EventLog
from rltui.widgets.line_chart import MARKS, ChartSpec, LineChart, SeriesSpec, YScale, rasterize

pytestmark = pytest.mark.timeout(60)
REPO = Path(__file__).resolve().parents[1]

# The sizes of the issue, and the corners and edges of the range from 80x24 to 250x70.
SIZES = [(80, 24), (100, 30), (120, 36), (160, 48), (200, 50), (250, 70),
         (80, 70), (250, 24), (WIDE_LAYOUT_COLUMNS - 1, 40), (WIDE_LAYOUT_COLUMNS, 40), (81, 25), (159, 24)]
# Braille dot (row, column) in a cell -> its bit, from the Unicode braille patterns.
BRAILLE_DOTS = {(0, 0): 0x01, (1, 0): 0x02, (2, 0): 0x04, (3, 0): 0x40,
                (0, 1): 0x08, (1, 1): 0x10, (2, 1): 0x20, (3, 1): 0x80}


def _title(chart: LineChart) -> str:
    return chart.render_line(0).text


def _plot(chart: LineChart) -> list[str]:
    return [chart.render_line(y).text for y in range(1, chart.region.height)]


def _dots(raster, layer: str) -> np.ndarray:
    """The braille dots drawn in the cells of `layer`, as a (4 * rows, 2 * cols) mask."""
    rows, cols = len(raster.chars), len(raster.chars[0])
    mask = np.zeros((4 * rows, 2 * cols), dtype=bool)
    for r, (chars, layers) in enumerate(zip(raster.chars, raster.layers, strict=True)):
        for c, (char, cell_layer) in enumerate(zip(chars, layers, strict=True)):
            code = ord(char) - 0x2800
            if cell_layer != layer or not 0 <= code <= 0xFF:
                continue
            for (dy, dx), bit in BRAILLE_DOTS.items():
                mask[4 * r + dy, 2 * c + dx] = bool(code & bit)
    return mask


def _snap(xs, ys, capacity: int = 1024):
    series = DownsampledSeries(capacity)
    for x, y in zip(xs, ys, strict=True):
        series.add(float(x), float(y))
    return series.snapshot()


def _row(value: float, low: float, high: float, dot_rows: int) -> int:
    return int(np.rint((high - value) / (high - low) * (dot_rows - 1)))


# ---- 1. room for the charts ---------------------------------------------------------------------
@pytest.mark.asyncio
async def test_every_chart_keeps_at_least_its_80x24_room_and_every_series_at_every_size():
    engine = FakeEngine("mpo")
    app = RlTuiApp(engine=engine, clock=lambda: T0 + 20)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _ready(app, pilot, engine)
        # an evaluation-mode episode too: the Returns chart then has all three of its series
        app.history(EvalResult(6000, return_mean=-150.0, return_std=0.0, length_mean=200.0, episodes=1,
                               source="manual", time=T0 + 12))
        screen.pull()
        await pilot.pause()
        smallest = [chart.region.size for chart in screen.charts()]
        assert [(s.width, s.height) for s in smallest] == [(39, 7), (40, 7), (39, 7), (40, 7)]
        for width, height in SIZES:
            await pilot.resize_terminal(width, height)
            await pilot.pause()
            body, side = screen.query_one("#body").region, screen.query_one("#side").region
            for chart, least in zip(screen.charts(), smallest, strict=True):
                assert chart.region.width >= least.width and chart.region.height >= least.height, \
                    (width, height, chart.id, chart.region)
            if width >= WIDE_LAYOUT_COLUMNS:  # table and log on the right: a third of the width at most
                assert side.height == body.height and side.width <= body.width / 3, (width, height, side)
            else:  # below the charts: a third of the height at most
                assert side.width == body.width and side.height <= body.height / 3, (width, height, side)
            for chart in screen.charts():
                title = _title(chart)
                assert title.startswith(f"{chart.number} "), title
                for s in chart.spec.series:  # every series with data keeps its mark and its label
                    if chart.data.get(s.name) is not None:
                        assert f"{MARKS[s.role]}{s.label}" in title or f"{MARKS[s.role]}{s.short_label}" in title, \
                            (width, height, title, s)
                assert "ema" in title  # the smoothing in effect is always said


@pytest.mark.asyncio
async def test_titles_shorten_labels_values_and_the_name_before_any_series():
    spec = ChartSpec("Returns", (SeriesSpec("a", "train", short="tr"), SeriesSpec("b", "eval", "second", short="ev"),
                                 SeriesSpec("c", "manual", "third", short="man")))
    data = {"a": _snap([0, 1], [-1318.0, -1200.0]), "b": _snap([0, 1], [-1150.0, -900.0]),
            "c": _snap([1], [-150.0])}

    class Host(App[None]):
        def compose(self):
            yield LineChart(1, spec)

    async with Host().run_test(size=(80, 10)) as pilot:
        chart = pilot.app.query_one(LineChart)
        chart.update_data(data)
        chart.set_smoothing(0.9)
        seen = {}
        for width in (80, 50, 40, 31, 22):
            await pilot.resize_terminal(width, 10)
            seen[width] = _title(chart).rstrip()
    assert seen[80] == "1 Returns ━train -1200 ╍eval -900 ┉manual -150 [ema 0.9]"
    assert seen[50] == "1 Returns ━tr -1200 ╍ev -900 ┉man -150 [ema.9]"
    assert seen[40] == seen[31] == "1 Returns ━tr ╍ev ┉man [ema.9]"
    assert seen[22] == "1 ━tr ╍ev ┉man [ema.9]"  # the chart's name goes before a series does


# ---- `s`: the smoothing is seen at every width ------------------------------------------------------
@pytest.mark.asyncio
async def test_each_s_redraws_the_returns_chart_and_says_the_smoothing_at_80x24():
    engine = FakeEngine("mpo")
    app = RlTuiApp(engine=engine, clock=lambda: T0 + 20)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _ready(app, pilot, engine)
        returns = screen.charts()[0]
        drawn = {0.6: _plot(returns)}
        assert ".6]" in _title(returns)
        for weight in (0.9, 0.99, 0.0):
            await pilot.press("s")
            assert returns.smoothing == weight
            title = _title(returns)
            assert (f"{weight:g}".removeprefix("0") + "]" in title) if weight else "ema" not in title, title
            drawn[weight] = _plot(returns)
        assert len({tuple(lines) for lines in drawn.values()}) == 4  # every weight draws another line


def test_smoothing_is_an_ema_over_the_chart_columns():
    n = 40  # one point per dot column (20 cells of 2 dots)
    y = np.where(np.arange(n) % 2, 1.0, 0.0) + np.arange(n) / 10  # a noisy ramp
    spec = ChartSpec("t", (SeriesSpec("a", "a"),))
    raster = rasterize(spec, {"a": _snap(range(n), y)}, cols=20, rows=10, smoothing=0.9, log_y=False)
    smoothed, last = [], 0.0
    for i, value in enumerate(y):  # TensorBoard's debiased EMA, point by point
        last = 0.9 * last + 0.1 * value
        smoothed.append(last / (1 - 0.9 ** (i + 1)))
    rows = [_row(v, y.min(), y.max(), 40) for v in smoothed]
    dots = _dots(raster, "main")
    for column in range(n):  # the line joins each column's row to the one before
        previous = rows[max(column - 1, 0)]
        expected = set(range(min(previous, rows[column]), max(previous, rows[column]) + 1))
        assert set(np.flatnonzero(dots[:, column])) == expected, column


# ---- 5. log scale of values <= 0 ---------------------------------------------------------------
def test_log_scale_of_values_down_to_zero_and_below_is_a_symmetric_log():
    x = np.arange(40)
    y = np.linspace(-1500.0, 60.0, 40)  # ... -60, -20, 20, 60: the smallest magnitude is 20
    spec = ChartSpec("Returns", (SeriesSpec("a", "train"),))
    raster = rasterize(spec, {"a": _snap(x, y)}, cols=20, rows=10, smoothing=0.0, log_y=True)
    assert raster.scale == YScale("symlog", 10.0)  # linear within ±10, the decade of 20
    t = np.sign(y) * np.log10(1 + np.abs(y) / 10)
    dots = _dots(raster, "main")
    for column in range(40):
        assert dots[_row(t[column], t.min(), t.max(), 40), column], column
    assert raster.y_low == pytest.approx(-1500) and raster.y_high == pytest.approx(60)
    assert raster.value_at(9) == pytest.approx(-1500) and raster.value_at(0) == pytest.approx(60)
    middle = (t.min() + t.max()) / 2
    assert raster.value_at(4.5) == pytest.approx(math.copysign(10 * (10 ** abs(middle) - 1), middle))


@pytest.mark.asyncio
async def test_l_on_the_returns_chart_draws_a_symmetric_log_and_says_why():
    engine = FakeEngine("mpo")
    app = RlTuiApp(engine=engine, clock=lambda: T0 + 20)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _ready(app, pilot, engine)
        returns = screen.charts()[0]
        linear = _plot(returns)
        await pilot.press("l")
        assert returns.log_y and returns.scale().kind == "symlog"
        assert "symlog" in _title(returns)
        messages = [str(n.message) for n in app._notifications]
        assert any("Returns has values <= 0" in m and "symmetric log" in m for m in messages), messages
        drawn = _plot(returns)
        assert drawn != linear
        plot_area = [line[8:] for line in drawn]  # right of the y labels
        assert all(any(ch != " " for ch in (line[c] for line in plot_area)) for c in range(len(plot_area[0])))


# ---- 6. NO_COLOR ----------------------------------------------------------------------------------
def test_series_differ_by_dash_pattern_and_the_band_is_stippled_when_asked():
    x = np.arange(80)
    spec = ChartSpec("t", (SeriesSpec("a", "a", band=True), SeriesSpec("b", "b", "second"),
                           SeriesSpec("c", "c", "third")))
    flat = {"a": _snap(x, np.full(80, 3.0)), "b": _snap(x, np.full(80, 2.0)), "c": _snap(x, np.full(80, 1.0))}
    raster = rasterize(spec, flat, cols=40, rows=12, smoothing=0.0, log_y=False)
    drawn = {role: np.flatnonzero(_dots(raster, role)[_row(value, 1.0, 3.0, 48)]).tolist()
             for role, value in (("main", 3.0), ("second", 2.0), ("third", 1.0))}
    assert drawn["main"] == list(range(80))  # solid
    assert drawn["second"] == [c for c in range(80) if c % 8 < 6]  # long dashes
    assert drawn["third"] == [c for c in range(80) if c % 4 < 2]  # short dashes
    assert len({MARKS[role] for role in ("main", "second", "third", "ref")}) == 4

    noisy = {"a": _snap(x, np.where(x % 2, 10.0, -10.0), capacity=16)}  # buckets from -10 to 10
    band = ChartSpec("t", (SeriesSpec("a", "a", band=True),))
    full = _dots(rasterize(band, noisy, 40, 12, 0.9, False), "raw")
    stippled = _dots(rasterize(band, noisy, 40, 12, 0.9, False, stipple_band=True), "raw")
    rows, cols = np.nonzero(stippled)
    assert len(rows) and ((rows + cols) % 2 == 0).all()  # every other dot, a checkerboard
    assert (stippled <= full).all() and stippled.sum() < full.sum()


@pytest.mark.asyncio
async def test_with_no_color_the_titles_mark_each_series_as_its_line_is_drawn(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    engine = FakeEngine("mpo")
    app = RlTuiApp(engine=engine, clock=lambda: T0 + 20)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await _ready(app, pilot, engine)
        assert app.no_color
        kl = screen.charts()[1]
        assert "━E-step" in _title(kl) and "╍mean" in _title(kl) and "┉std" in _title(kl)
        returns = screen.charts()[0]
        assert "━train" in _title(returns) and "╍eval" in _title(returns)


# ---- 2. the event log -----------------------------------------------------------------------------
def _host(history: MetricsHistory) -> App[None]:
    class Host(App[None]):
        def on_mount(self) -> None:
            self.push_screen(DashboardScreen(history, control=None, algo="mpo", refresh_hz=20.0))

    return Host()


@pytest.mark.asyncio
async def test_event_log_wraps_long_entries_under_their_text_and_again_on_resize():
    history = MetricsHistory()
    history.extend(scripted_events("mpo", steps=6000))
    words = " ".join(f"word{i}" for i in range(40))
    history(WarningRaised(6000, message=words, time=T0 + 12))
    async with _host(history).run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        log = pilot.app.screen.query_one(EventLog)
        for size in ((80, 24), (200, 50)):
            await pilot.resize_terminal(*size)
            await pilot.pause()
            width = log.scrollable_content_region.width
            assert log.virtual_size.width == width and log.max_scroll_x == 0  # nothing to scroll sideways
            lines = log.wrapped_lines()
            assert all(len(line) <= width for line in lines)
            first = next(i for i, line in enumerate(lines) if line.startswith("6,000 warning: word0 "))
            rest = list(itertools.takewhile(lambda line: line.startswith(" " * 6), lines[first + 1:]))
            assert rest and all(line[6] != " " for line in rest)  # a hanging indent past the step column
            text = " ".join(line[6:].strip() for line in [lines[first], *rest])
            assert text == "warning: " + words
            if size == (80, 24):
                narrow_lines = len(rest)
        assert len(rest) < narrow_lines  # wrapped again, wider


@pytest.mark.asyncio
async def test_a_flood_of_warnings_never_pushes_out_the_run_start_checkpoints_and_evaluations():
    history = MetricsHistory()
    events = scripted_events("mpo", steps=6000)
    history.extend(events)
    for i in range(3000):  # distinct warnings: more than the history and the log keep
        history(WarningRaised(6000, message=f"update {i}: gradient clipped", time=T0 + 12))
    for _ in range(2000):  # one warning over and over
        history(WarningRaised(6100, message="skipped 1 update with non-finite loss", time=T0 + 12.2))
    texts = [entry.text for entry in history.log_since(0)]
    for important in ("run started: saves/mpo-pendulum-test", "checkpoint saves/mpo-pendulum-test/checkpoints/step-3000",
                      "eval (deterministic, 5 ep): -666.7 ± 20.0", "eval (deterministic, 5 ep): -254.3 ± 20.0"):
        assert important in texts
    async with _host(history).run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        log = pilot.app.screen.query_one(EventLog)
        shown = log.shown_texts()
        assert shown[:3] == ["0 run started: saves/mpo-pendulum-test", "2,000 eval (deterministic, 5 ep): -666.7 ± 20.0",
                             "3,000 checkpoint saves/mpo-pendulum-test/checkpoints/step-3000"]
        assert "6,000 eval (deterministic, 5 ep): -254.3 ± 20.0" in shown
        assert shown[-1] == "6,100 warning: skipped 1 update with non-finite loss (×2000, the last at step 6,100)"
        assert sum(1 for text in shown if "warning:" in text) <= MAX_LESSER
        assert shown[-2] == "6,000 warning: update 2999: gradient clipped"  # the latest warnings stay

        log.focus()
        await pilot.press("w")  # warnings hidden: what is left is the run's story
        assert log.shown_texts() == ["0 run started: saves/mpo-pendulum-test",
                                     "2,000 eval (deterministic, 5 ep): -666.7 ± 20.0",
                                     "3,000 checkpoint saves/mpo-pendulum-test/checkpoints/step-3000",
                                     "4,000 eval (deterministic, 5 ep): -382.2 ± 20.0",
                                     "6,000 eval (deterministic, 5 ep): -254.3 ± 20.0"]
        await pilot.press("w")
        assert len(log.shown_texts()) == len(shown)


@pytest.mark.asyncio
async def test_the_log_follows_new_entries_at_the_bottom_and_stays_where_it_was_scrolled_back():
    history = MetricsHistory()
    history.extend(scripted_events("mpo", steps=6000))
    async with _host(history).run_test(size=(80, 24)) as pilot:
        screen = pilot.app.screen
        log = screen.query_one(EventLog)
        for i in range(30):
            history(WarningRaised(6000 + i, message=f"note {i}", time=T0 + 12))
        screen.pull()
        await pilot.pause()
        assert log.max_scroll_y > 0 and log.scroll_offset.y == log.max_scroll_y  # at the newest entry
        log.scroll_to(y=2, animate=False)
        await pilot.pause()
        history(WarningRaised(6100, message="one more", time=T0 + 12))
        screen.pull()
        await pilot.pause()
        assert log.scroll_offset.y == 2  # the user reads back: the view stays
        log.scroll_end(animate=False)
        await pilot.pause()
        history(WarningRaised(6200, message="and another", time=T0 + 12))
        screen.pull()
        await pilot.pause()
        assert log.scroll_offset.y == log.max_scroll_y and log.wrapped_lines()[-1].startswith("6,200 warning: and")


# ---- 2. the summary on exit ---------------------------------------------------------------------
def _untimed(summary: str) -> str:
    """The summary without what depends on the clock (the session's duration and rate)."""
    return re.sub(r" after \d+:\d\d:\d\d \([\d,]+ steps/s this session\)", " after T", summary)


@pytest.mark.asyncio
async def test_on_exit_the_dashboard_prints_what_headless_prints():
    engine = FakeEngine("mpo", outcome="finish")
    app = RlTuiApp(engine=engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await _wait_for(pilot, lambda: app.history.status().state is RunState.FINISHED)
        await pilot.press("q")
        await _wait_for(pilot, lambda: not app.is_running)
    summary = app.exit_summary()
    assert summary is not None

    events = scripted_events("mpo")
    returns = [e.episode_return for e in events if isinstance(e, EpisodeFinished)][-10:]
    last_eval = -1300.0 + 1150.0 * (1 - math.exp(-6000 / 2500))
    assert _untimed(summary).splitlines() == [
        "finished: mpo-pendulum-test (mpo, Pendulum-v1) at step 6,000 after T",
        f"  recent return {sum(returns) / 10:.1f} (last 10 episodes)",
        f"  evaluation at step 6,000: {last_eval:.1f} ± 20.0 (5 episodes)",
        "  checkpoint saves/mpo-pendulum-test/checkpoints/step-3000",
        "  run dir saves/mpo-pendulum-test (resume: rltui resume saves/mpo-pendulum-test)",
    ]
    headless_engine = FakeEngine("mpo", outcome="finish")
    stream = io.StringIO()
    progress = HeadlessProgress(headless_engine.total_steps, 0, stream)
    headless_engine.subscribe(progress)
    headless_engine.run()
    progress.finish(headless_engine)
    assert _untimed(stream.getvalue()).endswith(_untimed(summary) + "\n")


@pytest.mark.asyncio
async def test_a_run_stopped_by_leaving_is_summed_up_once_its_final_checkpoint_is_written():
    engine = FakeEngine("mpo", stop_delay_s=0.3)  # still training when the app leaves (Ctrl-C)
    app = RlTuiApp(engine=engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await _ready(app, pilot, engine)
        await pilot.press("ctrl+c")
        await _wait_for(pilot, lambda: not app.is_running)
    summary = app.exit_summary(timeout=10)
    assert summary is not None and engine.state is RunState.FINISHED
    lines = summary.splitlines()
    assert lines[0].startswith("finished: mpo-pendulum-test") and lines[0].endswith("; stopped")
    assert "  checkpoint saves/mpo-pendulum-test/checkpoints/step-6000" in lines


@pytest.mark.asyncio
async def test_no_summary_for_a_run_that_goes_on_after_its_terminal_hung_up():
    from rltui.background import _Detachable

    class ThreadedFakeEngine(FakeEngine):
        def start(self) -> threading.Thread:
            thread = threading.Thread(target=self.run, daemon=True)
            thread.start()
            return thread

    engine = ThreadedFakeEngine("mpo")
    proxy = _Detachable(engine)
    app = RlTuiApp(engine=proxy)
    async with app.run_test(size=(80, 24)) as pilot:
        await _wait_for(pilot, lambda: engine.emitted.is_set())
        proxy.detached.set()  # as SIGHUP does: the run is no longer the dashboard's to stop
        app.exit()
        await _wait_for(pilot, lambda: not app.is_running)
    assert app.exit_summary(timeout=5) is None and not engine.state.is_final
    engine.submit(Stop(final_checkpoint=True)).result(10)


@pytest.mark.timeout(180)
def test_rltui_train_prints_its_summary_after_the_dashboard(tmp_path, write_preset_file):
    """The real CLI in a pseudo-terminal: the run finishes, `q` leaves, and the summary follows."""
    preset = write_preset_file("trpo")
    env = {**os.environ, "PYTHONPATH": str(REPO), "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "30"}
    env.pop("NO_COLOR", None)
    command = [sys.executable, "-m", "rltui", "train", str(preset), "--saves", "runs"]
    pid, master = pty.fork()
    if pid == 0:  # the child: straight to exec
        try:
            os.chdir(tmp_path)
            os.execve(command[0], command, env)
        finally:
            os._exit(127)
    output = bytearray()

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            output.extend(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not any(_finished(path) for path in tmp_path.glob("runs/*/metrics.jsonl")):
            assert time.monotonic() < deadline, output.decode(errors="replace")[-2000:]
            time.sleep(0.2)
        time.sleep(1.0)  # the dashboard shows the end
        os.write(master, b"q")
        _, status = os.waitpid(pid, 0)
        reader.join(10)
    finally:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        os.close(master)
    assert os.waitstatus_to_exitcode(status) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    after = output.decode(errors="replace").rsplit("\x1b[?1049l", 1)[-1]  # after the app left the screen
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", after).replace("\r", "")
    assert re.search(r"^finished: tiny-trpo \(trpo, Pendulum-v1\) at step 400 after ", plain, re.M), plain
    assert re.search(rf"^  run dir (\S*/)?runs/{run_dir.name} \(resume: rltui resume (\S*/)?runs/{run_dir.name}\)$",
                     plain, re.M), plain
    assert "  evaluation at step 400: " in plain


def _finished(log: Path) -> bool:
    events, _ = read_events(log)
    return bool(events) and events[-1].kind == "state" and events[-1].state is RunState.FINISHED
