"""The compare view: styles that belong to the run, the running-time clock, group means and their
bands, the metrics charted, the braille raster; the screen's keys and live following in the real
app (Pilot); `rltui compare` bad input; SVG snapshots at 80x24, 160x48 and with NO_COLOR.

Update the snapshots after an intended change with `pytest tests/test_compare.py --snapshot-update`.
"""

from __future__ import annotations

import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from recorded_runs import curve, record_run, recorded_events
from test_app import screen_text
from test_background import rltui

from rltui.app import RlTuiApp
from rltui.comparison import (
    MARKERS,
    PALETTE,
    Band,
    ComparedRun,
    Curve,
    RunClock,
    RunStyle,
    assign_styles,
    compared_metrics,
    group_curve,
)
from rltui.events import RunStarted, RunState, UpdateMetrics
from rltui.history import EVAL_RETURN, MANUAL_RETURN, TRAIN_RETURN, MetricsHistory
from rltui.runlog import RunLogWriter
from rltui.screens.compare import CompareScreen
from rltui.widgets.compare_chart import CompareChart, rasterize_curves
from rltui.widgets.line_chart import ReferenceLine

pytestmark = pytest.mark.timeout(120)


# ---- styles -------------------------------------------------------------------------------------
def test_a_run_alone_gets_the_look_its_key_hashes_to_whatever_the_order():
    keys = [f"saves/run-{i}" for i in range(10)]
    for key in keys:
        preferred = zlib.crc32(key.encode()) % len(PALETTE)
        assert assign_styles([key])[key] == RunStyle(PALETTE[preferred], MARKERS[preferred])
    assert assign_styles(keys) == assign_styles(reversed(keys))


def test_every_shown_run_gets_its_own_colour_and_marker_up_to_the_palette_then_its_own_pair():
    ten = assign_styles(f"saves/run-{i}" for i in range(10))
    assert len({s.colour for s in ten.values()}) == 10 and len({s.marker for s in ten.values()}) == 10
    many = assign_styles(f"saves/run-{i}" for i in range(30))
    assert len({(s.colour, s.marker) for s in many.values()}) == 30
    # A run whose preferred look is free keeps it beside others.
    for key, style in ten.items():
        if style.colour == PALETTE[zlib.crc32(key.encode()) % 10]:
            assert assign_styles([key])[key] == style


# ---- the running-time clock ---------------------------------------------------------------------
def _session(step: int, t: float, resumed: bool = False) -> RunStarted:
    return RunStarted(step, name="r", algo="mpo", env_id="Pendulum-v1", device="cpu", total_steps=400,
                      run_dir="saves/r", resumed=resumed, time=t)


def test_running_time_adds_up_sessions_and_drops_what_a_resume_went_back_over():
    events = [
        _session(0, 100.0),
        UpdateMetrics(100, updates=1, metrics={"loss/q": 1.0}, time=110.0),
        UpdateMetrics(200, updates=1, metrics={"loss/q": 1.0}, time=120.0),
        UpdateMetrics(300, updates=1, metrics={"loss/q": 1.0}, time=130.0),  # killed after this
        _session(200, 1000.0, resumed=True),  # from the checkpoint at 200, 870 s later
        UpdateMetrics(300, updates=1, metrics={"loss/q": 1.0}, time=1005.0),
        UpdateMetrics(400, updates=1, metrics={"loss/q": 1.0}, time=1010.0),
    ]
    clock, history = RunClock(), MetricsHistory()
    for event in events:
        clock(event)
        history(event)
    # 30 s in the first session (100 -> 130), then 5 and 10 s into the second.
    np.testing.assert_allclose(clock.seconds_at(np.array([100.0, 200.0, 300.0, 400.0, 250.0])),
                               [10.0, 20.0, 35.0, 40.0, 27.5])
    assert clock.seconds_at(np.array([400.0]))[0] == history.status().elapsed()  # as the dashboard counts it
    version = clock.version
    clock.reset()
    assert clock.version > version and np.isnan(clock.seconds_at(np.array([100.0]))).all()


