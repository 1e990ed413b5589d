"""The Textual application: picker, live dashboard and watch mode.

Training runs in a Textual thread worker calling `engine.run()`. The engine calls the
MetricsHistory subscriber on its own thread; the dashboard pulls from it on a timer, so the
training thread never waits for the UI. Entry points for the CLI: `run_dashboard`,
`run_picker`, `run_watch`.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from textual.app import App
from textual.binding import Binding
from textual.worker import Worker, WorkerState, get_current_worker

from rltui.commands import Command, Reply, Stop
from rltui.events import Event, RunState
from rltui.history import MetricsHistory
from rltui.runlog import LOG_NAME, MetricsFollower
from rltui.screens.dashboard import DashboardScreen
from rltui.watch import WatchError, check_run_dir

QUIT_TIMEOUT_S = 30.0
WATCH_POLL_MAX_S = 1.0  # the watched file is polled at least this often, whatever the refresh rate


class EngineLike(Protocol):
    """The Engine API the app needs (rltui.engine.Engine, or a fake in tests)."""

    state: RunState
    algo: str
    preset: Any
    run_dir: Path

    def subscribe(self, callback: Callable[[Event], None]) -> None: ...
    def run(self) -> None: ...
    def submit(self, command: Command) -> Future[Reply]: ...


EngineFactory = Callable[[Any, Path], EngineLike]


def create_engine(preset: Any, saves_root: Path) -> EngineLike:
    """Default factory used by the picker: a fresh run directory and an Engine for `preset`."""
    from rltui.engine import Engine  # torch is imported only when a run starts
    from rltui.rundir import create_run_dir

    return Engine(preset, create_run_dir(preset, saves_root))


def _read_agent_settings(run_dir: Path) -> dict[str, Any]:
    """The [mpo]/[trpo] table of a run's preset.toml (for reference lines), {} if unreadable."""
    try:
        from rltui.presets import load_preset

        return dict(load_preset(str(run_dir / "preset.toml")).agent)
    except Exception:  # watch mode works without it: charts just lose their reference lines
        return {}


class RlTuiApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "rltui"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [Binding("ctrl+c", "quit", "Quit", show=False, priority=True)]

    def __init__(
        self,
        *,
        engine: EngineLike | None = None,
        watch_dir: Path | None = None,
        refresh_hz: float = 4.0,
        saves_root: Path = Path("saves"),
        clock: Callable[[], float] = time.time,
        engine_factory: EngineFactory = create_engine,
        picker_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if refresh_hz <= 0:
            raise ValueError(f"refresh_hz must be > 0, got {refresh_hz}")
        self.engine = engine
        self.watch_dir = watch_dir
        self.refresh_hz = refresh_hz
        self.saves_root = saves_root
        self.clock = clock
        self.engine_factory = engine_factory
        self.picker_kwargs = picker_kwargs or {}
        self.history = MetricsHistory()
        self.engine_worker: Worker[None] | None = None
        self._watch_stop = threading.Event()

    def on_mount(self) -> None:
        if self.engine is not None:
            self.start_run(self.engine)
        elif self.watch_dir is not None:
            self.start_watch(self.watch_dir)
        else:
            from rltui.screens.picker import PickerScreen

            self.push_screen(PickerScreen(on_start=self.launch, **self.picker_kwargs))

    # ---- live runs --------------------------------------------------------------------------
    def launch(self, preset: Any) -> None:
        """Create the run in a thread (building envs and networks takes a moment), then show it."""
        self.run_worker(
            partial(self.engine_factory, preset, self.saves_root),
            name="create-run", group="create-run", thread=True, exit_on_error=False,
        )

    def start_run(self, engine: EngineLike) -> None:
        self.engine = engine
        engine.subscribe(self.history)
        screen = DashboardScreen(
            self.history,
            engine=engine,
            algo=engine.algo,
            agent_settings=dict(getattr(engine.preset, "agent", {}) or {}),
            refresh_hz=self.refresh_hz,
            clock=self.clock,
            on_quit=self.stop_and_exit,
        )
        if self.screen_stack and len(self.screen_stack) > 1:
            self.switch_screen(screen)
        else:
            self.push_screen(screen)
        self.engine_worker = self._run_engine()

    def _run_engine(self) -> Worker[None]:
        engine = self.engine
        assert engine is not None
        return self.run_worker(engine.run, name="engine", group="engine", thread=True, exit_on_error=False)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if worker is self.engine_worker and event.state is WorkerState.ERROR:
            self.history.record_failure(f"{type(worker.error).__name__}: {worker.error}")
        elif worker.name == "create-run" and event.state is WorkerState.SUCCESS:
            assert worker.result is not None
            self.start_run(worker.result)
        elif worker.name == "create-run" and event.state is WorkerState.ERROR:
            from rltui.screens.picker import PickerScreen

            if isinstance(self.screen, PickerScreen):
                self.screen.show_error(f"could not create the run: {type(worker.error).__name__}: {worker.error}")

    def stop_and_exit(self) -> None:
        """Ask the engine to stop (final checkpoint), wait for its worker, then exit."""
        assert self.engine is not None
        self.engine.submit(Stop(final_checkpoint=True))
        self.run_worker(self._exit_when_stopped(), group="quit")

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

    # ---- watch mode -------------------------------------------------------------------------
    def start_watch(self, run_dir: Path) -> None:
        screen = DashboardScreen(
            self.history,
            engine=None,
            agent_settings=_read_agent_settings(run_dir),
            refresh_hz=self.refresh_hz,
        )
        self.push_screen(screen)
        self.run_worker(
            lambda: self._follow(MetricsFollower(run_dir / LOG_NAME)),
            name="watch", group="watch", thread=True, exit_on_error=False,
        )

    def _follow(self, follower: MetricsFollower) -> None:
        """Poll the log until the app ends. Nothing read from the file may stop this loop."""
        worker = get_current_worker()
        history = self.history
        interval = min(1.0 / self.refresh_hz, WATCH_POLL_MAX_S)
        last_failure = ""
        try:
            while not worker.is_cancelled and not self._watch_stop.is_set():
                try:
                    update = follower.read()
                    if update.reset:
                        history.reset()
                    for message in update.warnings:
                        history.note("warning", message)
                    history.extend(update.events)
                    caught_up = follower.caught_up
                except Exception as exc:  # noqa: BLE001 - a bug must not freeze the view: say it, go on
                    failure = f"watch: {type(exc).__name__}: {exc}"
                    if failure != last_failure:
                        history.note("error", failure + " (following goes on)")
                    last_failure, caught_up = failure, True
                if caught_up:
                    self._watch_stop.wait(interval)
        finally:
            follower.close()

    def on_unmount(self) -> None:
        """However the app ends, the training thread must end too (the process waits for it)."""
        self._watch_stop.set()
        if self.engine is not None and not self.engine.state.is_final:
            self.engine.submit(Stop(final_checkpoint=True))


def run_dashboard(engine: EngineLike, refresh_hz: float = 4.0, mouse: bool = True) -> int:
    """Open the dashboard on `engine` (not started yet); returns 1 if the run failed, else 0."""
    app = RlTuiApp(engine=engine, refresh_hz=refresh_hz)
    app.run(mouse=mouse)
    return app.run_exit_code()


def run_picker(refresh_hz: float = 4.0, mouse: bool = True, saves_root: Path = Path("saves")) -> int:
    """Open the preset picker; starting a run switches to its dashboard."""
    app = RlTuiApp(refresh_hz=refresh_hz, saves_root=saves_root)
    app.run(mouse=mouse)
    return app.run_exit_code()


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
