"""Thread-safe, bounded store of a run's metrics, fed by engine events and read by the views.

`MetricsHistory` is the one place where events become what a view shows: the live dashboard,
`rltui watch`, the dashboard of a resumed run and the headless progress line all fold the same
typed events through it, whether they come from a live engine (it is an event subscriber, called
on the engine's thread) or from a run's metrics.jsonl (`follow`, `load`). It only appends under a
lock and returns; the views pull copies. Each series keeps at most `capacity` buckets: when full,
neighbouring buckets are merged pairwise (mean of x and y, min of the minima, max of the maxima)
and the number of raw points per bucket doubles, so a 10-million-step run holds as much memory as
a 10-thousand-step one while the chart still shows the full range of values. The last
`RECENT_POINTS` raw values of each series are kept as they are.

A resumed session starts with a `RunStarted` at its checkpoint's step; whatever the log holds
beyond that step (a killed session's steps after its last checkpoint) is dropped from the series,
so the charts show the one history the run actually has. This module does not import Textual.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import unicodedata
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from rltui.events import (
    BestCheckpointSaved,
    CheckpointSaved,
    EpisodeFinished,
    ErrorRaised,
    EvalResult,
    Event,
    RunStarted,
    RunState,
    SettingValue,
    StateChanged,
    UpdateMetrics,
    WarningRaised,
)
from rltui.runlog import MetricsFollower

TRAIN_RETURN = "train/episode_return"
EVAL_RETURN = "eval/return_mean"
MANUAL_RETURN = "eval/manual_return"  # evaluation-mode episodes, one point each (apart from the curve)
MAX_SERIES = 512  # distinct metric names kept (a real run has a few dozen); more are dropped with one warning
LOG_TEXT_LIMIT = 1000  # characters of one log line
NAME_LIMIT = 200  # characters of a run's name, env id, device, run dir, metric name
RECENT_POINTS = 32  # raw values of each series kept as they are (e.g. the last 10 returns)
SYSTEM_PREFIX = "sys/"  # the system metrics' names (rltui.system)
RATE_WINDOW_S = 10.0  # steps/s and updates/s are measured over the last this many seconds of training
MIN_RATE_SPAN_S = 1.0  # and not before the window spans this much (a rate over 0.1 s is noise)


def clean_text(text: str, limit: int = LOG_TEXT_LIMIT) -> str:
    """`text` safe to draw: at most `limit` characters, control characters other than newlines and
    lone surrogates (which a terminal cannot be sent) replaced by U+FFFD."""
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    if not text.isprintable():
        text = "".join(
            "\ufffd" if c != "\n" and unicodedata.category(c) in ("Cc", "Cs") else c for c in text
        )
    return text


@dataclass(frozen=True)
class SeriesSnapshot:
    """Copy of one series: bucket means `x`, `y` and the raw extremes `y_min`, `y_max` per bucket."""

    x: np.ndarray
    y: np.ndarray
    y_min: np.ndarray
    y_max: np.ndarray
    last: float
    version: int

    def __len__(self) -> int:
        return len(self.x)


class DownsampledSeries:
    """Fixed-capacity (x, y) series; not locked itself (MetricsHistory holds the lock)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 2 or capacity % 2:
            raise ValueError(f"capacity must be an even number >= 2, got {capacity}")
        self.capacity = capacity
        self._x = np.empty(capacity)
        self._y = np.empty(capacity)
        self._lo = np.empty(capacity)
        self._hi = np.empty(capacity)
        self._n = 0
        self.stride = 1  # raw points per full bucket
        self._pending: list[float] = [0.0, 0.0, math.inf, -math.inf, 0]  # sum x, sum y, min, max, count
        self.version = 0
        self.last = math.nan
        self.recent: deque[tuple[float, float]] = deque(maxlen=RECENT_POINTS)

    def add(self, x: float, y: float) -> None:
        if not math.isfinite(y):
            return
        self.recent.append((x, y))
        p = self._pending
        p[0] += x
        p[1] += y
        p[2] = min(p[2], y)
        p[3] = max(p[3], y)
        p[4] += 1
        self.last = y
        self.version += 1
        if p[4] == self.stride:
            i = self._n
            self._x[i], self._y[i] = p[0] / p[4], p[1] / p[4]
            self._lo[i], self._hi[i] = p[2], p[3]
            self._n += 1
            self._pending = [0.0, 0.0, math.inf, -math.inf, 0]
            if self._n == self.capacity:
                self._halve()

    def _halve(self) -> None:
        half = self.capacity // 2
        self._x[:half] = 0.5 * (self._x[0::2] + self._x[1::2])
        self._y[:half] = 0.5 * (self._y[0::2] + self._y[1::2])
        self._lo[:half] = np.minimum(self._lo[0::2], self._lo[1::2])
        self._hi[:half] = np.maximum(self._hi[0::2], self._hi[1::2])
        self._n = half
        self.stride *= 2

    def truncate(self, x_max: float) -> None:
        """Drop the points after `x_max` (a resume went back to an earlier step).

        Buckets are dropped whole by their mean x, so a merged bucket straddling `x_max` goes or
        stays with most of its points; the raw `recent` values are cut exactly.
        """
        p = self._pending
        kept = int(np.searchsorted(self._x[: self._n], x_max, side="right"))
        drop_pending = bool(p[4]) and p[0] / p[4] > x_max
        if kept == self._n and not drop_pending:
            return
        if drop_pending or kept < self._n:
            self._pending = [0.0, 0.0, math.inf, -math.inf, 0]
        self._n = kept
        self.recent = deque(((x, y) for x, y in self.recent if x <= x_max), maxlen=RECENT_POINTS)
        if self.recent:
            self.last = self.recent[-1][1]
        elif self._pending[4]:
            self.last = self._pending[1] / self._pending[4]
        else:
            self.last = float(self._y[kept - 1]) if kept else math.nan
        self.version += 1

    def snapshot(self) -> SeriesSnapshot:
        n = self._n
        x, y, lo, hi = self._x[:n], self._y[:n], self._lo[:n], self._hi[:n]
        p = self._pending
        if p[4]:  # the partial bucket is shown too, so the newest value is always on screen
            x = np.append(x, p[0] / p[4])
            y = np.append(y, p[1] / p[4])
            lo = np.append(lo, p[2])
            hi = np.append(hi, p[3])
        else:
            x, y, lo, hi = x.copy(), y.copy(), lo.copy(), hi.copy()
        return SeriesSnapshot(x, y, lo, hi, self.last, self.version)


