"""Pilot tests of the dashboard against the deterministic fake engine (and the real one)."""

from __future__ import annotations

import re
import time

import pytest
from fake_engine import T0, FakeEngine

from rltui.app import RlTuiApp
from rltui.commands import Checkpoint, Pause, Resume, SetEvalMode, Stop
from rltui.events import RunState
from rltui.screens.dashboard import DashboardScreen
from rltui.screens.help import HelpScreen
from rltui.widgets.inspect_chart import InspectChart
from rltui.widgets.line_chart import LineChart
from rltui.widgets.status_bar import StatusBar

pytestmark = pytest.mark.timeout(60)


async def _wait_for(pilot, predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await pilot.pause(0.05)


async def _ready(app: RlTuiApp, pilot, engine: FakeEngine) -> DashboardScreen:
    await _wait_for(pilot, lambda: engine.emitted.is_set())
    screen = app.screen
    assert isinstance(screen, DashboardScreen)
    screen.pull()
    await pilot.pause()
    return screen


def screen_text(app: RlTuiApp) -> str:
    """What the terminal shows, as plain text."""
    strips = app.screen._compositor.render_strips()
    return "\n".join("".join(segment.text for segment in strip) for strip in strips)


def _enabled(screen: DashboardScreen, action: str) -> bool | None:
    return screen.check_action(action, ())


@pytest.mark.asyncio
async def test_control_keys_reach_the_engine():
    engine = FakeEngine("mpo")
    app = RlTuiApp(engine=engine, clock=lambda: T0 + 20)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await _ready(app, pilot, engine)
        assert _enabled(screen, "pause") is True and _enabled(screen, "resume") is False
        await pilot.press("p")
        await _wait_for(pilot, lambda: screen.run_state is RunState.PAUSED)  # pulled as the reply came
        assert engine.state is RunState.PAUSED
        assert _enabled(screen, "pause") is False and _enabled(screen, "resume") is True
        await pilot.pause()
        assert "Resume" in screen_text(app).splitlines()[-1]  # the footer followed by itself
        await pilot.press("space")
        await _wait_for(pilot, lambda: screen.run_state is RunState.RUNNING)
        await pilot.press("c")
        await _wait_for(pilot, lambda: app.history.status().last_checkpoint.endswith("step-6000"))
        await pilot.press("e")
        assert screen.eval_mode  # at once, before the run answers
        await _wait_for(pilot, lambda: screen.run_state is RunState.EVALUATING)
        assert _enabled(screen, "pause") is None  # no pausing while evaluating
        await pilot.press("e")
        await _wait_for(pilot, lambda: screen.run_state is RunState.RUNNING and not screen.eval_mode)
        assert engine.commands == [Pause(), Resume(), Checkpoint(), SetEvalMode(True), SetEvalMode(False)]


@pytest.mark.asyncio
async def test_view_keys_smoothing_log_maximise_help():
    engine = FakeEngine("trpo")
    app = RlTuiApp(engine=engine, clock=lambda: T0 + 20)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await _ready(app, pilot, engine)
        charts = screen.charts()
        assert charts[1].spec.title == "KL" and charts[1].spec.references[0].value == 0.01
        assert charts[0].smoothing == 0.6
        await pilot.press("s")
        assert all(c.smoothing == 0.9 for c in charts)
        assert screen.focused is charts[0]
        await pilot.press("l")
        assert charts[0].log_y and not charts[1].log_y
        await pilot.press("tab", "l")
        assert charts[1].log_y
        await pilot.press("3")
        assert screen.maximised == 3 and screen.query_one(InspectChart).display
        assert not screen.query_one("#charts").display
        await pilot.press("l")  # log applies to the maximised chart
        assert charts[2].log_y
        await pilot.press("3")
        assert screen.maximised is None and screen.query_one("#charts").display
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert app.screen is screen
        assert engine.commands == []


@pytest.mark.asyncio
async def test_log_key_is_greyed_out_without_a_focused_chart():
    engine = FakeEngine("mpo")
    app = RlTuiApp(engine=engine)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await _ready(app, pilot, engine)
        screen.query_one("#metrics").focus()
        await pilot.pause()
        assert _enabled(screen, "toggle_log") is None


@pytest.mark.asyncio
async def test_quit_while_training_stops_with_checkpoint_quickly():
    engine = FakeEngine("mpo", stop_delay_s=1.0)  # a long update still running when q is pressed
    app = RlTuiApp(engine=engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await _ready(app, pilot, engine)
        start = time.monotonic()
        await pilot.press("q")
        await _wait_for(pilot, lambda: not app.is_running, timeout=5.0)
    assert time.monotonic() - start < 5.0
    assert engine.commands == [Stop(final_checkpoint=True)]
    assert engine.state is RunState.FINISHED


@pytest.mark.asyncio
async def test_failing_engine_shows_failed_and_stays_usable():
    for outcome in ("fail", "raise"):
        engine = FakeEngine("mpo", outcome=outcome)
        app = RlTuiApp(engine=engine)
        async with app.run_test(size=(80, 24)) as pilot:
            await _wait_for(pilot, lambda app=app: app.history.status().state is RunState.FAILED)
            screen = app.screen
            screen.pull()
            await pilot.pause()
            status = screen.query_one(StatusBar).render().plain
            assert "FAILED" in status
            assert ("NaN" in status) if outcome == "fail" else ("simulated crash" in status)
            for action in ("pause", "checkpoint", "toggle_eval"):
                assert _enabled(screen, action) is None
            assert _enabled(screen, "resume") is False
            await pilot.press("s", "1")  # still usable
            assert screen.maximised == 1
            await pilot.press("q")
            await _wait_for(pilot, lambda app=app: not app.is_running)
        assert app.run_exit_code() == 1


@pytest.mark.asyncio
async def test_finished_run_greys_out_controls_and_quits_at_once():
    engine = FakeEngine("trpo", outcome="finish")
    app = RlTuiApp(engine=engine)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _ready(app, pilot, engine)
        assert app.history.status().state is RunState.FINISHED
        assert _enabled(screen, "checkpoint") is None
        await pilot.press("c", "p", "e")
        assert engine.commands == []
        await pilot.press("q")
        await _wait_for(pilot, lambda: not app.is_running)
    assert app.run_exit_code() == 0


@pytest.mark.asyncio
async def test_charts_redraw_only_when_their_data_changes():
    engine = FakeEngine("mpo")
    app = RlTuiApp(engine=engine)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _ready(app, pilot, engine)
        chart = screen.query_one("#chart-4", LineChart)
        token = chart._content_token
        screen.pull()
        screen.pull()
        assert chart._content_token == token
        from rltui.events import UpdateMetrics

        app.history(UpdateMetrics(7000, updates=1, metrics={"loss/q": 3.0}, time=T0))
        screen.pull()
        assert chart._content_token == token + 1
        assert screen.query_one("#chart-1", LineChart)._content_token  # untouched charts keep theirs


@pytest.mark.asyncio
async def test_help_lists_every_binding_of_the_dashboard():
    from textual.binding import Binding

    engine = FakeEngine("mpo")
    app = RlTuiApp(engine=engine)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await _ready(app, pilot, engine)
        await pilot.press("question_mark")
        help_screen = app.screen
        assert isinstance(help_screen, HelpScreen)
        text = screen_text(app)  # what the terminal shows
        attached_only = {"detach", "stop_run"}  # (an attached dashboard lists these instead of quit_run)
        for binding in Binding.make_bindings(DashboardScreen.BINDINGS):
            if binding.action in attached_only:
                assert binding.tooltip not in text
                continue
            assert binding.tooltip and binding.tooltip in text, binding
            row = next(line for line in text.splitlines() if binding.tooltip in line)
            keys = row.split(binding.tooltip)[0].rsplit("│", 1)[-1].strip().split(", ")  # the box's key column
            if len(keys) == 1 and "-" in keys[0]:  # "1-4"
                first, last = keys[0].split("-")
                keys = [str(n) for n in range(int(first), int(last) + 1)]
            assert app.get_key_display(binding) in keys, (binding, row)
        assert "not in watch mode" not in text
        await pilot.press("escape")
        assert app.screen is screen


@pytest.mark.asyncio
async def test_dashboard_drives_any_run_control_through_submit():
    """A bare RunControl (a state and submit(), no engine): keys become commands, replies come later
    from another thread, `q` is a message for the app to decide on."""
    import threading

    from fake_engine import FakeControl, scripted_events
    from textual.app import App

    from rltui.commands import Reply
    from rltui.history import MetricsHistory

    control = FakeControl(RunState.RUNNING)
    history = MetricsHistory()
    history.extend(scripted_events("trpo", steps=2000))
    quits = []

    class Host(App[None]):
        def on_mount(self) -> None:
            self.push_screen(DashboardScreen(history, control=control, refresh_hz=20.0))

        def on_dashboard_screen_quit_requested(self, message: DashboardScreen.QuitRequested) -> None:
            quits.append(message)

    def answer_from_another_thread(reply, state=None):
        thread = threading.Thread(target=control.answer, args=(reply, state))
        thread.start()
        thread.join()

    app = Host()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert screen.charts()[1].spec.references[0].value == 0.01  # target_kl, from RunStarted
        await pilot.press("p")
        assert [type(c) for c, _ in control.submitted] == [Pause]
        assert screen.check_action("pause", ()) is True  # nothing changes before the run says so
        answer_from_another_thread(Reply(True, "paused"), RunState.PAUSED)
        await _wait_for(pilot, lambda: screen.check_action("resume", ()) is True)
        await pilot.pause()
        assert "Resume" in screen_text(app).splitlines()[-1]
        await pilot.press("c")
        answer_from_another_thread(Reply(False, "disk full"))
        await _wait_for(pilot, lambda: any("checkpoint: disk full" in str(n.message) for n in app._notifications))
        await pilot.press("e")
        assert screen.eval_mode and control.submitted[-1][0] == SetEvalMode(True)
        answer_from_another_thread(Reply(False, "the run has ended"), RunState.FINISHED)
        await _wait_for(pilot, lambda: not screen.eval_mode)  # refused: back to what the run does
        assert screen.check_action("checkpoint", ()) is None
        await pilot.press("q")
        await _wait_for(pilot, lambda: len(quits) == 1)
        assert app.screen is screen and [c for c, _ in control.submitted] == [Pause(), Checkpoint(), SetEvalMode(True)]


# ---- picker -------------------------------------------------------------------------------------
from rltui.screens.picker import PickerScreen  # noqa: E402


def _picker_app(tmp_path, started: list) -> RlTuiApp:
    def factory(preset, saves_root):
        started.append((preset, saves_root))
        return FakeEngine(preset.algo, outcome="finish")

    return RlTuiApp(engine_factory=factory, saves_root=tmp_path / "saves")


@pytest.mark.asyncio
async def test_picker_flow_starts_the_chosen_preset(tmp_path):
    started: list = []
    app = _picker_app(tmp_path, started)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        picker = app.screen
        assert isinstance(picker, PickerScreen)
        # TRPO presets only after switching the algorithm
        picker.query_one("#algo").query("RadioButton").last().value = True
        await pilot.pause()
        options = picker.query_one("#presets")
        names = [options.get_option_at_index(i).prompt for i in range(options.option_count)]
        assert "pendulum-trpo" in names and not any("mpo" in n for n in names)
        options.highlighted = names.index("pendulum-trpo")
        await pilot.pause()
        assert picker.preset.name == "pendulum-trpo"
        preview = screen_text(app)
        assert "target_kl" in preview and "Pendulum-v1" in preview
        options.focus()
        await pilot.press("enter")
        await _wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen))
        assert started[0][0].name == "pendulum-trpo" and started[0][1] == tmp_path / "saves"


