"""The Textual application: picker, live dashboard and watch mode.

Every view folds the run's typed events through one MetricsHistory, which the dashboard pulls
from on a timer (the training thread never waits for the UI):

- a live run: the history subscribes to the engine, whose `run()` goes on in a thread;
- a resumed run (`history_from=RUN_DIR`): that thread first loads the run's metrics.jsonl into
  the history, then subscribes and starts the engine. The engine writes its log only inside
  `run()`, so the file read is exactly what came before, and the live events follow on without a
  gap or a duplicate;
- watch mode: a thread follows the run's metrics.jsonl (`MetricsFollower`);
- an attached run (`rltui attach`): a run in another process, followed like watch mode and driven
  through its control socket (`rltui.control.RemoteEngine`, a RunControl); `q` detaches and the
  run goes on, `Q` stops it after a y/n. With several live runs, `LiveRunsScreen` picks one first.

Screens ask, the app decides: the picker posts `PickerScreen.StartRequested`, the dashboard posts
`DashboardScreen.QuitRequested` (`q`); the app answers by creating the run, or by stopping it
with a final checkpoint before leaving. The dashboard drives its run through `submit()` only
(a `RunControl`), so a run in another process can be plugged in the same way.
Entry points for the CLI: `run_dashboard`, `run_picker`, `run_watch`, `run_attach`. The first two
print the run's summary (`rltui.cli.run_summary`, as `--headless` does) once the app has left the
terminal, for a run of this process that ended: finished, stopped or failed.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.worker import Worker, get_current_worker

from rltui.commands import Reply, Stop
from rltui.events import Event, RunState
from rltui.history import MetricsHistory
from rltui.runlog import LOG_NAME, MetricsFollower
from rltui.screens.dashboard import DashboardScreen, RunControl
from rltui.watch import WatchError, check_run_dir

if TYPE_CHECKING:
    from rltui.comparison import ComparedRun
    from rltui.control import RemoteEngine
    from rltui.screens.choose import LiveRunsScreen
    from rltui.screens.picker import PickerScreen
    from rltui.screens.runs import RunsScreen

QUIT_TIMEOUT_S = 30.0
WATCH_POLL_MAX_S = 1.0  # the watched file is polled at least this often, whatever the refresh rate


class EngineLike(RunControl, Protocol):
    """The Engine API the app needs (rltui.engine.Engine, or a fake in tests)."""

    @property
    def algo(self) -> str: ...

    @property
    def run_dir(self) -> Path: ...

    @property
    def total_steps(self) -> int: ...

    def subscribe(self, callback: Callable[[Event], None]) -> None: ...
    def run(self) -> None: ...


EngineFactory = Callable[[Any, Path], EngineLike]


def create_engine(preset: Any, saves_root: Path) -> EngineLike:
    """Default factory used by the picker: a fresh run directory and an Engine for `preset`."""
    from rltui.engine import Engine  # torch is imported only when a run starts
    from rltui.rundir import create_run_dir

    # run.json's command: the picker started it (`rltui`); its preset is recorded beside
    engine: EngineLike = Engine(preset, create_run_dir(preset, saves_root), command=["rltui"])
    return engine


class RlTuiApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "rltui"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [Binding("ctrl+c", "quit", "Quit", show=False, priority=True)]

    def __init__(
        self,
        *,
        engine: EngineLike | None = None,
        history_from: Path | None = None,
        watch_dir: Path | None = None,
        refresh_hz: float = 4.0,
        saves_root: Path = Path("saves"),
        clock: Callable[[], float] = time.time,
        engine_factory: EngineFactory = create_engine,
        picker_kwargs: dict[str, Any] | None = None,
        remote: RemoteEngine | None = None,
        live_runs: tuple[list[dict[str, Any]], list[str]] | None = None,
        compare: Sequence[ComparedRun] | None = None,
        runs_roots: Sequence[Path] | None = None,
        runs_grouped: bool = False,
    ) -> None:
        """`engine`: open its dashboard (after loading `history_from`/metrics.jsonl, for a resumed
        run); else `remote`: attach to that run of another process; else `live_runs` (statuses and
        `rltui ps` lines): choose one to attach to; else `watch_dir`: follow that run read-only;
        else `compare`: those runs' charts overlaid; else `runs_roots`: the runs browser of those
        directories; else the preset picker."""
        super().__init__()
        if refresh_hz <= 0:
            raise ValueError(f"refresh_hz must be > 0, got {refresh_hz}")
        self.engine = engine
        self.history_from = history_from
        self.watch_dir = watch_dir
        self.refresh_hz = refresh_hz
        self.saves_root = saves_root
        self.clock = clock
        self.engine_factory = engine_factory
        self.picker_kwargs = picker_kwargs or {}
        self.remote = remote
        self.live_runs = live_runs
        self.compare = compare
        self.runs_roots = runs_roots
        self.runs_grouped = runs_grouped
        self.history = MetricsHistory()
        self.dashboard: DashboardScreen | None = None
        self.engine_worker: Worker[None] | None = None
        self._leaving = threading.Event()  # the app is ending: background loops stop
        self._session: tuple[float, int] | None = None  # (monotonic start, start step) of the run shown
        self._last_stop: Future[Reply] | None = None  # the Stop sent as the app ended, if one was

    def on_mount(self) -> None:
        if self.engine is not None:
            self.start_run(self.engine, history_from=self.history_from)
        elif self.remote is not None:
            self.start_attach(self.remote)
        elif self.live_runs is not None:
            from rltui.screens.choose import LiveRunsScreen

            self.push_screen(LiveRunsScreen(*self.live_runs))
        elif self.watch_dir is not None:
            self.start_watch(self.watch_dir)
        elif self.compare is not None:
            self.open_compare(self.compare)
        elif self.runs_roots is not None:
            self.open_runs(self.runs_roots)
        else:
            from rltui.screens.picker import PickerScreen

            self.push_screen(PickerScreen(**self.picker_kwargs))

    # ---- live runs --------------------------------------------------------------------------
    def on_picker_screen_start_requested(self, message: PickerScreen.StartRequested) -> None:
        self._create_run(message.preset)

    @work(exclusive=True, group="create-run", exit_on_error=False)
    async def _create_run(self, preset: Any) -> None:
        """Create the run off the UI thread (building envs and networks takes a moment), then show it."""
        try:
            engine = await asyncio.to_thread(self.engine_factory, preset, self.saves_root)
        except Exception as error:
            from rltui.screens.picker import PickerScreen

            if isinstance(self.screen, PickerScreen):
                self.screen.show_error(f"could not create the run: {type(error).__name__}: {error}")
            return
        self.start_run(engine)

    def start_run(self, engine: EngineLike, history_from: Path | None = None) -> None:
        """Show `engine`'s dashboard and run it (`history_from`: a run dir whose log comes first)."""
        self.engine = engine
        screen = DashboardScreen(
            self.history, control=engine, algo=engine.algo, refresh_hz=self.refresh_hz, clock=self.clock,
            run_dir=engine.run_dir,
        )
        self.dashboard = screen
        if self.screen_stack and len(self.screen_stack) > 1:
            self.switch_screen(screen)
        else:
            self.push_screen(screen)
        self._session = (time.monotonic(), getattr(engine, "step", 0))
        self.engine_worker = self._run_engine(engine, history_from)

    @work(group="engine", exit_on_error=False)
    async def _run_engine(self, engine: EngineLike, history_from: Path | None) -> None:
        try:
            await asyncio.to_thread(self._load_and_run, engine, history_from)
        except Exception as error:  # the engine's own failures are events; this is run() raising
            self.history.record_failure(f"{type(error).__name__}: {error}")
        if self.dashboard is not None:
            self.dashboard.run_ended = True

    def _load_and_run(self, engine: EngineLike, history_from: Path | None) -> None:
        """On a thread: the run's earlier history (if any), then the run itself."""
        if history_from is not None:
            try:
                self.history.load(Path(history_from) / LOG_NAME, cancelled=self._leaving.is_set)
            except Exception as error:  # noqa: BLE001 - the run matters more than its old charts
                self.history.note("error", f"the run's earlier history could not be shown: "
                                           f"{type(error).__name__}: {error}")
        engine.subscribe(self.history)
        engine.run()

    def on_dashboard_screen_quit_requested(self, message: DashboardScreen.QuitRequested) -> None:
        """`q`: a live run stops with a final checkpoint, then the app leaves; a second `q`, or `q`
        with nothing running, leaves at once; an attached dashboard leaves the run going."""
        screen, engine = self.dashboard, self.engine
        if self.remote is not None:
            self.exit(0)
            return
        if engine is None or screen is None or screen.stopping or screen.current_state().is_final:
            self.exit(self.run_exit_code())
            return
        screen.stopping = True
        self.notify("stopping: writing a final checkpoint… (q again to leave now)", timeout=10)
        engine.submit(Stop(final_checkpoint=True))
        self._exit_when_stopped()

    @work(group="quit")
    async def _exit_when_stopped(self) -> None:
        worker = self.engine_worker
        if worker is not None:
            try:
                await asyncio.wait_for(worker.wait(), QUIT_TIMEOUT_S)
            except Exception:  # WorkerFailed/timeout: leave anyway, the failure is already shown
                pass
        self.exit(self.run_exit_code())

    def run_exit_code(self) -> int:
        return 1 if self.history.status().state is RunState.FAILED else 0

    def exit_summary(self, timeout: float = QUIT_TIMEOUT_S) -> str | None:
        """What `rltui train --headless` prints at the end, for the run this app ran, once the app
        has left the terminal: None when it ran none, or when its run goes on (the terminal hung up).

        A run the app stopped as it ended (Ctrl-C) is waited for (at most `timeout` seconds) so
        that the summary tells its final checkpoint.
        """
        engine, session = self.engine, self._session
        if engine is None or session is None:
            return None
        if not (self.history.status().state.is_final or engine.state.is_final):
            stop = self._last_stop
            try:
                if stop is None or not stop.result(timeout).ok:  # refused: the run went on without us
                    return None
            except TimeoutError:
                return None
        from rltui.cli import run_summary

        started, start_step = session
        return run_summary(self.history, engine, start_step, time.monotonic() - started)

    # ---- attached runs ------------------------------------------------------------------------
    def on_live_runs_screen_chosen(self, message: LiveRunsScreen.Chosen) -> None:
        self._connect(message.run_dir)

    @work(exclusive=True, group="connect", exit_on_error=False)
    async def _connect(self, run_dir: Path) -> None:
        from rltui.control import ControlError, RemoteEngine

        try:
            remote = await asyncio.to_thread(RemoteEngine, run_dir)
        except ControlError as error:  # it ended while the list was shown
            self.notify(str(error), title="cannot attach", severity="error")
            return
        self.remote = remote
        self.start_attach(remote)

    def start_attach(self, remote: RemoteEngine) -> None:
        """The dashboard of a run in another process: its log followed, controls over its socket."""
        self.dashboard = DashboardScreen(self.history, control=remote, algo=remote.algo or None,
                                         refresh_hz=self.refresh_hz, clock=self.clock, attached=True,
                                         run_dir=remote.run_dir)
        if self.screen_stack and len(self.screen_stack) > 1:
            self.switch_screen(self.dashboard)
        else:
            self.push_screen(self.dashboard)
        remote.subscribe(self.history)  # a killed run's end, which its log cannot tell
        self._follow(remote.run_dir / LOG_NAME)

    def on_dashboard_screen_stop_requested(self, message: DashboardScreen.StopRequested) -> None:
        from rltui.screens.choose import ConfirmScreen

        remote = self.remote
        if remote is None:
            return
        question = f"Stop the run {remote.run_dir} (pid {remote.pid}) with a final checkpoint?"
        self.push_screen(ConfirmScreen(question), self._stop_attached)

    def _stop_attached(self, confirmed: bool | None) -> None:
        if confirmed and self.remote is not None and self.dashboard is not None:
            self.dashboard.stopping = True
            self.notify("stopping the run: writing a final checkpoint…", timeout=10)
            self._await_stop(self.remote.submit(Stop(final_checkpoint=True)))

    @work(group="quit")
    async def _await_stop(self, future: Future[Reply]) -> None:
        """Leave once the run has ended (the reply to a stop comes then), its last events shown."""
        reply = await asyncio.wrap_future(future)
        if not reply.ok:
            self.notify(f"stop: {reply.message}", severity="warning")
        await asyncio.sleep(2 / self.refresh_hz)  # the follower picks up the final events
        self.exit(self.run_exit_code())

    # ---- watch mode -------------------------------------------------------------------------
    def start_watch(self, run_dir: Path) -> None:
        self.dashboard = DashboardScreen(self.history, control=None, refresh_hz=self.refresh_hz, run_dir=run_dir)
        self.push_screen(self.dashboard)
        self._follow(run_dir / LOG_NAME)

    @work(thread=True, group="watch", exit_on_error=False)
    def _follow(self, path: Path, history: MetricsHistory | None = None,
                until: threading.Event | None = None) -> None:
        """Poll the log into `history` (default the app's) until the app ends, or `until` is set.
        Nothing read from the file may stop this loop."""
        worker = get_current_worker()
        history = history if history is not None else self.history
        follower = MetricsFollower(path)
        interval = min(1.0 / self.refresh_hz, WATCH_POLL_MAX_S)
        last_failure = ""

        def ending() -> bool:
            return worker.is_cancelled or self._leaving.is_set() or (until is not None and until.is_set())

        try:
            while not ending():
                try:
                    caught_up = history.follow(follower)
                except Exception as exc:  # noqa: BLE001 - a bug must not freeze the view: say it, go on
                    failure = f"watch: {type(exc).__name__}: {exc}"
                    if failure != last_failure:
                        history.note("error", failure + " (following goes on)")
                    last_failure, caught_up = failure, True
                if caught_up:
                    (until or self._leaving).wait(interval)
        finally:
            follower.close()

    # ---- compare view -----------------------------------------------------------------------
    def open_compare(self, runs: Sequence[ComparedRun]) -> None:
        from rltui.screens.compare import CompareScreen

        self.push_screen(CompareScreen(runs, refresh_hz=self.refresh_hz))

    def on_compare_screen_leave_requested(self) -> None:
        """`q` in the compare view: back to the screen it was opened from, else leave."""
        self._back_or_exit()

    def _back_or_exit(self) -> None:
        if len(self.screen_stack) > 2:  # (the default screen, the opener, this one)
            self.pop_screen()
        else:
            self.exit(0)

    # ---- runs browser -----------------------------------------------------------------------
    def open_runs(self, roots: Sequence[Path]) -> None:
        from rltui.screens.runs import RunsScreen

        self.push_screen(RunsScreen(roots, grouped=self.runs_grouped))

    def on_picker_screen_runs_requested(self) -> None:
        self.open_runs([self.saves_root])

    def on_runs_screen_leave_requested(self) -> None:
        self._back_or_exit()

    def on_runs_screen_compare_requested(self, message: RunsScreen.CompareRequested) -> None:
        from rltui.comparison import ComparedRun

        self.open_compare([ComparedRun(run.run_dir, run.name, run.group) for run in message.runs])

    @work(exclusive=True, group="connect", exit_on_error=False)
    async def on_runs_screen_open_requested(self, message: RunsScreen.OpenRequested) -> None:
        """A run from the list, over the list: attached when it is live, else read-only; its log
        followed until its dashboard goes (`q` there comes back)."""
        from rltui.control import ControlError, RemoteEngine
        from rltui.screens.runs import ListedRunDashboard
        from rltui.summaries import KILLED, LIVE

        run = message.run
        remote: RemoteEngine | None = None
        if run.state == LIVE:
            try:
                remote = await asyncio.to_thread(RemoteEngine, run.run_dir)
            except ControlError as error:  # it ended, or its socket went, since the list was read
                self.notify(f"{error}; shown read-only", title="cannot attach", severity="warning")
        history = MetricsHistory()
        screen = ListedRunDashboard(history, control=remote, close=remote.close if remote is not None else lambda: None,
                                    run_dir=run.run_dir, algo=run.algo or None,
                                    killed_at=run.step if run.state == KILLED else None,
                                    refresh_hz=self.refresh_hz, clock=self.clock if remote is not None else None)
        self.push_screen(screen)
        if remote is not None:
            remote.subscribe(history)  # a killed run's end, which its log cannot tell
        self._follow(run.run_dir / LOG_NAME, history, screen.stop_following)

    def on_unmount(self) -> None:
        """However the app ends, the training thread must end too (the process waits for it)."""
        self._leaving.set()
        if self.engine is not None and not self.engine.state.is_final:
            self._last_stop = self.engine.submit(Stop(final_checkpoint=True))
        if self.remote is not None:
            self.remote.close()  # detach: the run itself goes on


