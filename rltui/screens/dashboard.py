"""The run dashboard: status line, four live charts, latest metrics, event log, control keys.

The screen never receives anything from the training thread. A timer (`refresh_hz`) pulls
snapshots from the MetricsHistory and, inside one batch update, redraws only the charts whose
series changed; the charts' reference lines (KL bounds) come from the run's `RunStarted` event,
so a live run, a resumed one and a watched log are drawn the same way.

Control keys submit typed commands (`rltui.commands`) to a `RunControl`: anything with a `state`
and a thread-safe `submit()` returning a future of the `Reply` (the Engine, or later a client of
a run's control socket). With no RunControl (watch mode) they are greyed out. What `q` means is
not the screen's business: it posts `QuitRequested` and the app decides (stop the run, or leave).

Conventions: data comes down as reactive attributes (`run_state`, `eval_mode`, `stopping`,
`maximised`, declared with `bindings=True` so the footer follows them, and read by
`check_action`); requests go up as messages.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Protocol

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, Grid
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer

from rltui.commands import Checkpoint, Command, Pause, Reply, Resume, SetEvalMode
from rltui.events import RunState
from rltui.history import EVAL_RETURN, MANUAL_RETURN, TRAIN_RETURN, MetricsHistory, StatusSnapshot
from rltui.screens.help import HelpScreen, help_rows
from rltui.widgets.event_log import EventLog
from rltui.widgets.inspect_chart import InspectChart
from rltui.widgets.line_chart import ChartSpec, LineChart, ReferenceLine, SeriesSpec, format_value
from rltui.widgets.metrics_table import MetricsTable
from rltui.widgets.status_bar import StatusBar

SMOOTHING_STEPS = (0.0, 0.6, 0.9, 0.99)
DEFAULT_SMOOTHING = 0.6
CONTROL_ACTIONS = {"pause", "resume", "checkpoint", "toggle_eval"}
LIVE_STATES = (RunState.RUNNING, RunState.PAUSED, RunState.EVALUATING)
LEAVING_ACTIONS = {"quit_run", "detach", "stop_run"}
WIDE_LAYOUT_COLUMNS = 160  # from this width the table and log sit right of the charts
PAUSE_HELP = "pause or resume training"
ZOOM_HELP = "maximise a chart (plotext view); again to restore"


class RunControl(Protocol):
    """What the dashboard needs to control a run: its state and a way to send it commands.

    `submit` must be thread-safe and must not block; the future resolves (on any thread) once
    the command took effect or was refused. rltui.engine.Engine is one; a client of a run's
    control socket can be another.
    """

    @property
    def state(self) -> RunState: ...

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
        (SeriesSpec(TRAIN_RETURN, "train", band=True, short="tr"),
         SeriesSpec(EVAL_RETURN, "eval", "second", smooth=False, short="ev"),
         SeriesSpec(MANUAL_RETURN, "manual", "third", smooth=False, band=True, short="man")),
    )
    if algo.lower() == "mpo":
        return [
            returns,
            ChartSpec(
                "KL",
                (
                    SeriesSpec("kl/nonparametric", "E-step", short="E"),
                    SeriesSpec("kl/mean", "mean", "second", short="μ"),
                    SeriesSpec("kl/std", "std", "third", short="σ"),
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
            ChartSpec("Critic loss", (SeriesSpec("loss/q", "loss/q", band=True, short="q"),)),
        ]
    if algo.lower() == "trpo":
        return [
            returns,
            ChartSpec("KL", (SeriesSpec("policy/kl", "kl"),), _refs(settings, ("target_kl", "δ"))),
            ChartSpec(
                "Line search",
                (SeriesSpec("policy/line_search_frac", "frac", short="fr"),
                 SeriesSpec("policy/step_norm", "|step|", "second", short="|s|")),
            ),
            # Log scale so the explained variance (<= 1) stays readable beside the value loss
            # (a symmetric log once the explained variance is negative).
            ChartSpec(
                "Value",
                (SeriesSpec("loss/value", "loss", band=True, short="L"),
                 SeriesSpec("value/explained_variance", "EV", "second")),
                log_y=True,
            ),
        ]
    return [returns]


class DashboardScreen(Screen[None]):
    """Live (with a RunControl) or read-only (control None) view of one run's MetricsHistory."""

    # Side by side only where the charts keep more room than stacked (see app.tcss).
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (WIDE_LAYOUT_COLUMNS, "-wide")]

    # The help screen lists these, with their tooltips, so every key is described here once.
    BINDINGS = [
        # One key, two bindings: the Footer shows "Pause" or "Resume", whichever applies.
        Binding("p", "pause", "Pause", tooltip=PAUSE_HELP),
        Binding("p", "resume", "Resume", tooltip=PAUSE_HELP),
        Binding("space", "pause", "Pause", show=False, tooltip=PAUSE_HELP),
        Binding("space", "resume", "Resume", show=False, tooltip=PAUSE_HELP),
        Binding("c", "checkpoint", "Ckpt", tooltip="save a checkpoint now"),
        Binding("e", "toggle_eval", "Eval", tooltip="deterministic evaluation mode on/off"),
        Binding("v", "view_agent", "Agent", tooltip="watch the agent live (evaluation mode, drawn here)"),
        Binding("s", "cycle_smoothing", "Smooth", tooltip="cycle smoothing (EMA 0, 0.6, 0.9, 0.99)"),
        Binding("l", "toggle_log", "Log", tooltip="log scale on the focused chart"),
        # Not in the footer: at 80 columns it would push `q Quit` out (the chart titles start with
        # their key, and `?` lists it).
        Binding("1", "maximise(1)", "Zoom", show=False, tooltip=ZOOM_HELP),
        Binding("2", "maximise(2)", "Zoom 2", show=False, tooltip=ZOOM_HELP),
        Binding("3", "maximise(3)", "Zoom 3", show=False, tooltip=ZOOM_HELP),
        Binding("4", "maximise(4)", "Zoom 4", show=False, tooltip=ZOOM_HELP),
        Binding("tab", "app.focus_next", "Focus", show=False, tooltip="move focus between charts, table and log"),
        Binding("i", "info", "Info", tooltip="run information (run.json): git, host, command"),
        Binding("question_mark", "help", "Help", tooltip="this help"),
        Binding("q", "quit_run", "Quit", tooltip="quit (stops training with a final checkpoint)"),
        # An attached dashboard (`rltui attach`): `q` leaves the run going, `Q` stops it.
        Binding("q", "detach", "Detach", tooltip="leave; the run goes on"),
        Binding("Q", "stop_run", "Stop run", tooltip="stop the run (final checkpoint), after a y/n"),
    ]

    class QuitRequested(Message):
        """The user asked to leave (`q`); the app decides what that does to the run."""

    class StopRequested(Message):
        """The user asked to stop an attached run (`Q`); the app asks for a confirmation first."""

    # Set by pull() from the RunControl (or the history): what the run is doing now.
    run_state: reactive[RunState | None] = reactive(None, repaint=False, bindings=True)
    # Evaluation mode as asked for; follows the run's state once no SetEvalMode is on its way.
    eval_mode: reactive[bool] = reactive(False, repaint=False, bindings=True)
    # Set by the app: a stop was asked for (controls grey out, the status line says so).
    stopping: reactive[bool] = reactive(False, repaint=False, bindings=True)
    # Set by the app once the run's engine has returned: from then on the history has the last word.
    run_ended: reactive[bool] = reactive(False, repaint=False, bindings=True)
    maximised: reactive[int | None] = reactive(None, repaint=False, bindings=True, toggle_class="-maximised")
    smoothing: reactive[float] = reactive(DEFAULT_SMOOTHING, repaint=False, init=False)

    def __init__(
        self,
        history: MetricsHistory,
        *,
        control: RunControl | None,
        algo: str | None = None,
        refresh_hz: float = 4.0,
        clock: Callable[[], float] | None = None,
        attached: bool = False,
        run_dir: Path | None = None,
    ) -> None:
        """`algo` draws the right charts before the run's first event says which algorithm it is;
        `attached`: the run belongs to another process (`q` detaches, `Q` stops it); `run_dir`: the
        run directory as this process reaches it, which `i` reads (a run may have been copied or
        moved since its log named its directory; None: the directory the log names)."""
        super().__init__()
        self.history = history
        self.control = control
        self.run_dir = run_dir
        self.attached = attached
        self._algo = algo
        self.refresh_hz = refresh_hz
        self._clock = clock
        self._configured: tuple[str, tuple[tuple[str, str], ...]] | None = None  # (algo, settings) drawn
        self._seen: dict[int, tuple[int, ...]] = {}
        self._eval_requests = 0  # SetEvalMode commands not answered yet

    @property
    def read_only(self) -> bool:
        return self.control is None

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

    def _configure(self, status: StatusSnapshot) -> None:
        """Set the charts up for the run's algorithm and agent settings, when they change."""
        info = status.info
        algo = info.algo if info is not None else self._algo
        if algo is None:
            return
        settings: Mapping[str, Any] = info.agent_settings if info is not None else {}
        key = (algo, tuple(sorted((k, repr(v)) for k, v in settings.items())))  # repr: NaN equals itself
        if key == self._configured:
            return
        same_algo = self._configured is not None and self._configured[0] == algo
        specs: list[ChartSpec | None] = list(chart_specs(algo, settings))
        for chart, spec in zip(self.charts(), specs + [None] * (4 - len(specs)), strict=True):
            chart.set_spec(spec, keep_scale=same_algo)  # new reference lines keep the user's scale
        self._configured = key
        self._seen.clear()

    # ---- the refresh timer ------------------------------------------------------------------
    def pull(self) -> None:
        """Copy what changed from the history into the widgets (one repaint)."""
        history = self.history
        status = history.status()
        with self.app.batch_update():
            self._configure(status)
            extra = "stopping…" if self.stopping and not status.state.is_final else ""
            self.query_one(StatusBar).show(status, extra)
            for chart in self.charts():
                self._update_chart(chart)
            self.query_one(MetricsTable).show(*history.latest())
            log = self.query_one(EventLog)
            log.show(history.log_since(log.next_index))
        state = self.current_state(status)
        self.run_state = state
        if not self._eval_requests:
            self.eval_mode = state is RunState.EVALUATING

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

    def current_state(self, status: StatusSnapshot | None = None) -> RunState:
        """The RunControl's own state (freshest) while the run goes on, else what the history says.

        The history has the last word once the app says the run ended (`run_ended`): an engine
        whose run() raised never reports FAILED itself, the app records it in the history.
        """
        if self.control is None or self.run_ended:
            return (status or self.history.status()).state
        return self.control.state

    def watch_run_state(self, previous: RunState | None, state: RunState | None) -> None:
        if state is RunState.FAILED and previous is not None:
            self.notify(self.history.status().message or "training failed", title="Run failed", severity="error")

    # ---- keys -------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in CONTROL_ACTIONS:
            if self.control is None or self.stopping:
                return False if action == "resume" else None
            state = self.run_state or RunState.STARTING
            if action == "pause":  # hidden while paused (Resume shows instead), grey otherwise
                return True if state is RunState.RUNNING else (False if state is RunState.PAUSED else None)
            if action == "resume":
                return True if state is RunState.PAUSED else False
            return True if state in (RunState.RUNNING, RunState.PAUSED, RunState.EVALUATING) else None
        if action == "toggle_log":
            return True if self._log_target() is not None else None
        if action in ("quit_run", "detach"):  # one `q` in the footer: Quit, or Detach when attached
            return self.attached == (action == "detach")
        if action == "view_agent":
            if getattr(self.control, "frames", None) is None:
                return False  # hidden: only a run of this process renders frames
            if self.stopping:
                return None
            return True if (self.run_state or RunState.STARTING) in LIVE_STATES else None
        if action == "stop_run":
            if not self.attached:
                return False
            return None if self.stopping or (self.run_state or RunState.STARTING).is_final else True
        return True

    def _send(self, command: Command) -> None:
        """Submit `command` to the run; its reply is awaited off to the side (never blocks)."""
        assert self.control is not None
        try:
            future = self.control.submit(command)
        except Exception as error:  # e.g. a remote run whose connection is gone
            self._replied(command, Reply(False, f"{type(error).__name__}: {error}"))
            return
        self._await_reply(command, future)

    @work(group="commands")
    async def _await_reply(self, command: Command, future: Future[Reply]) -> None:
        self._replied(command, await asyncio.wrap_future(future))

    def _replied(self, command: Command, reply: Reply) -> None:
        if isinstance(command, SetEvalMode):
            self._eval_requests -= 1
        if not reply.ok:
            self.notify(f"{command.name}: {reply.message or 'refused'}", severity="warning", timeout=4)
        if self.is_mounted:
            self.pull()  # show the new state now, not at the next tick

    def action_pause(self) -> None:
        self._send(Pause())  # the footer flips to Resume once the run reports PAUSED

    def action_resume(self) -> None:
        self._send(Resume())

    def action_checkpoint(self) -> None:
        self._send(Checkpoint())
        self.notify("checkpoint requested", timeout=2)

    def action_toggle_eval(self) -> None:
        on = not self.eval_mode
        self.eval_mode = on
        self._eval_requests += 1
        self._send(SetEvalMode(on))
        self.notify("deterministic evaluation mode " + ("on" if on else "off"), timeout=2)

    def action_view_agent(self) -> None:
        from rltui.screens.agent_view import AgentViewScreen

        frames = getattr(self.control, "frames", None)
        if frames is None:
            return
        turned_on = not self.eval_mode
        if turned_on:
            self.action_toggle_eval()

        def back(_: None) -> None:
            if turned_on and self.eval_mode:
                self.action_toggle_eval()

        self.app.push_screen(AgentViewScreen(frames, self.history), back)

    def action_cycle_smoothing(self) -> None:
        i = SMOOTHING_STEPS.index(self.smoothing) if self.smoothing in SMOOTHING_STEPS else 0
        self.smoothing = SMOOTHING_STEPS[(i + 1) % len(SMOOTHING_STEPS)]

    def watch_smoothing(self, smoothing: float) -> None:
        for chart in self.charts():
            chart.set_smoothing(smoothing)
        self._refresh_inspect()

    def _log_target(self) -> LineChart | None:
        if self.maximised is not None:
            return self.query_one(f"#chart-{self.maximised}", LineChart)
        focused = self.focused
        return focused if isinstance(focused, LineChart) and focused.spec is not None else None

    def action_toggle_log(self) -> None:
        chart = self._log_target()
        if chart is None:
            return
        chart.toggle_log()
        self._refresh_inspect()
        scale = chart.scale()
        if scale.kind == "symlog" and chart.spec is not None:
            self.notify(f"{chart.spec.title} has values <= 0, which a log scale cannot show: symmetric log "
                        f"instead (linear within ±{format_value(scale.linear_width)}, log beyond)", timeout=6)

    def _refresh_inspect(self) -> None:
        if self.maximised is not None:
            self._show_inspect(self.query_one(f"#chart-{self.maximised}", LineChart))

    def action_maximise(self, number: int) -> None:
        self.maximised = None if self.maximised == number else number

    def watch_maximised(self, previous: int | None, number: int | None) -> None:
        if number is None:
            if previous is not None:
                self.query_one(f"#chart-{previous}", LineChart).focus()
        else:
            self._refresh_inspect()

    def action_help(self) -> None:
        notes = {action: "not in watch mode" for action in CONTROL_ACTIONS} if self.read_only else {}
        # Of the leaving keys, those of this kind of dashboard (attached or not).
        shown = [b for b in self.BINDINGS if not isinstance(b, Binding) or b.action not in LEAVING_ACTIONS
                 or self.check_action(b.action, ()) is not False]
        shown += EventLog.BINDINGS  # keys of the focused log
        self.app.push_screen(HelpScreen(help_rows(shown, self.app.get_key_display, notes)))

    def action_info(self) -> None:
        from rltui.screens.info import InfoScreen, read_run_facts

        info = self.history.status().info
        run_dir = self.run_dir or (info.run_dir if info is not None else None)
        if run_dir is None:
            self.notify("no run information yet: the run has not started", timeout=3)
            return
        self.app.push_screen(InfoScreen(read_run_facts(Path(run_dir), info.name if info is not None else None)))

    def action_quit_run(self) -> None:
        self.post_message(self.QuitRequested())

    def action_detach(self) -> None:
        self.post_message(self.QuitRequested())

    def action_stop_run(self) -> None:
        self.post_message(self.StopRequested())
