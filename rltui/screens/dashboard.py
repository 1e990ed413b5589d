"""The run dashboard: status line, four live charts, latest metrics, event log, control keys.

The screen never receives anything from the training thread. A timer (`refresh_hz`) pulls
snapshots from the MetricsHistory and, inside one batch update, redraws only the charts whose
series changed. Control keys call the engine's thread-safe methods; with no engine (watch mode)
they are greyed out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any, Protocol

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, Grid
from textual.screen import Screen
from textual.widgets import Footer

from rltui.commands import Checkpoint, Command, Pause, Reply, Resume, SetEvalMode
from rltui.events import RunState
from rltui.history import EVAL_RETURN, TRAIN_RETURN, MetricsHistory
from rltui.screens.help import HelpScreen
from rltui.widgets.event_log import EventLog
from rltui.widgets.inspect_chart import InspectChart
from rltui.widgets.line_chart import ChartSpec, LineChart, ReferenceLine, SeriesSpec
from rltui.widgets.metrics_table import MetricsTable
from rltui.widgets.status_bar import StatusBar

SMOOTHING_STEPS = (0.0, 0.6, 0.9, 0.99)
DEFAULT_SMOOTHING = 0.6
CONTROL_ACTIONS = {"pause", "resume", "checkpoint", "toggle_eval"}


class RunControl(Protocol):
    """The part of the Engine API the dashboard uses to control a run."""

    state: RunState

    def submit(self, command: Command) -> Future[Reply]: ...


def _refs(settings: Mapping[str, Any], *pairs: tuple[str, str]) -> tuple[ReferenceLine, ...]:
    refs = []
    for key, label in pairs:
        value = settings.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            refs.append(ReferenceLine(label, float(value)))
    return tuple(refs)


def chart_specs(algo: str, settings: Mapping[str, Any]) -> list[ChartSpec]:
    """The four charts for `algo` ("mpo" or "trpo"); `settings` is the preset's agent table."""
    returns = ChartSpec(
        "Returns",
        (SeriesSpec(TRAIN_RETURN, "train", band=True), SeriesSpec(EVAL_RETURN, "eval", "second", smooth=False)),
    )
    if algo.lower() == "mpo":
        return [
            returns,
            ChartSpec(
                "KL",
                (
                    SeriesSpec("kl/nonparametric", "E-step"),
                    SeriesSpec("kl/mean", "mean", "second"),
                    SeriesSpec("kl/std", "std", "third"),
                ),
                _refs(settings, ("kl_epsilon", "ε"), ("mstep_kl_epsilon", "ε_m")),
                log_y=True,
            ),
            ChartSpec(
                "Duals",
                (
                    SeriesSpec("dual/temperature", "η"),
                    SeriesSpec("dual/alpha_mean", "α_μ", "second"),
                    SeriesSpec("dual/alpha_std", "α_σ", "third"),
                ),
                log_y=True,
            ),
            ChartSpec("Critic loss", (SeriesSpec("loss/q", "loss/q", band=True),)),
        ]
    if algo.lower() == "trpo":
        return [
            returns,
            ChartSpec("KL", (SeriesSpec("policy/kl", "kl"),), _refs(settings, ("target_kl", "δ"))),
            ChartSpec(
                "Line search",
                (SeriesSpec("policy/line_search_frac", "frac"), SeriesSpec("policy/step_norm", "|step|", "second")),
            ),
            # Log scale so the explained variance (<= 1) stays readable beside the value loss.
            ChartSpec(
                "Value",
                (SeriesSpec("loss/value", "loss", band=True), SeriesSpec("value/explained_variance", "EV", "second")),
                log_y=True,
            ),
        ]
    return [returns]


