"""A deterministic stand-in for rltui.engine.Engine, for UI tests.

`run()` emits a scripted run (fixed times, smooth curves), then either finishes, fails, raises,
or holds, applying submitted commands on its own thread until a `Stop`. Like the real engine,
`submit(command)` never blocks and returns a Future that resolves once the command took effect
(Pause/Resume/SetEvalMode applied and their StateChanged emitted, Checkpoint written with
`data={"path", "step"}`, Evaluate done, Stop when the run ended); commands submitted after the
run ended get `Reply(ok=False, "the run has ended")`. Every submitted command is recorded in
`commands`. `FakeControl` is a bare RunControl (`state` and `submit()`, nothing else).
"""

from __future__ import annotations

import json
import math
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

from rltui.commands import Checkpoint, Command, Evaluate, Pause, Reply, Resume, SetEvalMode, Stop
from rltui.events import (
    CheckpointSaved,
    EpisodeFinished,
    ErrorRaised,
    EvalResult,
    Event,
    RunStarted,
    RunState,
    StateChanged,
    UpdateMetrics,
    WarningRaised,
)

T0 = 1_700_000_000.0
AGENT_SETTINGS = {
    "mpo": {"kl_epsilon": 0.1, "mstep_kl_epsilon": 0.01, "num_samples": 20},
    "trpo": {"target_kl": 0.01, "cg_iters": 10},
}
ENDED = "the run has ended"


def _metrics(algo: str, step: int) -> dict[str, float]:
    u = step / 1000.0
    common = {"perf/steps_per_s": 500.0, "perf/updates_per_s": 125.0}
    if algo == "mpo":
        return common | {
            "loss/q": 50.0 * math.exp(-u / 4) + 2.0 + math.sin(u * 3),
            "loss/policy": 0.5 * math.cos(u),
            "kl/nonparametric": 0.08 + 0.01 * math.sin(u * 2),
            "kl/mean": 0.004 * (1 + 0.5 * math.sin(u)),
            "kl/std": 0.0005 * (1 + 0.5 * math.cos(u)),
            "dual/temperature": 10.0 * math.exp(-u / 3) + 0.05,
            "dual/alpha_mean": 1.0 + u,
            "dual/alpha_std": 100.0 * math.exp(-u / 2) + 1.0,
            "policy/entropy": 1.0 - 0.05 * u,
        }
    return common | {
        "loss/value": 400.0 * math.exp(-u / 3) + 5.0,
        "value/explained_variance": 1.0 - math.exp(-u / 2),
        "policy/kl": 0.008 + 0.002 * math.sin(u),
        "policy/line_search_frac": 1.0 if int(u) % 3 else 0.5,
        "policy/step_norm": 0.3 + 0.1 * math.cos(u),
        "policy/entropy": 1.0 - 0.05 * u,
    }


def scripted_events(algo: str = "mpo", steps: int = 6000, total_steps: int = 10_000) -> list[Event]:
    """A run of `steps` env steps: episodes every 200, metrics every 100 (25 updates each), evals every 2000."""
    def t(step: int) -> float:
        return T0 + step / 500.0

    events: list[Event] = [
        RunStarted(0, name=f"{algo}-pendulum-test", algo=algo, env_id="Pendulum-v1", device="cpu",
                   total_steps=total_steps, run_dir=f"saves/{algo}-pendulum-test",
                   agent_settings=AGENT_SETTINGS[algo], time=T0),
        StateChanged(0, state=RunState.RUNNING, time=T0),
    ]
    for step in range(100, steps + 1, 100):
        if step % 200 == 0:
            ret = -1400.0 + 1250.0 * (1 - math.exp(-step / 2500)) + 120.0 * math.sin(step * 0.37)
            events.append(EpisodeFinished(step, episode_return=ret, episode_length=200, time=t(step)))
        events.append(UpdateMetrics(step, updates=25, metrics=_metrics(algo, step), time=t(step)))
        if step % 2000 == 0:
            mean = -1300.0 + 1150.0 * (1 - math.exp(-step / 2500))
            events.append(EvalResult(step, return_mean=mean, return_std=20.0, length_mean=200.0,
                                     episodes=5, time=t(step)))
        if step == 3000:
            events.append(CheckpointSaved(step, path=f"saves/{algo}-pendulum-test/checkpoints/step-3000",
                                          time=t(step)))
        if step == 4100:
            events.append(WarningRaised(step, message="skipped 1 update with non-finite loss", time=t(step)))
    return events


def write_metrics_jsonl(path: Path, events: list[Event], partial_tail: bool = False) -> None:
    with path.open("w") as f:
        for event in events:
            f.write(json.dumps(event.to_json()) + "\n")
        if partial_tail:
            f.write('{"event": "update", "step": 99')


def _resolved(reply: Reply) -> Future[Reply]:
    future: Future[Reply] = Future()
    future.set_result(reply)
    return future


