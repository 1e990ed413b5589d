"""Several runs side by side (`rltui compare`, the runs browser's `c`): what the compare view draws.

Nothing here draws: the screen (rltui/screens/compare.py) and the chart widget
(rltui/widgets/compare_chart.py) are thin layers over these pieces, which the tests pin directly.

- `assign_styles`: one colour and one marker glyph per run (or group), derived from a stable key
  (the run directory's name, or the group's name) and never from the run's position, so a run keeps
  its look across refreshes, re-orderings and views. Runs whose preferred look is taken by another
  shown run move to the next free one (decided in key order, so the result does not depend on the
  order the runs are listed in).
- `RunClock`: running seconds at each env step of a run, from its events (sessions of a resumed run
  add up; the time between sessions does not count, as in the dashboard's elapsed time), so any
  series can be drawn against wall-clock time instead of env steps.
- `FollowedRun`: one run's metrics.jsonl followed (`MetricsFollower`) into its own `MetricsHistory`
  and `RunClock`.
- `compared_metrics`: the dashboard's chart specs (`chart_specs`) flattened into one chart per
  series, for every algorithm among the runs.
- `run_curve` and `group_curve`: a run's series as drawn (smoothed, x in steps or seconds), and the
  mean of a group of runs (runs differing only by their seed) with a min-max or ±std band.
"""

from __future__ import annotations

import math
import threading
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from rltui.events import Event, RunStarted
from rltui.history import EVAL_RETURN, TRAIN_RETURN, DownsampledSeries, MetricsHistory, SeriesSnapshot
from rltui.runlog import LOG_NAME, MetricsFollower
from rltui.widgets.line_chart import ReferenceLine, ema

# Distinct on a dark background (Tableau 10, lightened), and one glyph per colour for NO_COLOR.
PALETTE = (
    "#5b9bd5", "#f28e2b", "#e15759", "#76c7c0", "#6cc24a",
    "#edc948", "#c490d1", "#ff9da7", "#b8906c", "#bab0ac",
)
MARKERS = ("●", "×", "+", "◆", "▲", "■", "○", "◇", "★", "▼")
GROUP_POINTS = 256  # x positions a group's mean is computed at


@dataclass(frozen=True)
class RunStyle:
    """How one run (or group) is drawn: a colour (hex) and a marker glyph, both in the legend."""

    colour: str
    marker: str


def style_hash(key: str) -> int:
    """A hash of `key` that is the same in every process (Python's hash() of a str is not)."""
    return zlib.crc32(key.encode("utf-8", "surrogateescape"))