def run_dashboard(
    engine: EngineLike, refresh_hz: float = 4.0, mouse: bool = True, history_from: Path | None = None,
    on_app: Callable[[RlTuiApp], None] | None = None,
) -> int:
    """Open the dashboard on `engine` (not started yet); returns 1 if the run failed, else 0.

    `history_from`: the run directory of a resumed run, whose whole history the charts show first.
    `on_app`: called with the app before it runs (e.g. to close it from another thread on a hangup).
    """
    app = RlTuiApp(engine=engine, history_from=history_from, refresh_hz=refresh_hz)
    if on_app is not None:
        on_app(app)
    app.run(mouse=mouse)
    _print_summary(app)
    return app.run_exit_code()


def run_picker(refresh_hz: float = 4.0, mouse: bool = True, saves_root: Path = Path("saves")) -> int:
    """Open the preset picker; starting a run switches to its dashboard."""
    app = RlTuiApp(refresh_hz=refresh_hz, saves_root=saves_root)
    app.run(mouse=mouse)
    _print_summary(app)
    return app.run_exit_code()


def _print_summary(app: RlTuiApp) -> None:
    """The run's summary on stderr, as headless prints it, now that the terminal is ours again."""
    summary = app.exit_summary()
    if summary is not None:
        print(summary, file=sys.stderr, flush=True)