@dataclass(frozen=True)
class LogEntry:
    """One line of the event log. `level` is "info", "good", "warning" or "error".

    A warning repeated in a row is one entry: each repeat replaces it (a new index, the step of
    the latest) and counts itself in `repeats`.
    """

    index: int
    step: int
    time: float
    level: str
    text: str
    repeats: int = 1


@dataclass(frozen=True)
class RunInfo:
    """Who the run is, from its latest RunStarted (`agent_settings`: the [mpo]/[trpo] values in effect)."""

    name: str
    algo: str
    env_id: str
    device: str
    run_dir: str
    agent_settings: Mapping[str, SettingValue] = field(default_factory=lambda: MappingProxyType({}))
    resumed: bool = False


@dataclass(frozen=True)
class StatusSnapshot:
    info: RunInfo | None
    state: RunState
    message: str
    step: int
    total_steps: int
    episodes: int
    updates: int
    steps_per_s: float | None
    updates_per_s: float | None
    start_time: float | None
    last_time: float | None
    last_checkpoint: str | None
    version: int
    session_start_time: float | None = None  # the latest RunStarted's time
    earlier_sessions_s: float = 0.0  # how long the sessions before it ran (first to last event of each)
    last_eval: EvalResult | None = None
    error: str | None = None  # the latest ErrorRaised message
    eta_s: float | None = None  # seconds to total_steps at the training rate; None while unknown
    system: Mapping[str, float] = field(default_factory=dict)  # the latest "sys/..." metrics (rltui.system)

    def elapsed(self, now: float | None = None) -> float | None:
        """Seconds the run has been running, over all its sessions, up to `now` or its last event."""
        end = self.last_time if now is None else now
        if self.session_start_time is None or end is None:
            return None
        return self.earlier_sessions_s + max(end - self.session_start_time, 0.0)


@dataclass
class _Status:
    info: RunInfo | None = None
    state: RunState = RunState.STARTING
    message: str = ""
    step: int = 0
    total_steps: int = 0
    episodes: int = 0
    updates: int = 0
    start_time: float | None = None
    last_time: float | None = None
    last_checkpoint: str | None = None
    version: int = 0
    latest: dict[str, float] = field(default_factory=dict)
    latest_version: int = 0
    session_start_time: float | None = None
    earlier_sessions_s: float = 0.0
    last_eval: EvalResult | None = None
    error: str | None = None
    rates: _RateWindow = field(default_factory=lambda: _RateWindow())
    manual: _ManualSession = field(default_factory=lambda: _ManualSession())