class FakeEngine:
    def __init__(
        self,
        algo: str = "mpo",
        *,
        steps: int = 6000,
        total_steps: int = 10_000,
        outcome: str = "hold",  # "hold" (apply commands until Stop), "finish", "fail" (events), "raise"
        stop_delay_s: float = 0.0,
    ) -> None:
        self.algo = algo
        self.total_steps = total_steps
        self.step = 0
        self.state = RunState.STARTING
        self.run_dir = Path(f"saves/{algo}-pendulum-test")
        self.commands: list[Command] = []
        self.emitted = threading.Event()  # set when the scripted events are all out
        self._script = scripted_events(algo, steps, total_steps)
        self._outcome = outcome
        self._stop_delay_s = stop_delay_s
        self._subscribers: list[Callable[[Event], None]] = []
        self._queue: queue.Queue[tuple[Command, Future[Reply]]] = queue.Queue()
        self._lock = threading.Lock()  # orders submit() against the end of the run
        self._ended = False

    def subscribe(self, callback: Callable[[Event], None]) -> None:
        self._subscribers.append(callback)

    def submit(self, command: Command) -> Future[Reply]:
        with self._lock:
            self.commands.append(command)
            if self._ended:
                return _resolved(Reply(False, ENDED))
            future: Future[Reply] = Future()
            self._queue.put((command, future))
            return future

    def _time(self) -> float:
        return T0 + self.step / 500.0

    def _emit(self, event: Event) -> None:
        self.step = max(self.step, event.step)
        for callback in self._subscribers:
            callback(event)

    def _set_state(self, state: RunState, message: str = "") -> None:
        self.state = state
        self._emit(StateChanged(self.step, state=state, message=message, time=self._time()))

    def run(self) -> None:
        try:
            self._run()
        finally:
            with self._lock:
                self._ended = True
            while not self._queue.empty():  # what came in too late is refused, as the engine does
                command, future = self._queue.get_nowait()
                future.set_result(Reply(True, "stopped") if isinstance(command, Stop) else Reply(False, ENDED))

    def _run(self) -> None:
        for event in self._script:
            if isinstance(event, StateChanged):
                self._set_state(event.state)
            else:
                self._emit(event)
        if self._outcome == "raise":
            self.emitted.set()
            raise RuntimeError("simulated crash in the training loop")
        if self._outcome == "fail":
            self._emit(ErrorRaised(self.step, message="loss became NaN", traceback="...", time=self._time()))
            self._set_state(RunState.FAILED, "loss became NaN")
            self.emitted.set()
            return
        if self._outcome == "finish":
            self._set_state(RunState.FINISHED)
            self.emitted.set()
            return
        self.emitted.set()
        while True:
            command, future = self._queue.get()
            if isinstance(command, Stop):
                if self._stop_delay_s:
                    threading.Event().wait(self._stop_delay_s)  # a long update still in flight
                if command.final_checkpoint:
                    self._checkpoint()
                self._set_state(RunState.FINISHED, "stopped")
                future.set_result(Reply(True, "stopped"))
                return
            future.set_result(self._apply(command))

    def _checkpoint(self) -> Reply:
        path = f"{self.run_dir}/checkpoints/step-{self.step}"
        self._emit(CheckpointSaved(self.step, path=path, time=self._time()))
        return Reply(True, f"checkpoint {path}", {"path": path, "step": self.step})

    def _apply(self, command: Command) -> Reply:
        if isinstance(command, Pause):
            self._set_state(RunState.PAUSED)
        elif isinstance(command, Resume):
            self._set_state(RunState.RUNNING)
        elif isinstance(command, SetEvalMode):
            self._set_state(RunState.EVALUATING if command.on else RunState.RUNNING)
        elif isinstance(command, Checkpoint):
            return self._checkpoint()
        elif isinstance(command, Evaluate):
            episodes = command.episodes or 5
            self._emit(EvalResult(self.step, return_mean=-150.0, return_std=5.0, length_mean=200.0,
                                  episodes=episodes, time=self._time()))
            return Reply(True, "evaluated", {"return_mean": -150.0, "return_std": 5.0, "episodes": episodes,
                                             "step": self.step})
        return Reply(True, command.name)


class FakeControl:
    """The least a dashboard can drive: a state and `submit()`; replies come when `answer()` says."""

    def __init__(self, state: RunState = RunState.RUNNING) -> None:
        self.state = state
        self.submitted: list[tuple[Command, Future[Reply]]] = []

    def submit(self, command: Command) -> Future[Reply]:
        future: Future[Reply] = Future()
        self.submitted.append((command, future))
        return future

    def answer(self, reply: Reply, state: RunState | None = None) -> None:
        """Resolve the oldest unanswered command (from any thread), after moving to `state`."""
        if state is not None:
            self.state = state
        next(f for _, f in self.submitted if not f.done()).set_result(reply)