def run_attach(remote: RemoteEngine | None, live_runs: tuple[list[dict[str, Any]], list[str]] | None = None,
               refresh_hz: float = 4.0, mouse: bool = True) -> int:
    """The dashboard of `remote`, a run in another process (or a choice among `live_runs` first)."""
    app = RlTuiApp(remote=remote, live_runs=live_runs, refresh_hz=refresh_hz)
    app.run(mouse=mouse)
    if app.remote is not None:
        app.remote.close()
    return app.run_exit_code()


def run_compare(runs: Sequence[ComparedRun], refresh_hz: float = 4.0, mouse: bool = True) -> int:
    """The compare view of `runs` (their logs followed while they grow)."""
    app = RlTuiApp(compare=runs, refresh_hz=refresh_hz)
    app.run(mouse=mouse)
    return 0


def run_runs(roots: Sequence[Path], refresh_hz: float = 4.0, mouse: bool = True, grouped: bool = False) -> int:
    """The runs browser of `roots` (directories searched recursively), `grouped` by preset/sweep setting."""
    app = RlTuiApp(runs_roots=roots, refresh_hz=refresh_hz, runs_grouped=grouped)
    app.run(mouse=mouse)
    return 0


def run_watch(run_dir: Path | str, refresh_hz: float = 4.0, mouse: bool = True) -> int:
    """Follow `run_dir`/metrics.jsonl read-only. Exit 2 with one `error:` line if it cannot be followed."""
    try:
        run_dir = check_run_dir(run_dir)
    except WatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    app = RlTuiApp(watch_dir=run_dir, refresh_hz=refresh_hz)
    app.run(mouse=mouse)
    return 0