@dataclass
class _ManualSession:
    """The evaluation-mode episodes since it was switched on (summed up in one log line at its end)."""

    returns: list[float] = field(default_factory=list)
    step: int = 0

    def add(self, event: EvalResult) -> None:
        self.returns.extend(event.returns or (event.return_mean,))
        self.step = event.step


class _RateWindow:
    """Training throughput over the last RATE_WINDOW_S seconds of event time.

    Fed with (time, step, updates) at every UpdateMetrics. Pauses and evaluations are not training:
    the window starts again after them, and the rates read zero meanwhile. Warm-up (env steps before
    the first update: fast, since nothing learns) is not the rate to come: the window starts again
    at the first update, and until then the ETA is unknown.
    """

    def __init__(self) -> None:
        self.samples: deque[tuple[float, int, int]] = deque()
        self.updates = 0  # updates this session, summed over UpdateMetrics
        self.learning = False  # an update happened this session

    def restart(self, *, new_session: bool = False) -> None:
        self.samples.clear()
        if new_session:
            self.updates, self.learning = 0, False

    def add(self, time: float, step: int, updates: int) -> None:
        if not math.isfinite(time):
            return
        if updates > 0 and not self.learning:
            self.learning = True
            self.samples.clear()
        self.updates += updates
        samples = self.samples
        if samples and (time < samples[-1][0] or step < samples[-1][1]):
            samples.clear()  # time or steps went back (a log from several sessions): start over
        samples.append((time, step, self.updates))
        while len(samples) > 2 and samples[-1][0] - samples[1][0] >= RATE_WINDOW_S:
            samples.popleft()

    def measured(self) -> tuple[float, float] | None:
        """(steps/s, updates/s) over the window, None before it spans MIN_RATE_SPAN_S."""
        if len(self.samples) < 2:
            return None
        (t0, s0, u0), (t1, s1, u1) = self.samples[0], self.samples[-1]
        span = t1 - t0
        if span < MIN_RATE_SPAN_S:
            return None
        return (s1 - s0) / span, (u1 - u0) / span