class DashboardScreen(Screen[None]):
    """Live (engine given) or read-only (engine None) view of one run."""

    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (36, "-tall")]

    BINDINGS = [
        # One key, two bindings: the Footer shows "Pause" or "Resume", whichever applies.
        Binding("p", "pause", "Pause"),
        Binding("p", "resume", "Resume"),
        Binding("space", "pause", "Pause", show=False),
        Binding("space", "resume", "Resume", show=False),
        Binding("c", "checkpoint", "Ckpt"),
        Binding("e", "toggle_eval", "Eval"),
        Binding("s", "cycle_smoothing", "Smooth"),
        Binding("l", "toggle_log", "Log-y"),
        Binding("1", "maximise(1)", "Zoom"),
        Binding("2", "maximise(2)", "Zoom 2", show=False),
        Binding("3", "maximise(3)", "Zoom 3", show=False),
        Binding("4", "maximise(4)", "Zoom 4", show=False),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit_run", "Quit"),
    ]

    def __init__(
        self,
        history: MetricsHistory,
        *,
        engine: RunControl | None,
        algo: str | None = None,
        agent_settings: Mapping[str, Any] | None = None,
        refresh_hz: float = 4.0,
        clock: Callable[[], float] | None = None,
        on_quit: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self.history = history
        self.engine = engine
        self.read_only = engine is None
        self._algo = algo
        self._settings = dict(agent_settings or {})
        self.refresh_hz = refresh_hz
        self._clock = clock
        self._on_quit = on_quit
        self.smoothing = DEFAULT_SMOOTHING
        self.eval_mode = False
        self.stopping = False
        self.maximised: int | None = None
        self._configured: str | None = None  # the algo the charts are set up for
        self._state: RunState | None = None
        self._seen: dict[int, tuple[int, ...]] = {}

    # ---- layout -----------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield StatusBar(self._clock, read_only=self.read_only, id="status")
        with Container(id="body"):
            with Grid(id="charts"):
                for n in range(1, 5):
                    yield LineChart(n, id=f"chart-{n}")
            yield InspectChart(id="inspect")
            with Container(id="side"):
                yield MetricsTable(id="metrics")
                yield EventLog(id="log")
        yield Footer()

    def on_mount(self) -> None:
        for chart in self.query(LineChart):
            chart.set_smoothing(self.smoothing)
        self.pull()
        self.set_interval(1.0 / self.refresh_hz, self.pull)
        self.query_one("#chart-1", LineChart).focus()

    def charts(self) -> list[LineChart]:
        return [self.query_one(f"#chart-{n}", LineChart) for n in range(1, 5)]

    def _configure(self, algo: str) -> None:
        specs = chart_specs(algo, self._settings)
        for chart, spec in zip(self.charts(), specs, strict=True):
            chart.set_spec(spec)
        self._configured = algo
        self._seen.clear()

    # ---- the refresh timer ------------------------------------------------------------------
    def pull(self) -> None:
        """Copy what changed from the history into the widgets (one repaint)."""
        history = self.history
        status = history.status()
        with self.app.batch_update():
            algo = self._algo or (status.info.algo if status.info else None)
            if algo and algo != self._configured:  # a watched log may be replaced by another run's
                self._configure(algo)
            extra = "stopping…" if self.stopping and not status.state.is_final else ""
            self.query_one(StatusBar).show(status, extra)
            for chart in self.charts():
                self._update_chart(chart)
            self.query_one(MetricsTable).show(*history.latest())
            log = self.query_one(EventLog)
            log.show(history.log_since(log.next_index))
        state = self.run_state()
        if state != self._state:
            if state is RunState.FAILED and self._state is not None:
                self.notify(status.message or "training failed", title="Run failed", severity="error")
            self._state = state
            self.eval_mode = state is RunState.EVALUATING or (self.eval_mode and not state.is_final)
            self.refresh_bindings()

    def _update_chart(self, chart: LineChart) -> None:
        spec = chart.spec
        if spec is None:
            return
        versions = tuple(self.history.series_version(s.name) for s in spec.series)
        if self._seen.get(chart.number) == versions:
            return
        self._seen[chart.number] = versions
        chart.update_data({s.name: self.history.series(s.name) for s in spec.series})
        if self.maximised == chart.number:
            self._show_inspect(chart)

    def _show_inspect(self, chart: LineChart) -> None:
        if chart.spec is not None:
            self.query_one(InspectChart).show(chart.spec, chart.data, chart.smoothing, chart.log_y)

    def run_state(self) -> RunState:
        """The engine's own state (freshest), unless the run ended: then what the history says.

        An engine whose run() raised never reports FAILED itself; the app records it in the history.
        """
        recorded = self.history.status().state
        if self.engine is None or recorded.is_final:
            return recorded
        return self.engine.state

    # ---- keys -------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in CONTROL_ACTIONS:
            if self.engine is None or self.stopping:
                return False if action == "resume" else None
            state = self.run_state()
            if action == "pause":  # hidden while paused (Resume shows instead), grey otherwise
                return True if state is RunState.RUNNING else (False if state is RunState.PAUSED else None)
            if action == "resume":
                return True if state is RunState.PAUSED else False
            return True if state in (RunState.RUNNING, RunState.PAUSED, RunState.EVALUATING) else None
        if action == "toggle_log":
            return True if self._log_target() is not None else None
        return True

    def action_pause(self) -> None:
        assert self.engine is not None
        self.engine.submit(Pause())  # the footer flips to Resume once the engine reports PAUSED

    def action_resume(self) -> None:
        assert self.engine is not None
        self.engine.submit(Resume())

    def action_checkpoint(self) -> None:
        assert self.engine is not None
        self.engine.submit(Checkpoint())
        self.notify("checkpoint requested", timeout=2)

    def action_toggle_eval(self) -> None:
        assert self.engine is not None
        self.eval_mode = not self.eval_mode
        self.engine.submit(SetEvalMode(self.eval_mode))
        self.notify("deterministic evaluation mode " + ("on" if self.eval_mode else "off"), timeout=2)

    def action_cycle_smoothing(self) -> None:
        i = SMOOTHING_STEPS.index(self.smoothing) if self.smoothing in SMOOTHING_STEPS else 0
        self.smoothing = SMOOTHING_STEPS[(i + 1) % len(SMOOTHING_STEPS)]
        for chart in self.charts():
            chart.set_smoothing(self.smoothing)
        self._refresh_inspect()

    def _log_target(self) -> LineChart | None:
        if self.maximised is not None:
            return self.query_one(f"#chart-{self.maximised}", LineChart)
        focused = self.focused
        return focused if isinstance(focused, LineChart) and focused.spec is not None else None

    def action_toggle_log(self) -> None:
        chart = self._log_target()
        if chart is not None:
            chart.toggle_log()
            self._refresh_inspect()

    def _refresh_inspect(self) -> None:
        if self.maximised is not None:
            self._show_inspect(self.query_one(f"#chart-{self.maximised}", LineChart))

    def action_maximise(self, number: int) -> None:
        if self.maximised == number:
            self.maximised = None
            self.remove_class("-maximised")
            self.query_one(f"#chart-{number}", LineChart).focus()
        else:
            self.maximised = number
            self.add_class("-maximised")
            self._refresh_inspect()
        self.refresh_bindings()

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(read_only=self.read_only))

    def action_quit_run(self) -> None:
        """Stop the run with a final checkpoint, then leave (a second `q` leaves at once)."""
        live = self.engine is not None and not self.run_state().is_final
        if not live or self.stopping or self._on_quit is None:
            self.app.exit()
            return
        self.stopping = True
        self.notify("stopping: writing a final checkpoint… (q again to leave now)", timeout=10)
        self.refresh_bindings()
        self._on_quit()