# ---- group means --------------------------------------------------------------------------------
def test_a_group_mean_covers_the_range_every_member_reaches_with_its_band():
    rising = Curve("a", "a", np.array([0.0, 10.0]), np.array([0.0, 10.0]))
    flat = Curve("b", "b", np.array([5.0, 20.0]), np.array([10.0, 10.0]))
    grid = np.array([5.0, 6.0, 7.0, 8.0, 9.0, 10.0])  # the common range [5, 10] in 6 points
    by_min_max = group_curve("g", "g", [rising, flat], Band.MIN_MAX, points=6)
    np.testing.assert_allclose(by_min_max.x, grid)
    np.testing.assert_allclose(by_min_max.y, (grid + 10.0) / 2)
    np.testing.assert_allclose(by_min_max.lo, grid)
    np.testing.assert_allclose(by_min_max.hi, np.full(6, 10.0))
    by_std = group_curve("g", "g", [rising, flat], Band.STD, points=6)
    half_gap = (10.0 - grid) / 2  # the population std of two values is half their distance
    np.testing.assert_allclose(by_std.lo, by_std.y - half_gap)
    np.testing.assert_allclose(by_std.hi, by_std.y + half_gap)
    apart = Curve("c", "c", np.array([30.0, 40.0]), np.array([1.0, 1.0]))
    assert group_curve("g", "g", [rising, apart], Band.MIN_MAX) is None  # no common range
    alone = group_curve("g", "g", [rising], Band.STD, points=3)
    np.testing.assert_allclose(alone.y, [0.0, 5.0, 10.0])
    np.testing.assert_allclose(alone.hi - alone.lo, 0.0)


# ---- what is charted ----------------------------------------------------------------------------
def test_every_series_of_the_dashboards_charts_is_a_chart_evaluations_first():
    mpo = compared_metrics([("mpo", {"kl_epsilon": 0.1, "mstep_kl_epsilon": 0.01})])
    assert [m.name for m in mpo] == [EVAL_RETURN, TRAIN_RETURN, MANUAL_RETURN, "kl/nonparametric", "kl/mean",
                                     "kl/std", "dual/temperature", "dual/alpha_mean", "dual/alpha_std", "loss/q"]
    assert mpo[3].title == "KL: E-step" and mpo[3].log_y
    assert mpo[3].references == (ReferenceLine("ε", 0.1), ReferenceLine("ε_m", 0.01))
    assert not mpo[0].smooth and mpo[1].smooth  # evaluations are not smoothed, as in the dashboard
    both = compared_metrics([("trpo", {"target_kl": 0.01}), ("mpo", {"kl_epsilon": 0.1})])
    assert [m.name for m in both][-5:] == ["policy/kl", "policy/line_search_frac", "policy/step_norm",
                                           "loss/value", "value/explained_variance"]
    assert len(both) == 15
    differing = compared_metrics([("mpo", {"kl_epsilon": 0.1}), ("mpo", {"kl_epsilon": 0.2})])
    assert differing[3].references == ()  # runs with different bounds: no one line is theirs


# ---- the raster ---------------------------------------------------------------------------------
def test_each_curve_carries_its_marker_along_its_line_and_a_band_is_stippled():
    x = np.linspace(0.0, 100.0, 50)
    high = Curve("high", "high", x, np.full(50, 10.0))
    low = Curve("low", "low", x, np.full(50, 0.0), lo=np.full(50, -1.0), hi=np.full(50, 1.0))
    raster = rasterize_curves([high, low], [], cols=40, rows=8, log_y=False, markers={"high": "●", "low": "×"})
    assert (raster.x_low, raster.x_high) == (0.0, 100.0)
    assert raster.y_high == 10.0 and raster.y_low == -1.0
    top = raster.chars[0]
    assert top.count("●") == 40 // 8 and "×" not in top  # every 8 cells, offset 0 for the first curve
    assert [i for i, c in enumerate(top) if c == "●"] == [0, 8, 16, 24, 32]
    owners = {owner for row in raster.owners for owner in row}
    assert {("line", "high"), ("marker", "high"), ("line", "low"), ("marker", "low"), ("band", "low")} <= owners
    band_rows = [r for r, row in enumerate(raster.owners) if ("band", "low") in row]
    for r in band_rows:  # the band's cells hold every other dot (a stipple), never a full cell
        for c, owner in enumerate(raster.owners[r]):
            if owner == ("band", "low"):
                assert raster.chars[r][c] != "⣿"
    few = Curve("few", "few", np.array([0.0, 50.0, 100.0]), np.array([1.0, 2.0, 3.0]))
    marked = rasterize_curves([few], [], cols=40, rows=8, log_y=False, markers={"few": "◆"})
    assert sum(row.count("◆") for row in marked.chars) == 3  # few points: one marker on each


