"""A stand-in for the engine as the control socket sees it: `state`, `algo`, `total_steps`, `step`,
`subscribe`, `submit(command) -> Future[Reply]`, and a `run()` that starts and closes a ControlServer
as `Engine.run()` does. Steps are counted, not simulated; `stall` blocks the loop like a long update,
and `command_delay_s` makes commands take that long to take effect."""

from __future__ import annotations

import concurrent.futures
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

from rltui.commands import Checkpoint, Command, Evaluate, Pause, Reply, Resume, SetEvalMode, Stop
from rltui.control import ControlServer
from rltui.events import (
    CheckpointSaved,
    EvalResult,
    Event,
    RunStarted,
    RunState,
    StateChanged,
    UpdateMetrics,
)
from rltui.runlog import LOG_NAME, RunLogWriter


class FakeEngine:
    def __init__(self, run_dir: Path, *, total_steps: int = 10**9, step_s: float = 0.0005,
                 command_delay_s: float = 0.0, idle_timeout: float | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.algo = "mpo"
        self.total_steps = total_steps
        self.state = RunState.STARTING
        self.step = 0
        self.step_s = step_s
        self.command_delay_s = command_delay_s
        self.stall = threading.Event()  # set: the loop blocks (a long update) until cleared
        self.submitted: list[Command] = []
        self.server: ControlServer | None = None
        self.server_kwargs = {} if idle_timeout is None else {"idle_timeout": idle_timeout}
        self._subscribers: list[Callable[[Event], None]] = []
        self._commands: queue.Queue[tuple[Command, concurrent.futures.Future[Reply]]] = queue.Queue()
        self._ended = threading.Event()
        self._lock = threading.Lock()
        self._stop_futures: list[concurrent.futures.Future[Reply]] = []

    def subscribe(self, callback: Callable[[Event], None]) -> None:
        self._subscribers.append(callback)

    def submit(self, command: Command) -> concurrent.futures.Future[Reply]:
        future: concurrent.futures.Future[Reply] = concurrent.futures.Future()
        with self._lock:
            if self._ended.is_set():
                future.set_result(Reply(False, "the run has ended"))
                return future
            self.submitted.append(command)
            self._commands.put((command, future))
        return future

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        return thread

    def run(self) -> None:
        self.server = ControlServer(self, self.run_dir, **self.server_kwargs)
        self.server.start()
        log = RunLogWriter(self.run_dir / LOG_NAME)
        self._subscribers.insert(0, log)
        try:
            self._emit(RunStarted(0, name="fake", algo=self.algo, env_id="Pendulum-v1", device="cpu",
                                  total_steps=self.total_steps, run_dir=str(self.run_dir)))
            self._set_state(RunState.RUNNING)
            paused = False
            last_metrics = 0.0  # the first step reports a rate
            while self.step < self.total_steps:
                while self.stall.is_set():
                    time.sleep(0.01)
                try:
                    while True:
                        command, future = self._commands.get_nowait()
                        if self._apply(command, future):
                            raise StopIteration
                        paused = self.state is RunState.PAUSED
                except queue.Empty:
                    pass
                if paused:
                    time.sleep(0.01)
                    continue
                self.step += 1
                if time.monotonic() - last_metrics > 0.1:
                    last_metrics = time.monotonic()
                    self._emit(UpdateMetrics(self.step, updates=1, metrics={"perf/steps_per_s": 1000.0}))
                time.sleep(self.step_s)
        except StopIteration:
            pass
        self._set_state(RunState.FINISHED, f"stopped at step {self.step}")
        with self._lock:
            self._ended.set()
        for future in self._stop_futures:
            future.set_result(Reply(True, f"stopped at step {self.step}"))
        while True:
            try:
                _, future = self._commands.get_nowait()
            except queue.Empty:
                break
            future.set_result(Reply(False, "the run has ended"))
        log.close()
        self.server.close()

    def _apply(self, command: Command, future: concurrent.futures.Future[Reply]) -> bool:
        if self.command_delay_s:
            time.sleep(self.command_delay_s)
        if isinstance(command, Pause):
            self._set_state(RunState.PAUSED)
            future.set_result(Reply(True, "paused"))
        elif isinstance(command, Resume):
            self._set_state(RunState.RUNNING)
            future.set_result(Reply(True, "running"))
        elif isinstance(command, Checkpoint):
            path = str(self.run_dir / "checkpoints" / f"step-{self.step}")
            self._emit(CheckpointSaved(self.step, path=path))
            future.set_result(Reply(True, f"checkpoint {path}", {"path": path, "step": self.step}))
        elif isinstance(command, Evaluate):
            episodes = command.episodes or 1
            self._emit(EvalResult(self.step, return_mean=-150.0, return_std=float("nan"), length_mean=200.0,
                                  episodes=episodes))
            future.set_result(Reply(True, "evaluated", {"return_mean": -150.0, "return_std": float("nan"),
                                                        "episodes": episodes, "step": self.step}))
        elif isinstance(command, SetEvalMode):
            self._set_state(RunState.EVALUATING if command.on else RunState.RUNNING)
            future.set_result(Reply(True, "eval mode " + ("on" if command.on else "off")))
        elif isinstance(command, Stop):
            self._stop_futures.append(future)
            return True
        return False

    def _set_state(self, state: RunState, message: str = "") -> None:
        self.state = state
        self._emit(StateChanged(self.step, state=state, message=message))

    def _emit(self, event: Event) -> None:
        for callback in self._subscribers:
            callback(event)


def start_fake(run_dir: Path, **kwargs) -> tuple[FakeEngine, threading.Thread]:
    """A fake run in `run_dir` (created), running with its control socket."""
    run_dir.mkdir(parents=True, exist_ok=True)
    engine = FakeEngine(run_dir, **kwargs)
    thread = engine.start()
    deadline = time.monotonic() + 10
    while engine.state is not RunState.RUNNING or engine.step == 0:
        if time.monotonic() > deadline:
            raise AssertionError("the fake run did not start")
        time.sleep(0.01)
    return engine, thread


def wait_for_a_rate(run_dir: Path, timeout: float = 10.0) -> None:
    """Until the run's status measures steps/s (its rate window spans a second or more)."""
    from rltui.control import ControlClient, socket_path

    deadline = time.monotonic() + timeout
    with ControlClient(socket_path(run_dir)) as client:
        while client.status()["steps_per_s"] is None:
            if time.monotonic() > deadline:
                raise AssertionError("no rate measured")
            time.sleep(0.05)


def stop_fake(engine: FakeEngine, thread: threading.Thread) -> None:
    engine.stall.clear()
    engine.submit(Stop())
    thread.join(10)
    assert not thread.is_alive()