def assign_styles(keys: Iterable[str]) -> dict[str, RunStyle]:
    """A distinct (colour, marker) for each key: its preferred pair (from its hash) when free.

    The first len(PALETTE) pairs give each colour its own marker; beyond that many keys, colours
    repeat with another marker, so every pair stays distinct up to len(PALETTE)**2 keys.
    """
    n = len(PALETTE)
    taken: set[int] = set()
    styles: dict[str, RunStyle] = {}
    for key in sorted(set(keys), key=lambda k: (style_hash(k), k)):
        preferred = style_hash(key) % n
        candidates = [(preferred + k) % n for k in range(n)] + [n + (preferred + k) % (n * n - n)
                                                                for k in range(n * n - n)]
        pair = next((c for c in candidates if c not in taken), preferred)
        taken.add(pair)
        colour = pair % n
        styles[key] = RunStyle(PALETTE[colour], MARKERS[(colour + pair // n) % n])
    return styles


class RunClock:
    """Running seconds at each env step of one run, folded from its events. Thread-safe.

    A resumed session's RunStarted closes the previous session (its time counts up to its last
    event) and drops what lay beyond the step it resumed from, as MetricsHistory does.
    """

    def __init__(self, capacity: int = 1024) -> None:
        self._capacity = capacity
        self._lock = threading.Lock()
        self._series = DownsampledSeries(capacity)
        self._session_start: float | None = None  # time of the current session's first event
        self._last_time: float | None = None
        self._earlier_s = 0.0  # running seconds of the sessions before the current one
        self._step = -1

    def __call__(self, event: Event) -> None:
        if not math.isfinite(event.time):
            return
        with self._lock:
            if isinstance(event, RunStarted) or self._session_start is None:
                if self._session_start is not None and self._last_time is not None:
                    self._earlier_s += max(self._last_time - self._session_start, 0.0)
                self._session_start = event.time
                if event.step < self._step:
                    self._series.truncate(float(event.step))
                    self._step = event.step
            self._last_time = event.time if self._last_time is None else max(self._last_time, event.time)
            if event.step > self._step:
                self._step = event.step
                self._series.add(float(event.step), self._earlier_s + max(event.time - self._session_start, 0.0))

    def reset(self) -> None:
        """Forget everything (the log started over); the version still moves on."""
        with self._lock:
            version = self._series.version + 1
            self._series = DownsampledSeries(self._capacity)
            self._series.version = version
            self._session_start = self._last_time = None
            self._earlier_s = 0.0
            self._step = -1

    @property
    def version(self) -> int:
        with self._lock:
            return self._series.version

    def seconds_at(self, steps: np.ndarray) -> np.ndarray:
        """Running seconds at each of `steps` (interpolated; NaN before the first event is known)."""
        with self._lock:
            known = self._series.snapshot()
        if len(known) == 0:
            return np.full(len(steps), np.nan)
        return np.interp(steps, known.x, known.y)


@dataclass(frozen=True)
class ComparedRun:
    """A run to compare: its directory, the name shown, the group of its seeds, its style key."""

    run_dir: Path
    name: str
    group: str = ""

    @cached_property
    def key(self) -> str:
        """What its colour and marker are derived from: the run directory's name and its parent's
        (a sweep's trials may share names across sweeps), not where the saves folder lies."""
        resolved = self.run_dir.resolve()
        return f"{resolved.parent.name}/{resolved.name}"


@dataclass
class FollowedRun:
    """One run's log followed into its own history and clock (`poll` on one thread at a time)."""

    run: ComparedRun
    history: MetricsHistory = field(default_factory=lambda: MetricsHistory(capacity=512))
    clock: RunClock = field(default_factory=RunClock)
    _follower: MetricsFollower | None = None

    def poll(self) -> bool:
        """Fold in what the log has next; True when its end was reached."""
        if self._follower is None:
            self._follower = MetricsFollower(self.run.run_dir / LOG_NAME)
        update = self._follower.read()
        if update.reset:
            self.history.reset()
            self.clock.reset()
        for message in update.warnings:
            self.history.note("warning", message)
        self.history.extend(update.events)
        for event in update.events:
            self.clock(event)
        return self._follower.caught_up

    def close(self) -> None:
        if self._follower is not None:
            self._follower.close()
            self._follower = None


# ---- what is charted --------------------------------------------------------------------------
@dataclass(frozen=True)
class ComparedMetric:
    """One chart of the compare view: one history series of every run."""

    name: str
    title: str
    log_y: bool = False
    smooth: bool = True
    references: tuple[ReferenceLine, ...] = ()


def compared_metrics(runs_settings: Sequence[tuple[str, Mapping[str, Any]]]) -> list[ComparedMetric]:
    """One chart per series of the dashboard's charts, for every (algo, agent settings) among the runs.

    Evaluation returns come first, then training returns, then the algorithms' own charts in the
    dashboard's order. A reference line (a KL bound) is kept when every run that has the chart
    draws the same one.
    """
    from rltui.screens.dashboard import chart_specs  # Textual-free, but lives beside the dashboard

    metrics: dict[str, ComparedMetric] = {}
    refs: dict[str, list[tuple[ReferenceLine, ...]]] = {}
    for algo, settings in sorted(runs_settings, key=lambda pair: pair[0]):
        for spec in chart_specs(algo, settings):
            for series in spec.series:
                title = spec.title if len(spec.series) == 1 else f"{spec.title}: {series.label}"
                metrics.setdefault(series.name, ComparedMetric(series.name, title, spec.log_y, series.smooth))
                refs.setdefault(series.name, []).append(spec.references if series is spec.series[0] else ())
    first = [name for name in (EVAL_RETURN, TRAIN_RETURN) if name in metrics]
    ordered = first + [name for name in metrics if name not in first]
    out = []
    for name in ordered:
        agreed = refs[name][0] if all(r == refs[name][0] for r in refs[name]) else ()
        metric = metrics[name]
        out.append(ComparedMetric(metric.name, metric.title, metric.log_y, metric.smooth, agreed))
    return out


# ---- curves -------------------------------------------------------------------------------------
class XAxis(Enum):
    STEPS = "env steps"
    TIME = "running time"


class Band(Enum):
    MIN_MAX = "min–max"
    STD = "±std"


@dataclass(frozen=True)
class Curve:
    """One line of a compare chart: `key` picks its style; `lo`/`hi` a band around it (groups)."""

    key: str
    label: str
    x: np.ndarray
    y: np.ndarray
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.x)


def run_curve(key: str, label: str, snapshot: SeriesSnapshot | None, smoothing: float,
              seconds_at: Callable[[np.ndarray], np.ndarray] | None = None) -> Curve | None:
    """A run's series as drawn: EMA-smoothed (`smoothing` 0: raw), against steps, or against
    running seconds when `seconds_at` (a RunClock's) is given. None when it has no points."""
    if snapshot is None or len(snapshot) == 0:
        return None
    x = snapshot.x if seconds_at is None else seconds_at(snapshot.x)
    y = ema(snapshot.y, smoothing)
    keep = np.isfinite(x) & np.isfinite(y)
    if not keep.any():
        return None
    return Curve(key, label, x[keep], y[keep])


def group_curve(key: str, label: str, members: Sequence[Curve], band: Band,
                points: int = GROUP_POINTS) -> Curve | None:
    """The mean of `members` over the x range they all cover, with a band (their min-max, or the
    mean ± their standard deviation, ddof 0). Each member is interpolated linearly at `points`
    evenly spaced x positions. None when the members share no x range."""
    if not members:
        return None
    start = max(float(c.x[0]) for c in members)
    end = min(float(c.x[-1]) for c in members)
    if start > end:
        return None
    grid = np.linspace(start, end, points) if end > start else np.array([start])
    values = np.stack([np.interp(grid, c.x, c.y) for c in members])
    mean = values.mean(axis=0)
    if band is Band.MIN_MAX:
        lo, hi = values.min(axis=0), values.max(axis=0)
    else:
        std = values.std(axis=0)
        lo, hi = mean - std, mean + std
    return Curve(key, label, grid, mean, lo, hi)
