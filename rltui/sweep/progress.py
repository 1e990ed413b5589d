"""Live progress of a sweep in the terminal, read from its trials' run logs as they grow.

Per trial: its setting, seed, step, last evaluation return and state. On a terminal (without
`--headless`) a table redrawn in place about once a second; headless or into a file, one line per
thing that happened (a trial started or resumed, evaluated, ended) and a summary line every
`SUMMARY_INTERVAL_S`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from rltui.events import ErrorRaised, EvalResult, Event, RunStarted, RunState, StateChanged, WarningRaised
from rltui.runlog import LOG_NAME, MetricsFollower
from rltui.sweep.plan import INTERRUPTED_NOTE, SweepPlan, TrialPlan

REDRAW_INTERVAL_S = 1.0
SUMMARY_INTERVAL_S = 60.0
PENDING, RUNNING = "pending", "running"


@dataclass
class TrialView:
    """What the progress shows of one trial."""

    trial: TrialPlan
    state: str = PENDING  # pending, running, finished, stopped early, failed, restarting, or Tune's word
    step: int = 0
    total_steps: int = 0
    last_eval: float | None = None
    sessions: int = 0
    ended: bool = False

    def apply(self, event: Event) -> list[str]:
        """Fold one event; returns what is worth a line of its own."""
        said: list[str] = []
        self.step = max(self.step, event.step)
        if isinstance(event, RunStarted):
            self.sessions += 1
            self.total_steps = event.total_steps
            self.step, self.state, self.ended = event.step, RUNNING, False
            said.append(f"resumed from step {event.step:,}" if event.resumed else "started")
        elif isinstance(event, EvalResult) and event.episodes > 0:
            self.last_eval = event.return_mean
            said.append(f"evaluation at step {event.step:,}: {event.return_mean:.1f}")
        elif isinstance(event, StateChanged) and event.state.is_final:
            self.ended = True
            if event.state is RunState.FAILED:
                self.state = "failed"
            else:
                self.state = "finished" if self.step >= self.total_steps else "stopped early"
            said.append(f"{self.state} at step {self.step:,}")
        elif isinstance(event, ErrorRaised):
            said.append(f"error: {event.message}")
        elif isinstance(event, WarningRaised) and event.message.startswith(INTERRUPTED_NOTE):
            self.state = INTERRUPTED_NOTE
        return said


class SweepProgress:
    def __init__(self, plan: SweepPlan, sweep_dir: Path, stream: TextIO, *, live: bool) -> None:
        self.plan = plan
        self.stream = stream
        self.live = live and stream.isatty()
        self.views = {t.name: TrialView(t) for t in plan.trials}
        self._followers = {t.name: MetricsFollower(Path(sweep_dir) / t.name / LOG_NAME) for t in plan.trials}
        self.started = time.monotonic()
        self._last_draw = -REDRAW_INTERVAL_S
        self._last_summary = time.monotonic()
        self._drawn_lines = 0

    def update(self, tune_states: Mapping[str, str] | None = None, *, force: bool = False) -> None:
        """Read what the logs gained and show it (at most once per REDRAW_INTERVAL_S unless `force`).
        `tune_states`: Tune's status of each trial by name (PENDING, RUNNING, ERROR, ...)."""
        now = time.monotonic()
        if not force and now - self._last_draw < REDRAW_INTERVAL_S:
            return
        self._last_draw = now
        lines: list[str] = []
        for name, follower in self._followers.items():
            view = self.views[name]
            for event in follower.poll():
                lines += [f"{view.trial.name}: {text}" for text in view.apply(event)]
            tune_state = (tune_states or {}).get(name)
            if tune_state is not None and not view.ended:
                view.state = {"PENDING": PENDING, "RUNNING": RUNNING, "ERROR": "failed"}.get(
                    tune_state, tune_state.lower())
            elif tune_state in ("PENDING", "RUNNING") and view.ended and view.state == "failed":
                view.state = "restarting"
        if self.live:
            self._redraw()
        else:
            for line in lines:
                self.stream.write(line + "\n")
            if now - self._last_summary >= SUMMARY_INTERVAL_S:
                self.stream.write(self.summary() + "\n")
                self._last_summary = now
        self.stream.flush()

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for view in self.views.values():
            counts[view.state] = counts.get(view.state, 0) + 1
        parts = ", ".join(f"{n} {state}" for state, n in sorted(counts.items(), key=lambda kv: -kv[1]))
        elapsed = _duration(time.monotonic() - self.started)
        return f"sweep {self.plan.name}: {len(self.views)} trials ({parts}) after {elapsed}"

    def table(self, max_rows: int) -> list[str]:
        """The summary line, a header and one row per trial (running ones first when they do not all fit)."""
        views = list(self.views.values())
        if len(views) > max_rows:
            order = {RUNNING: 0, "restarting": 0}
            views = sorted(views, key=lambda v: order.get(v.state, 1))[:max_rows]
        rows = [["SETTING", "SEED", "STEP", "EVAL", "STATE"]]
        for v in views:
            step = f"{v.step:,}/{v.total_steps:,}" if v.total_steps else "-"
            last = "-" if v.last_eval is None else f"{v.last_eval:.1f}"
            rows.append([v.trial.setting_label, str(v.trial.seed), step, last, v.state])
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = [self.summary()] + ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                                    for r in rows]
        if len(views) < len(self.views):
            lines.append(f"... and {len(self.views) - len(views)} more")
        return lines

    def _redraw(self) -> None:
        size = shutil.get_terminal_size((100, 24))
        lines = [line[: size.columns - 1] for line in self.table(max(size.lines - 4, 1))]
        if self._drawn_lines:
            self.stream.write(f"\x1b[{self._drawn_lines}F\x1b[J")  # back to the table's first line, clear below
        self.stream.write("\n".join(lines) + "\n")
        self._drawn_lines = len(lines)

    def close(self) -> None:
        self.update(force=True)
        if not self.live:
            self.stream.write(self.summary() + "\n")
        for follower in self._followers.values():
            follower.close()


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