class MetricsHistory:
    """Event subscriber holding everything the dashboard shows. Thread-safe."""

    def __init__(self, capacity: int = 1024, log_size: int = 500) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._series: dict[str, DownsampledSeries] = {}
        self._status = _Status()
        # Warnings are kept apart (the last `log_size` of them), so that a flood of them never
        # pushes the run's start, evaluations, checkpoints and errors out of the log.
        self._log: deque[LogEntry] = deque(maxlen=log_size)
        self._warnings: deque[LogEntry] = deque(maxlen=log_size)
        self._log_count = 0
        self._version_base: dict[str, int] = {}  # versions of series dropped by reset(): never reused
        self._series_full = False

    # ---- writing side (engine thread) -------------------------------------------------------
    def __call__(self, event: Event) -> None:
        with self._lock:
            self._apply(event)

    def extend(self, events: list[Event]) -> None:
        with self._lock:
            for event in events:
                self._apply(event)

    def note(self, level: str, text: str) -> None:
        """Add a line to the event log (at the latest step) without touching the run's status."""
        with self._lock:
            self._note(level, text)

    def _note(self, level: str, text: str) -> None:
        st = self._status
        self._log_add(st.step, st.last_time or 0.0, level, text)

    def reset(self) -> None:
        """Forget the run (series, status, latest values) but keep the event log, before a reload.

        Every version number moves on (none is reused), so a view that compares versions redraws.
        """
        with self._lock:
            self._reset()

    def _reset(self) -> None:
        for name, series in self._series.items():
            self._version_base[name] = series.version + 1
        self._series.clear()
        self._series_full = False
        old = self._status
        self._status = _Status(version=old.version + 1, latest_version=old.latest_version + 1)

    def follow(self, follower: MetricsFollower) -> bool:
        """Fold in what `follower` finds next in a run's log: if the file started over, forget what
        it said before; its warnings go to the event log. Returns whether the end was reached."""
        update = follower.read()
        with self._lock:
            if update.reset:
                self._reset()
            for message in update.warnings:
                self._note("warning", message)
            for event in update.events:
                self._apply(event)
        return follower.caught_up

    def load(self, path: Path, cancelled: Callable[[], bool] = lambda: False) -> None:
        """Fold in the whole of a run's log as it is now (e.g. before the run is resumed).

        Stops early when `cancelled()` turns true, or when reading no longer moves on (the file
        cannot be read: the warning says why).
        """
        follower = MetricsFollower(path)
        try:
            while not cancelled():
                before = follower.offset
                if self.follow(follower) or follower.offset == before:
                    return
        finally:
            follower.close()

    def record_failure(self, message: str) -> None:
        """Mark the run FAILED from outside the event stream (e.g. engine.run() raised)."""
        with self._lock:
            st = self._status
            if st.state is not RunState.FAILED:
                self._log_add(st.step, st.last_time or 0.0, "error", message)
            st.state, st.message = RunState.FAILED, message
            st.version += 1

    def _apply(self, event: Event) -> None:
        st = self._status
        if isinstance(event, RunStarted):
            self._start_session(event)
        st.step = max(st.step, event.step)
        if math.isfinite(event.time):
            st.last_time = event.time if st.last_time is None else max(st.last_time, event.time)
        st.version += 1
        if isinstance(event, RunStarted):
            name, algo, env_id, device, run_dir = (
                clean_text(v, NAME_LIMIT) for v in (event.name, event.algo, event.env_id, event.device, event.run_dir)
            )
            st.info = RunInfo(name, algo, env_id, device, run_dir,
                              MappingProxyType(dict(event.agent_settings)), event.resumed)
            st.total_steps = event.total_steps
            if st.start_time is None and math.isfinite(event.time):
                st.start_time = event.time
            verb = "resumed" if event.resumed else "started"
            self._log_add(event.step, event.time, "info", f"run {verb}: {event.run_dir}")
        elif isinstance(event, StateChanged):
            if event.state is not st.state:
                st.rates.restart()
            if event.state is not RunState.EVALUATING:
                self._close_manual_session(event.time)
            st.state = event.state
            st.message = event.message
            if event.state in (RunState.FINISHED, RunState.FAILED):
                level = "good" if event.state is RunState.FINISHED else "error"
                text = event.state.value + (f": {event.message}" if event.message else "")
                self._log_add(event.step, event.time, level, text)
        elif isinstance(event, EpisodeFinished):
            st.episodes += 1
            self._add(TRAIN_RETURN, event.step, event.episode_return)
        elif isinstance(event, UpdateMetrics):
            st.updates += max(event.updates, 0)
            st.rates.add(event.time, event.step, max(event.updates, 0))
            for name, value in event.metrics.items():
                self._add(name, event.step, value)
        elif isinstance(event, EvalResult) and event.source == "manual":
            self._add(MANUAL_RETURN, event.step, event.return_mean)
            st.manual.add(event)
        elif isinstance(event, EvalResult):
            st.last_eval = event
            self._add(EVAL_RETURN, event.step, event.return_mean)
            self._add("eval/return_std", event.step, event.return_std)
            self._add("eval/length_mean", event.step, event.length_mean)
            mode = "deterministic" if event.deterministic else "stochastic"
            why = "requested, " if event.source == "requested" else ""
            self._log_add(
                event.step, event.time, "info",
                f"eval ({why}{mode}, {event.episodes} ep): {event.return_mean:.1f} ± {event.return_std:.1f}",
            )
        elif isinstance(event, CheckpointSaved):
            st.last_checkpoint = event.path
            self._log_add(event.step, event.time, "good", f"checkpoint {event.path}")
        elif isinstance(event, BestCheckpointSaved):
            self._log_add(event.step, event.time, "good", f"new best {event.return_mean:.1f}: {event.path}")
        elif isinstance(event, WarningRaised):
            self._log_add(event.step, event.time, "warning", event.message)
        elif isinstance(event, ErrorRaised):
            st.message = st.error = event.message
            self._log_add(event.step, event.time, "error", event.message)

    def _close_manual_session(self, time: float) -> None:
        """Evaluation mode ended: its episodes become one line of the event log."""
        manual = self._status.manual
        if manual.returns:
            returns = np.array(manual.returns)
            self._log_add(manual.step, time, "info",
                          f"evaluation mode: {len(returns)} episode{'s' if len(returns) != 1 else ''}, "
                          f"{returns.mean():.1f} ± {returns.std():.1f} (deterministic, at step {manual.step:,})")
        manual.returns.clear()

    def _start_session(self, event: RunStarted) -> None:
        """A (resumed) session begins: close the previous one's time, go back to the event's step."""
        st = self._status
        self._close_manual_session(event.time)
        if st.session_start_time is not None and st.last_time is not None:
            st.earlier_sessions_s += max(st.last_time - st.session_start_time, 0.0)
        st.session_start_time = event.time if math.isfinite(event.time) else None
        st.rates.restart(new_session=True)
        if event.step < st.step:  # the steps after the checkpoint it resumes from never happened
            for series in self._series.values():
                series.truncate(float(event.step))
            self._log_add(event.step, event.time, "info",
                          f"steps {event.step:,}-{st.step:,} of the previous session were not checkpointed: "
                          "dropped from the charts")
            st.step = event.step

    def _add(self, name: str, step: int, value: Any) -> None:
        try:
            y = float(value)
        except (TypeError, ValueError):
            return
        series = self._series.get(name)
        if series is None:
            name = clean_text(name, NAME_LIMIT)
            series = self._series.get(name)
        if series is None:
            if len(self._series) >= MAX_SERIES:
                if not self._series_full:
                    self._series_full = True
                    st = self._status
                    self._log_add(step, st.last_time or 0.0, "warning",
                                  f"more than {MAX_SERIES} metric names: new ones are not shown (first: {name})")
                return
            series = self._series[name] = DownsampledSeries(self.capacity)
            series.version = self._version_base.get(name, 0)
        series.add(float(step), y)
        st = self._status
        st.latest[name] = y
        st.latest_version += 1

    def _log_add(self, step: int, time: float, level: str, text: str) -> None:
        text, repeats = clean_text(text), 1
        last = self._warnings[-1] if level == "warning" and self._warnings else None
        if last is not None and last.index == self._log_count - 1 and last.text == text:
            repeats = self._warnings.pop().repeats + 1
        entry = LogEntry(self._log_count, step, time, level, text, repeats)
        (self._warnings if level == "warning" else self._log).append(entry)
        self._log_count += 1

    # ---- reading side (UI thread) -----------------------------------------------------------
    def status(self) -> StatusSnapshot:
        with self._lock:
            st = self._status
            steps_per_s, updates_per_s, eta_s = self._rates()
            return StatusSnapshot(
                info=st.info,
                state=st.state,
                message=st.message,
                step=st.step,
                total_steps=st.total_steps,
                episodes=st.episodes,
                updates=st.updates,
                steps_per_s=steps_per_s,
                updates_per_s=updates_per_s,
                start_time=st.start_time,
                last_time=st.last_time,
                last_checkpoint=st.last_checkpoint,
                version=st.version,
                session_start_time=st.session_start_time,
                earlier_sessions_s=st.earlier_sessions_s,
                last_eval=st.last_eval,
                error=st.error,
                eta_s=eta_s,
                system={k: v for k, v in st.latest.items() if k.startswith(SYSTEM_PREFIX)},
            )

    def _rates(self) -> tuple[float | None, float | None, float | None]:
        """(steps/s, updates/s, ETA s) as the status shows them: nothing once the run ended, zero
        while it is paused or evaluating, else over the rate window (ETA only once learning)."""
        st = self._status
        if st.state.is_final or st.state is RunState.STARTING:
            return None, None, None
        if st.state is not RunState.RUNNING:
            return 0.0, 0.0, None
        measured = st.rates.measured()
        if measured is None:
            return None, None, None
        steps_per_s = measured[0]
        # updates farther apart than the window are unknown, not zero
        updates_per_s = None if st.rates.learning and measured[1] == 0 else measured[1]
        eta = None
        if st.rates.learning and steps_per_s > 0 and st.total_steps > st.step:
            eta = (st.total_steps - st.step) / steps_per_s
        return steps_per_s, updates_per_s, eta

    def series_version(self, name: str) -> int:
        with self._lock:
            series = self._series.get(name)
            return series.version if series is not None else self._version_base.get(name, 0)

    def series(self, name: str) -> SeriesSnapshot | None:
        with self._lock:
            series = self._series.get(name)
            return series.snapshot() if series is not None else None

    def recent(self, name: str, n: int = RECENT_POINTS) -> list[float]:
        """The last `n` (at most RECENT_POINTS) raw values of a series, oldest first."""
        with self._lock:
            series = self._series.get(name)
            if series is None or n <= 0:
                return []
            return [y for _, y in list(series.recent)[-n:]]

    def series_names(self) -> list[str]:
        with self._lock:
            return sorted(self._series)

    def latest(self) -> tuple[int, dict[str, float]]:
        """(version, copy of the latest value of every metric)."""
        with self._lock:
            return self._status.latest_version, dict(self._status.latest)

    def log_count(self) -> int:
        """How many log entries were ever added (the next entry's index)."""
        with self._lock:
            return self._log_count

    def log_since(self, index: int) -> list[LogEntry]:
        """Log entries with `entry.index >= index` that are still held, in order."""
        with self._lock:
            held = [list(itertools.takewhile(lambda e: e.index >= index, reversed(log)))[::-1]
                    for log in (self._log, self._warnings)]
        return list(heapq.merge(*held, key=lambda e: e.index))