# ---- the screen -------------------------------------------------------------------------------
def _runs(saves: Path) -> list[ComparedRun]:
    dirs = [record_run(saves, "tiny-mpo-s0", "mpo", 0), record_run(saves, "tiny-mpo-s1", "mpo", 1),
            record_run(saves, "tiny-trpo-s0", "trpo", 0, steps=3000, end=RunState.FAILED)]
    groups = {"tiny-mpo-s0": "tiny-mpo", "tiny-mpo-s1": "tiny-mpo", "tiny-trpo-s0": "tiny-trpo"}
    return [ComparedRun(d, d.name, groups[d.name]) for d in dirs]


async def _until(pilot, predicate, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met in {timeout} s")
        await pilot.pause(0.05)


async def _shows(pilot, app: RlTuiApp, text: str) -> None:
    """Wait until the terminal shows `text` (the view draws on its next refresh)."""
    await _until(pilot, lambda: text in screen_text(app), what=f"{text!r} on screen")


def _loaded(screen: CompareScreen) -> bool:
    return all(run.history.status().state.is_final for run in screen.runs)


def _chart(screen: CompareScreen, number: int) -> CompareChart:
    return screen.query_one(f"#compare-{number}", CompareChart)


@pytest.mark.asyncio
async def test_keys_group_band_axis_smoothing_pages_zoom_log_and_leave(tmp_path):
    app = RlTuiApp(compare=_runs(tmp_path / "saves"), refresh_hz=20)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        await _until(pilot, lambda: _loaded(screen), what="the logs")
        await pilot.pause(0.2)
        # Every series of the two dashboards but the evaluation-mode episodes, which no run has.
        await _shows(pilot, app, "compare 3 runs · x: env steps · ema 0.6 · metrics 1-4 of 14")
        assert MANUAL_RETURN not in [m.name for m in screen.metrics]
        for name in ("tiny-mpo-s0", "tiny-mpo-s1", "tiny-trpo-s0 (failed)"):
            await _shows(pilot, app, name)
        evals = _chart(screen, 1)
        assert evals.metric_title == "Returns: eval" and len(evals.curves) == 3
        assert screen.check_action("toggle_band", ()) is None  # greyed out until grouped

        await pilot.press("g")
        await pilot.pause(0.1)
        await _shows(pilot, app, "mean per group of seeds, band min–max")
        await _shows(pilot, app, "tiny-mpo (2 runs)")
        assert [c.key for c in evals.curves] == ["tiny-mpo", "tiny-trpo"]
        trpo_run = next(r.run for r in screen.runs if r.run.group == "tiny-trpo")
        assert screen.group_styles["tiny-trpo"] == screen.run_styles[trpo_run.key]  # a group of one: its run's look
        mpo_mean = evals.curves[0]
        # The recorded evaluations of seeds 0 and 1 are a known curve: the mean at each step is theirs.
        steps = mpo_mean.x
        expected = [(curve("mpo", s, 0) + curve("mpo", s, 1)) / 2 for s in (1000.0, 4000.0)]
        np.testing.assert_allclose([mpo_mean.y[0], mpo_mean.y[-1]], expected)
        assert (steps[0], steps[-1]) == (1000.0, 4000.0)
        np.testing.assert_allclose(mpo_mean.hi[-1] - mpo_mean.lo[-1], abs(curve("mpo", 4000, 0) - curve("mpo", 4000, 1)))
        await pilot.press("b")
        await pilot.pause(0.1)
        await _shows(pilot, app, "band ±std")

        await pilot.press("x")
        await pilot.pause(0.1)
        await _shows(pilot, app, "x: running time")
        # MPO is recorded at 50 steps/s: 4000 steps end 80 s after the start, TRPO's 3000 at 15 s.
        assert evals.curves[0].x[-1] == pytest.approx(80.0)
        await _shows(pilot, app, "1:20")
        await pilot.press("g", "x")

        await pilot.press("s")
        await pilot.pause(0.1)
        await _shows(pilot, app, "ema 0.9")
        await pilot.press("right_square_bracket")
        await pilot.pause(0.1)
        await _shows(pilot, app, "metrics 5-8 of 14")
        await pilot.press("right_square_bracket", "right_square_bracket", "right_square_bracket")
        await pilot.pause(0.1)
        await _shows(pilot, app, "metrics 1-4 of 14")  # round again

        await pilot.press("3")
        await pilot.pause(0.1)
        assert [c.display for c in screen.charts()] == [False, False, True, False]
        assert screen.has_class("-zoomed")
        log_before = _chart(screen, 3).log_y
        await pilot.press("l")
        await pilot.pause(0.1)
        assert _chart(screen, 3).log_y is not log_before
        await pilot.press("3")
        await pilot.pause(0.1)
        assert all(c.display for c in screen.charts())
        await pilot.press("q")
        await _until(pilot, lambda: not app.is_running, what="the app to leave")


@pytest.mark.asyncio
async def test_a_growing_log_keeps_moving_and_nothing_is_redrawn_without_new_data(tmp_path):
    run_dir = tmp_path / "saves" / "growing"
    run_dir.mkdir(parents=True)
    events = recorded_events(run_dir, "mpo", 0, steps=4000, total_steps=4000, end=RunState.FINISHED,
                             name="growing")
    half = next(i for i, e in enumerate(events) if e.step > 2000)
    writer = RunLogWriter(run_dir / "metrics.jsonl")
    for event in events[:half]:
        writer(event)
    app = RlTuiApp(compare=[ComparedRun(run_dir, "growing")], refresh_hz=20)
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            screen = app.screen
            train = _chart(screen, 2)
            await _until(pilot, lambda: len(train.curves) == 1 and train.curves[0].x[-1] >= 2000, what="first half")
            assert train.curves[0].x[-1] < 2100
            token = train._content_token
            await pilot.pause(0.5)  # ten refreshes, nothing new
            assert train._content_token == token
            for event in events[half:]:
                writer(event)
            await _until(pilot, lambda: train.curves[0].x[-1] == 4000, what="the second half")
            assert screen.runs[0].history.status().state is RunState.FINISHED
            await pilot.press("q")
    finally:
        writer.close()


def test_compare_refuses_what_is_not_a_run_with_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    result = rltui("compare", "nowhere", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (2, "error: nowhere: no such directory (expected a run directory)\n")
    result = rltui("compare", "empty", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (
        2, "error: empty: no metrics.jsonl (expected a run directory made by `rltui train`)\n")
    result = rltui("compare", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: the following arguments are required: RUN_DIR")


# ---- snapshots ----------------------------------------------------------------------------------
def _snapshot_app(tmp_path: Path) -> RlTuiApp:
    saves = tmp_path / "saves"
    runs = _runs(saves)
    runs.append(ComparedRun(record_run(saves, "tiny-mpo-s2", "mpo", 2, steps=2500, total_steps=4000, end=None),
                            "tiny-mpo-s2", "tiny-mpo"))
    return RlTuiApp(compare=runs, refresh_hz=4)


async def _snapshot_ready(pilot) -> None:
    screen = pilot.app.screen
    await _until(pilot, lambda: all(run.history.status().step >= 2500 for run in screen.runs), what="the logs")
    screen.pull()
    await pilot.pause()


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
def test_compare_snapshot(snap_compare, tmp_path, size):
    assert snap_compare(_snapshot_app(tmp_path), terminal_size=size, run_before=_snapshot_ready)


def test_compare_grouped_snapshot_160x48(snap_compare, tmp_path):
    assert snap_compare(_snapshot_app(tmp_path), terminal_size=(160, 48), run_before=_snapshot_ready, press=["g"])


def test_compare_no_color_snapshot_80x24(snap_compare, tmp_path, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    assert snap_compare(_snapshot_app(tmp_path), terminal_size=(80, 24), run_before=_snapshot_ready)