@pytest.mark.asyncio
async def test_picker_preselects_the_pendulum_default_of_each_algorithm(tmp_path):
    app = _picker_app(tmp_path, [])
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        picker = app.screen
        assert picker.preset.name == "pendulum-mpo"
        picker.query_one("#algo").query("RadioButton").last().value = True
        await pilot.pause()
        assert picker.preset.name == "pendulum-trpo"


@pytest.mark.asyncio
async def test_picker_shows_validation_errors_instead_of_crashing(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\nalgo = "mpo"\n[env]\nid = "Pendulum-v1"\n[mpo]\nkl_epsilon = "abc"\n')
    started: list = []
    app = _picker_app(tmp_path, started)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        picker = app.screen
        path_input = picker.query_one("#path")
        for text in (str(bad), str(tmp_path / "missing.toml")):
            path_input.value = text
            path_input.focus()
            await pilot.press("enter")
            await pilot.pause()
            assert picker.preset is None
            message = picker.error
            assert ("kl_epsilon" in message) if text == str(bad) else ("missing.toml" in message)
            assert "\n" not in message
            await pilot.press("ctrl+s")
            await pilot.pause()
            assert app.screen is picker and started == []


# ---- the real engine on tiny Pendulum runs ------------------------------------------------------
def _real_engine(algo: str, steps: int, saves_root):
    """conftest's tiny preset: `steps` long, evaluations rare, no replay in checkpoints."""
    from conftest import tiny_preset

    from rltui.engine import Engine
    from rltui.rundir import create_run_dir

    overrides = {"train": {"total_steps": steps}, "eval": {"interval": 2000 if algo == "mpo" else 200}}
    if algo == "mpo":
        overrides["checkpoint"] = {"save_replay": False}
    preset = tiny_preset(algo, overrides)
    return Engine(preset, create_run_dir(preset, saves_root))


def _checkpoints(run_dir) -> list[str]:
    folder = run_dir / "checkpoints"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.asyncio
async def test_every_key_against_the_real_engine(tmp_path):
    engine = _real_engine("mpo", 1_000_000, tmp_path)
    app = RlTuiApp(engine=engine, refresh_hz=10.0)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await _wait_for(pilot, lambda: engine.state is RunState.RUNNING and engine.step > 150, timeout=20)
        await pilot.press("p")
        await _wait_for(pilot, lambda: engine.state is RunState.PAUSED)
        paused_at = engine.step
        await pilot.pause(0.3)
        assert engine.step == paused_at
        await pilot.press("space")
        await _wait_for(pilot, lambda: engine.state is RunState.RUNNING)
        await pilot.press("c")
        await _wait_for(pilot, lambda: app.history.status().last_checkpoint is not None)
        await pilot.press("e")
        await _wait_for(pilot, lambda: engine.state is RunState.EVALUATING)
        await pilot.press("e")
        await _wait_for(pilot, lambda: engine.state is RunState.RUNNING)
        await pilot.press("s", "l", "2", "2", "question_mark", "escape")
        await _wait_for(pilot, lambda: screen.charts()[3]._data.get("loss/q") is not None)
        start = time.monotonic()
        await pilot.press("q")
        await _wait_for(pilot, lambda: not app.is_running, timeout=5.0)
    assert time.monotonic() - start < 5.0
    assert engine.state is RunState.FINISHED
    assert len(_checkpoints(engine.run_dir)) >= 2  # the one asked for with `c`, and the final one


@pytest.mark.asyncio
async def test_real_trpo_run_finishes_and_fills_the_charts(tmp_path):
    engine = _real_engine("trpo", 400, tmp_path)
    app = RlTuiApp(engine=engine, refresh_hz=10.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await _wait_for(pilot, lambda: app.history.status().state is RunState.FINISHED, timeout=40)
        screen = app.screen
        screen.pull()
        await pilot.pause()
        assert screen.check_action("pause", ()) is None
        assert app.history.series("policy/kl") is not None
        assert app.history.series("eval/return_mean") is not None
        assert "FINISHED" in screen.query_one(StatusBar).render().plain
        await pilot.press("q")
        await _wait_for(pilot, lambda: not app.is_running)


@pytest.mark.asyncio
async def test_resumed_run_opens_on_its_whole_history(tmp_path):
    """The dashboard of a resumed run first shows what the run's log holds, then the new session's
    events follow on: the same history as reading the whole log afterwards, nothing twice or missing."""
    from conftest import tiny_preset

    from rltui.engine import Engine
    from rltui.history import EVAL_RETURN, TRAIN_RETURN, MetricsHistory
    from rltui.rundir import create_run_dir
    from rltui.runlog import LOG_NAME

    preset = tiny_preset("trpo", {"train": {"total_steps": 800}, "eval": {"interval": 400}})
    first = Engine(preset, create_run_dir(preset, tmp_path))
    first.run()
    run_dir = first.run_dir
    earlier = MetricsHistory()
    earlier.load(run_dir / LOG_NAME)
    assert earlier.status().step == 800 and len(earlier.series(TRAIN_RETURN)) > 0

    resumed = Engine(tiny_preset("trpo", {"train": {"total_steps": 1200}, "eval": {"interval": 400}}),
                     run_dir, resume=True)
    app = RlTuiApp(engine=resumed, history_from=run_dir, refresh_hz=10.0)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await _wait_for(pilot, lambda: app.history.status().step == 1200
                        and app.history.status().state is RunState.FINISHED, timeout=40)
        screen.pull()
        await pilot.pause()
        shown = screen.charts()[0].data[TRAIN_RETURN]
        assert shown.x.min() < 800 < shown.x.max()  # the first session's episodes are on the chart
        await pilot.press("q")
        await _wait_for(pilot, lambda: not app.is_running)
    whole = MetricsHistory()
    whole.load(run_dir / LOG_NAME)
    assert app.history.series_names() == whole.series_names()
    for name in (TRAIN_RETURN, EVAL_RETURN, *whole.series_names()):
        live, replayed = app.history.series(name), whole.series(name)
        np.testing.assert_array_equal(live.x, replayed.x, err_msg=name)
        np.testing.assert_array_equal(live.y, replayed.y, err_msg=name)
    assert app.history.status().episodes == whole.status().episodes
    assert [e.text for e in app.history.log_since(0)] == [e.text for e in whole.log_since(0)]
    starts = [e.text for e in whole.log_since(0) if e.text.startswith("run ")]
    assert starts == [f"run started: {run_dir}", f"run resumed: {run_dir}"]


@pytest.mark.asyncio
async def test_a_history_that_cannot_be_loaded_does_not_stop_the_run(tmp_path, monkeypatch):
    from rltui.history import MetricsHistory

    def broken(self, path, cancelled=None):
        raise MemoryError("too much history")

    monkeypatch.setattr(MetricsHistory, "load", broken)
    engine = FakeEngine("mpo", outcome="finish")
    app = RlTuiApp(engine=engine, history_from=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await _wait_for(pilot, lambda: app.history.status().state is RunState.FINISHED)
        texts = [e.text for e in app.history.log_since(0)]
        assert texts[0] == "the run's earlier history could not be shown: MemoryError: too much history"
        await pilot.press("q")
        await _wait_for(pilot, lambda: not app.is_running)
    assert app.run_exit_code() == 0


def test_rltui_resume_opens_the_dashboard_on_the_run_history(tmp_path, monkeypatch):
    from conftest import tiny_preset

    from rltui import app as app_module
    from rltui import cli
    from rltui.engine import Engine
    from rltui.rundir import create_run_dir

    preset = tiny_preset("trpo", {"train": {"total_steps": 100}, "eval": {"interval": 0}})
    first = Engine(preset, create_run_dir(preset, tmp_path))
    first.run()
    opened = []

    def dashboard(engine, refresh_hz=4.0, mouse=True, history_from=None, on_app=None):
        opened.append((engine.run_dir, history_from))
        engine.close()  # never run: give the run directory back
        return 0

    monkeypatch.setattr(app_module, "run_dashboard", dashboard)
    assert cli.main(["resume", str(first.run_dir), "--set", "train.total_steps=200"]) == 0
    assert opened == [(first.run_dir, first.run_dir)]


# ---- chart maths (no app) -----------------------------------------------------------------------
import numpy as np  # noqa: E402

from rltui.history import DownsampledSeries  # noqa: E402
from rltui.widgets.inspect_chart import downsample, plot_chart  # noqa: E402
from rltui.widgets.line_chart import ChartSpec, ReferenceLine, SeriesSpec, ema, format_value, rasterize  # noqa: E402


def test_ema_is_debiased_like_tensorboard():
    values = np.array([10.0, 10.0, 10.0])
    np.testing.assert_allclose(ema(values, 0.9), values)  # no pull towards 0 at the start
    np.testing.assert_allclose(ema(np.array([0.0, 1.0]), 0.5), [0.0, 2 / 3])
    assert ema(values, 0.0) is values


def test_format_value_is_short():
    for value in (0.0, 1.5, -1234.5, 123456.0, 3e7, 2.5e-4, -0.0123, float("nan")):
        assert len(format_value(value)) <= 7


def _snap(xs, ys):
    series = DownsampledSeries(64)
    for x, y in zip(xs, ys, strict=True):
        series.add(float(x), float(y))
    return series.snapshot()


def test_rasterize_draws_lines_bands_and_references():
    spec = ChartSpec("t", (SeriesSpec("a", "a", band=True), SeriesSpec("b", "b", "second", smooth=False)),
                     (ReferenceLine("r", 0.5),))
    data = {"a": _snap(range(100), np.sin(np.arange(100) / 10)), "b": _snap([0, 50, 99], [0.0, 1.0, 0.0])}
    raster = rasterize(spec, data, cols=30, rows=8, smoothing=0.6, log_y=False)
    assert len(raster.chars) == 8 and all(len(row) == 30 for row in raster.chars)
    layers = {layer for row in raster.layers for layer in row}
    assert {"main", "second", "ref"} <= layers
    assert raster.y_low <= -0.99 and raster.y_high >= 0.99
    # each column of the line is connected: no empty plot column between the first and last point
    drawn = [any(raster.chars[r][c] != " " for r in range(8)) for c in range(30)]
    assert all(drawn)


def test_rasterize_log_scale_of_positive_values_and_no_data():
    spec = ChartSpec("t", (SeriesSpec("a", "a"),), log_y=True)
    raster = rasterize(spec, {"a": _snap(range(8), [1, 10, 100, 1000, 1e4, 1e5, 1e6, 1e7])}, 20, 5, 0.0, True)
    assert raster.scale.kind == "log"
    assert raster.y_low == pytest.approx(1.0) and raster.y_high == pytest.approx(1e7)
    assert raster.value_at(2) == pytest.approx(10**3.5)  # the middle row, halfway in decades
    empty = rasterize(spec, {"a": None}, 20, 5, 0.0, True)
    assert empty.chars == [" " * 20] * 5


def test_plotext_inspect_view_builds_repeatedly_with_log_scale():
    x = np.arange(5000.0)
    xs, ys = downsample(x, x * 2, 100)
    assert len(xs) == 100 and ys[0] == pytest.approx(2 * xs[0])
    spec = ChartSpec("duals", (SeriesSpec("a", "η"),), (ReferenceLine("ε", 0.1),))
    data = {"a": _snap(range(1, 500), np.exp(-np.arange(1, 500) / 100))}
    for _ in range(3):  # plotext once failed on repeated log-scale builds
        text = plot_chart(spec, data, 80, 20, 0.6, True)
        assert "duals" in text
    assert plot_chart(spec, {"a": None}, 80, 20, 0.0, False) == "no data yet"


@pytest.mark.asyncio
async def test_picker_shows_run_creation_failures(tmp_path):
    def factory(preset, saves_root):
        raise PermissionError(f"{saves_root}: read-only file system")

    app = RlTuiApp(engine_factory=factory, saves_root=tmp_path / "saves")
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        picker = app.screen
        await pilot.press("enter")  # start the highlighted preset
        await _wait_for(pilot, lambda: picker.error is not None and "read-only" in picker.error)
        assert app.screen is picker and not picker.starting


@pytest.mark.asyncio
async def test_picker_seed_steps_and_overrides_reach_the_run_and_the_preview(tmp_path):
    started: list = []
    app = _picker_app(tmp_path, started)
    async with app.run_test(size=(110, 34)) as pilot:
        await pilot.pause()
        picker = app.screen
        picker.query_one("#seed").value = "7"
        picker.query_one("#total-steps").value = "3000"
        picker.query_one("#overrides").value = "mpo.policy_lr=1e-4 eval.episodes=3"
        await pilot.pause()
        assert (picker.preset.train.seed, picker.preset.train.total_steps) == (7, 3000)
        assert "steps       3,000  seed 7" in screen_text(app)
        picker.query_one("#overrides").value = "mpo.policy_lr=abc"
        await pilot.pause()
        assert picker.preset is None and picker.error.startswith("--set mpo.policy_lr: [mpo] policy_lr: expected")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert started == [] and app.screen is picker  # nothing starts with a bad override
        picker.query_one("#overrides").value = "mpo.policy_lr=1e-4"
        await pilot.pause()
        await pilot.press("ctrl+s")
        await _wait_for(pilot, lambda: started)
        preset = started[0][0]
        assert (preset.name, preset.train.seed, preset.train.total_steps) == ("pendulum-mpo", 7, 3000)
        assert preset.agent["policy_lr"] == 1e-4


@pytest.mark.asyncio
async def test_picker_starts_a_typed_path_without_enter_and_a_cleared_path_takes_its_error_away(tmp_path):
    mine = tmp_path / "mine.toml"
    mine.write_text('extends = "pendulum-trpo"\nname = "mine"\n')
    started: list = []
    app = _picker_app(tmp_path, started)
    async with app.run_test(size=(110, 34)) as pilot:
        await pilot.pause()
        picker = app.screen
        path_input = picker.query_one("#path")
        path_input.focus()
        path_input.value = str(tmp_path / "missing.toml")
        await pilot.press("enter")
        assert picker.preset is None and "missing.toml" in picker.error
        path_input.value = ""  # erased: the highlighted preset is shown again, without the error
        await pilot.pause()
        assert picker.error is None and picker.preset.name == "pendulum-mpo"
        path_input.value = str(mine)  # typed, no Enter
        await pilot.pause()
        await pilot.press("ctrl+s")
        await _wait_for(pilot, lambda: started)
        assert started[0][0].name == "mine" and started[0][0].algo == "trpo"


def test_the_preview_spells_values_as_toml_and_trpo_has_no_replay():
    from rich.console import Console

    from rltui.presets import load_preset
    from rltui.screens.picker import describe_preset, toml_value

    assert [toml_value(v) for v in (True, False, 1e-4, "adam", (64, 64), {"g": 9.0})] == \
        ["true", "false", "0.0001", '"adam"', "[64, 64]", "{ g = 9 }"]

    def shown(name: str) -> str:
        console = Console(width=200, record=True)
        console.print(describe_preset(load_preset(name, check_env=False), name, "cpu"))
        return console.export_text()

    trpo, mpo = shown("pendulum-trpo"), shown("pendulum-mpo")
    assert "replay" not in trpo and re.search(r"normalize_advantages\s+true", trpo)
    assert "True" not in trpo and "False" not in trpo
    assert "replay yes" in mpo
