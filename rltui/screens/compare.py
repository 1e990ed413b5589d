"""The compare view (`rltui compare RUN_DIR...`, or `c` in the runs browser): the dashboard's
charts for several runs at once.

Each run's metrics.jsonl is followed on one thread worker into a MetricsHistory and a RunClock of
its own (`rltui.comparison.FollowedRun`), so live runs keep moving; a timer pulls at the refresh
rate and redraws only the charts whose series (or options) changed. Every series of the
dashboard's charts is a chart here, four at a time (`[`/`]` page through them). Each run keeps one
colour and one marker glyph (from its directory's name, not its position), shown in the legend.
`g` draws the mean of each group (runs differing only by their seed) with a band, `b` switches
that band between min-max and ±std, `x` switches the x axis between env steps and running time.

What `q` means is the app's business: the screen posts `LeaveRequested` (back to the runs
browser, or leave the app).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual.worker import get_current_worker

from rltui.comparison import (
    Band,
    ComparedMetric,
    ComparedRun,
    Curve,
    FollowedRun,
    RunStyle,
    XAxis,
    assign_styles,
    compared_metrics,
    group_curve,
    run_curve,
)
from rltui.events import RunState
from rltui.screens.dashboard import DEFAULT_SMOOTHING, SMOOTHING_STEPS
from rltui.screens.help import HelpScreen, help_rows
from rltui.widgets.compare_chart import CompareChart
from rltui.widgets.run_legend import LegendEntry, RunLegend

CHARTS = 4
FOLLOW_POLL_MAX_S = 1.0  # each log is polled at least this often, whatever the refresh rate
ZOOM_HELP = "maximise a chart; again to restore"
HELP_FOOT = ("Each run keeps its colour and marker. Grouped: a line is the mean of a group's runs over the x "
             "range they all cover, the stippled band their min-max or ±std. Esc closes.")


class CompareScreen(Screen[None]):
    """Several runs' charts overlaid; `runs` are followed from their logs until the screen goes."""

    CSS_PATH = "compare.tcss"
    BINDINGS = [
        Binding("g", "toggle_group", "Group", tooltip="mean of each group of seeds (runs differing only by their "
                                                      "seed) with a band; again for each run"),
        Binding("b", "toggle_band", "Band", tooltip="the groups' band: min-max or mean ± std"),
        Binding("x", "toggle_x", "X axis", tooltip="x axis: env steps or running time since the run started"),
        Binding("s", "cycle_smoothing", "Smooth", tooltip="cycle smoothing (EMA 0, 0.6, 0.9, 0.99)"),
        Binding("l", "toggle_log", "Log", tooltip="log scale on the focused chart"),
        Binding("right_square_bracket", "page(1)", "More", tooltip="next or previous four metrics"),
        Binding("left_square_bracket", "page(-1)", "Back", show=False, tooltip="next or previous four metrics"),
        Binding("1", "zoom(1)", "Zoom", tooltip=ZOOM_HELP),
        Binding("2", "zoom(2)", "Zoom 2", show=False, tooltip=ZOOM_HELP),
        Binding("3", "zoom(3)", "Zoom 3", show=False, tooltip=ZOOM_HELP),
        Binding("4", "zoom(4)", "Zoom 4", show=False, tooltip=ZOOM_HELP),
        Binding("tab", "app.focus_next", "Focus", show=False, tooltip="move focus between charts"),
        Binding("question_mark", "help", "Help", tooltip="this help"),
        Binding("q", "leave", "Back", tooltip="leave the compare view (the runs go on)"),
        Binding("escape", "leave", "Back", show=False, tooltip="leave the compare view (the runs go on)"),
    ]

    class LeaveRequested(Message):
        """`q`: the app goes back to where the view was opened from, or leaves."""

    grouped: reactive[bool] = reactive(False, bindings=True, init=False)
    band: reactive[Band] = reactive(Band.MIN_MAX, bindings=True, init=False)
    x_axis: reactive[XAxis] = reactive(XAxis.STEPS, init=False)
    smoothing: reactive[float] = reactive(DEFAULT_SMOOTHING, init=False)
    page: reactive[int] = reactive(0, bindings=True, init=False)
    zoomed: reactive[int | None] = reactive(None, toggle_class="-zoomed", init=False)

    def __init__(self, runs: Sequence[ComparedRun], *, refresh_hz: float = 4.0) -> None:
        super().__init__()
        self.runs = [FollowedRun(run) for run in runs]
        self.refresh_hz = refresh_hz
        self.metrics: list[ComparedMetric] = []
        self.log_y: dict[str, bool] = {}  # the user's scale per metric, kept across pages
        self._metrics_key: tuple[Any, ...] | None = None
        self._drawn: dict[int, tuple[Any, ...]] = {}  # chart number -> what it shows
        self._legend_key: tuple[Any, ...] | None = None
        self._title = ""
        self._stop_following = threading.Event()
        self.run_styles = assign_styles(run.run.key for run in self.runs)
        self.group_styles = self._group_styles()

    def _group_styles(self) -> dict[str, RunStyle]:
        """Each group's look: a group of one run looks like that run (it is the same line)."""
        members: dict[str, list[str]] = {}
        for run in self.runs:
            members.setdefault(self._group_of(run.run), []).append(run.run.key)
        style_keys = {group: keys[0] if len(keys) == 1 else group for group, keys in members.items()}
        styles = assign_styles(style_keys.values())
        return {group: styles[key] for group, key in style_keys.items()}

    @staticmethod
    def _group_of(run: ComparedRun) -> str:
        """A run's group key; a run without a group is a group of its own."""
        return run.group or run.key

    # ---- layout -----------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(id="compare-title")
        yield RunLegend(id="compare-legend")
        with Grid(id="compare-charts"):
            for n in range(1, CHARTS + 1):
                yield CompareChart(n, id=f"compare-{n}")
        yield Footer()

    def on_mount(self) -> None:
        self._follow()
        self.pull()
        self.set_interval(1.0 / self.refresh_hz, self.pull)
        self.charts()[0].focus()

    def on_unmount(self) -> None:
        self._stop_following.set()

    def charts(self) -> list[CompareChart]:
        return list(self.query(CompareChart))

    @work(thread=True, group="compare-follow", exit_on_error=False)
    def _follow(self) -> None:
        """Poll every run's log until the screen goes. Nothing read from a file may stop this loop."""
        worker = get_current_worker()
        interval = min(1.0 / self.refresh_hz, FOLLOW_POLL_MAX_S)
        failures: dict[str, str] = {}
        try:
            while not worker.is_cancelled and not self._stop_following.is_set():
                caught_up = True
                for run in self.runs:
                    try:
                        caught_up = run.poll() and caught_up
                    except Exception as exc:  # noqa: BLE001 - a bug must not freeze the view: say it, go on
                        failure = f"compare: {type(exc).__name__}: {exc}"
                        if failures.get(run.run.key) != failure:
                            run.history.note("error", failure + " (following goes on)")
                        failures[run.run.key] = failure
                if caught_up:
                    self._stop_following.wait(interval)
        finally:
            for run in self.runs:
                run.close()

    # ---- the refresh timer ------------------------------------------------------------------
    def pull(self) -> None:
        """Redraw what changed since the last pull: the metric list, the legend, each chart."""
        self._update_metrics()
        with self.app.batch_update():
            self._update_title()
            self._update_legend()
            for chart in self.charts():
                self._update_chart(chart)

    def _update_metrics(self) -> None:
        """The charts: those of the dashboards of the runs' algorithms that some run has data for."""
        infos = [run.history.status().info for run in self.runs]
        settings = [(info.algo, dict(info.agent_settings)) for info in infos if info is not None]
        available = frozenset(name for run in self.runs for name in run.history.series_names())
        key = (tuple((algo, tuple(sorted((k, repr(v)) for k, v in s.items()))) for algo, s in settings), available)
        if key != self._metrics_key:
            self._metrics_key = key
            self.metrics = [metric for metric in compared_metrics(settings) if metric.name in available]
            self.page = min(self.page, self.pages() - 1)
            self._drawn.clear()
            self.refresh_bindings()  # paging and the log scale depend on the metrics

    def pages(self) -> int:
        return max(1, -(-len(self.metrics) // CHARTS))

    def metric_of(self, chart: CompareChart) -> ComparedMetric | None:
        index = self.page * CHARTS + chart.number - 1
        return self.metrics[index] if index < len(self.metrics) else None

    def _update_title(self) -> None:
        runs = len(self.runs)
        parts = [f"compare {runs} run{'s' * (runs != 1)}", f"x: {self.x_axis.value}"]
        if self.smoothing > 0:
            parts.append(f"ema {self.smoothing:g}")
        if self.metrics:
            first = self.page * CHARTS + 1
            last = min(first + CHARTS - 1, len(self.metrics))
            parts.append(f"metrics {first}-{last} of {len(self.metrics)}")
        else:
            parts.append("waiting for the runs' logs…")
        title = " · ".join(parts)
        if title != self._title:
            self._title = title
            self.query_one("#compare-title", Static).update(title)

    def _update_legend(self) -> None:
        states = tuple(run.history.status().state for run in self.runs)
        key = (self.grouped, self.band, states)
        if key == self._legend_key:
            return
        self._legend_key = key
        heading = Text(f"mean per group of seeds, band {self.band.value}:", "bold") if self.grouped else None
        self.query_one(RunLegend).show(heading, self._legend_entries(states))

    def _legend_entries(self, states: tuple[RunState, ...]) -> list[LegendEntry]:
        if not self.grouped:
            return [LegendEntry(run.run.name, self.run_styles[run.run.key],
                                "(failed)" if state is RunState.FAILED else "")
                    for run, state in zip(self.runs, states, strict=True)]
        members: dict[str, list[str]] = {}
        for run in self.runs:
            members.setdefault(self._group_of(run.run), []).append(run.run.name)
        return [LegendEntry(names[0] if len(names) == 1 else group, self.group_styles[group],
                            f"({len(names)} run{'s' * (len(names) != 1)})") for group, names in members.items()]

    def _update_chart(self, chart: CompareChart) -> None:
        metric = self.metric_of(chart)
        chart.display = metric is not None and (self.zoomed is None or self.zoomed == chart.number)
        if metric is None:
            self._drawn.pop(chart.number, None)
            return
        log_y = self.log_y.get(metric.name, metric.log_y)
        smoothing = self.smoothing if metric.smooth else 0.0
        timed = self.x_axis is XAxis.TIME
        versions = tuple((run.history.series_version(metric.name), run.clock.version if timed else 0)
                         for run in self.runs)
        drawn = (metric, log_y, smoothing, self.x_axis, self.grouped, self.band, versions)
        if self._drawn.get(chart.number) == drawn:
            return
        self._drawn[chart.number] = drawn
        curves, styles = self._curves(metric, smoothing)
        flags = " ".join(flag for flag, on in (("log", log_y), (f"ema {smoothing:g}", smoothing > 0)) if on)
        chart.show(metric.title, curves, styles, metric.references, log_y=log_y, x_axis=self.x_axis, flags=flags)

    def _curves(self, metric: ComparedMetric, smoothing: float) -> tuple[list[Curve], dict[str, RunStyle]]:
        """Every run's curve of `metric`, or the mean of each group's."""
        per_run: list[tuple[FollowedRun, Curve]] = []
        for run in self.runs:
            seconds_at = run.clock.seconds_at if self.x_axis is XAxis.TIME else None
            curve = run_curve(run.run.key, run.run.name, run.history.series(metric.name), smoothing, seconds_at)
            if curve is not None:
                per_run.append((run, curve))
        if not self.grouped:
            return [curve for _, curve in per_run], self.run_styles
        members: dict[str, list[Curve]] = {}
        for run, curve in per_run:
            members.setdefault(self._group_of(run.run), []).append(curve)
        grouped = [group_curve(group, group, curves, self.band) for group, curves in members.items()]
        return [curve for curve in grouped if curve is not None], self.group_styles

    # ---- keys -------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "zoom":  # a chart with nothing to show on this page cannot be maximised
            index = self.page * CHARTS + int(str(parameters[0])) - 1 if parameters else 0
            return True if index < len(self.metrics) else None
        if action == "toggle_band":
            return True if self.grouped else None
        if action == "page":
            return True if self.pages() > 1 else None
        if action == "toggle_log":
            return True if self._log_target() is not None else None
        return True

    def action_toggle_group(self) -> None:
        self.grouped = not self.grouped

    def action_toggle_band(self) -> None:
        self.band = Band.STD if self.band is Band.MIN_MAX else Band.MIN_MAX

    def action_toggle_x(self) -> None:
        self.x_axis = XAxis.TIME if self.x_axis is XAxis.STEPS else XAxis.STEPS

    def action_cycle_smoothing(self) -> None:
        i = SMOOTHING_STEPS.index(self.smoothing) if self.smoothing in SMOOTHING_STEPS else 0
        self.smoothing = SMOOTHING_STEPS[(i + 1) % len(SMOOTHING_STEPS)]

    def action_page(self, delta: int) -> None:
        self.page = (self.page + delta) % self.pages()
        self.zoomed = None

    def _log_target(self) -> CompareChart | None:
        focused = self.focused
        if self.zoomed is not None:
            return self.query_one(f"#compare-{self.zoomed}", CompareChart)
        return focused if isinstance(focused, CompareChart) and self.metric_of(focused) is not None else None

    def action_toggle_log(self) -> None:
        chart = self._log_target()
        metric = self.metric_of(chart) if chart is not None else None
        if metric is not None:
            self.log_y[metric.name] = not self.log_y.get(metric.name, metric.log_y)
            self.pull()

    def action_zoom(self, number: int) -> None:
        self.zoomed = None if self.zoomed == number else number

    def watch_zoomed(self, number: int | None) -> None:
        self.pull()
        self.query_one(f"#compare-{number or 1}", CompareChart).focus()

    def _watch_option(self) -> None:
        if self.is_mounted:
            self.pull()

    watch_grouped = watch_band = watch_x_axis = watch_smoothing = watch_page = _watch_option

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(help_rows(self.BINDINGS, self.app.get_key_display),
                                        title="compare keys", foot=HELP_FOOT))

    def action_leave(self) -> None:
        self.post_message(self.LeaveRequested())
