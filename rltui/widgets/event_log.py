"""The run's event log: its start, evaluations, checkpoints, warnings, errors and end, one entry each.

Long entries wrap under their own text (a hanging indent past the step column), never sideways,
and are wrapped again when the width changes. A run can flood the log (a loss that keeps going
non-finite warns at every update), so:

- repeats of one warning in a row are one entry with a count and the step of the last one (the
  history counts them: `LogEntry.repeats`);
- the entries a user scrolls back for (the run's start, evaluations, checkpoints, errors, its
  end) are kept apart from the warnings, each kind bounded on its own, so no flood of warnings
  pushes them out (MetricsHistory keeps its log the same way);
- `w` on the focused log hides and shows the warnings.

The view follows new entries while it is scrolled to the bottom; scrolled back, it stays put.
A Line-API scroll view: the wrapped lines of each entry are made once per width and looked up.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from rltui.history import LogEntry

# Tags keep the levels readable without colour (NO_COLOR).
TAGS = {"warning": "warning: ", "error": "ERROR: "}
LESSER_LEVELS = {"warning"}  # what a flood is made of; the rest is kept apart from it
MAX_ENTRIES = 500  # entries kept of the levels that are not lesser (as MetricsHistory keeps)
MAX_LESSER = 500  # warnings kept
MIN_TEXT_WIDTH = 12  # the text column is never narrower, however narrow the log


def is_lesser(entry: LogEntry) -> bool:
    """Whether `entry` is of the kind a flood is made of (it gives way to the others)."""
    return entry.level in LESSER_LEVELS


@dataclass
class _Shown:
    """One entry of the view: the latest log entry of its repeats, shown at the step of the first
    of them this view saw."""

    entry: LogEntry
    step: int
    lines: list[Strip] = field(default_factory=list)  # wrapped at the current width; [] when not yet

    def text(self) -> str:
        """The entry's text as shown after the step: tag, message and repeats."""
        text = TAGS.get(self.entry.level, "") + self.entry.text
        if self.entry.repeats > 1:
            text += f" (×{self.entry.repeats}, the last at step {self.entry.step:,})"
        return text


class EventLog(ScrollView, can_focus=True):
    BINDINGS = [Binding("w", "toggle_warnings", "Warnings", tooltip="event log: hide or show the warnings")]
    COMPONENT_CLASSES = {"event-log--step", "event-log--good", "event-log--warning", "event-log--error"}
    DEFAULT_CSS = """
    EventLog { height: 1fr; overflow-x: hidden; scrollbar-gutter: stable; scrollbar-size-vertical: 1; }
    EventLog > .event-log--step { color: $text-muted; }
    EventLog > .event-log--good { color: $success; }
    EventLog > .event-log--warning { color: $warning; }
    EventLog > .event-log--error { color: $error; text-style: bold; }
    """

    STYLED_PARTS = ("step", "good", "warning", "error")

    hide_warnings: reactive[bool] = reactive(False, init=False)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.next_index = 0  # the index of the next history log entry to show
        self._shown: list[_Shown] = []  # in log order
        self._visible: list[_Shown] = []  # those shown now (warnings hidden or not)
        self._starts: list[int] = []  # the first line of each visible entry
        self._line_count = 0
        self._width = 0  # the width the entries are wrapped at
        self._step_width = 0  # characters of the step column
        self._following = True  # the view stays at the bottom as entries come

    # ---- entries ----------------------------------------------------------------------------
    def show(self, entries: list[LogEntry]) -> None:
        """Add the history's new log entries (those from `next_index` on)."""
        if not entries:
            return
        for entry in entries:
            self.next_index = entry.index + 1
            last = self._shown[-1] if self._shown else None
            if (entry.repeats > 1 and last is not None and last.entry.level == entry.level
                    and last.entry.text == entry.text):  # one more repeat of what is shown last
                last.entry, last.lines = entry, []
            else:
                self._shown.append(_Shown(entry, entry.step))
        self._shown = _bounded(self._shown)
        self._layout()

    def shown_texts(self) -> list[str]:
        """Each visible entry on one line (step and text, unwrapped): what the log holds."""
        return [f"{s.step:,} {s.text()}" for s in self._visible]

    def wrapped_lines(self) -> list[str]:
        """The lines as drawn (wrapped at the current width), for tests."""
        return [strip.text for shown in self._visible for strip in shown.lines]

    def action_toggle_warnings(self) -> None:
        self.hide_warnings = not self.hide_warnings

    def watch_hide_warnings(self, hide: bool) -> None:
        self._layout()
        hidden = sum(1 for s in self._shown if is_lesser(s.entry))
        self.notify(f"event log: {hidden} warnings hidden (w shows them)" if hide else "event log: warnings shown",
                    timeout=3)

    # ---- layout -----------------------------------------------------------------------------
    def on_resize(self, event: events.Resize) -> None:
        self._layout()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        for shown in self._shown:
            shown.lines = []
        self._layout()

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self._following = new_value >= self.max_scroll_y  # scrolled back: stay; at the bottom: follow

    def _layout(self) -> None:
        """Wrap what is not wrapped at the current width and place every visible entry; a view
        that was at the bottom stays there."""
        width = self.scrollable_content_region.width
        self._visible = [s for s in self._shown if not (self.hide_warnings and is_lesser(s.entry))]
        step_width = max((len(f"{s.step:,}") for s in self._visible), default=1)
        if width != self._width or step_width != self._step_width:
            self._width, self._step_width = width, step_width
            for shown in self._shown:
                shown.lines = []
        starts, total = [], 0
        styles: dict[str, Style] | None = None
        if width > 0:
            for shown in self._visible:
                if not shown.lines:
                    if styles is None:  # rich_style walks the ancestors: once per layout
                        styles = {part: self._part_style(part) for part in self.STYLED_PARTS}
                        styles["base"] = self.rich_style
                    shown.lines = self._wrap(shown, styles)
                starts.append(total)
                total += len(shown.lines)
        self._starts, self._line_count = starts, total
        self.virtual_size = Size(width, total)
        if self._following:
            self.scroll_end(animate=False)  # after the refresh, which sizes the scrollbars
        self.refresh()

    def _wrap(self, shown: _Shown, styles: dict[str, Style]) -> list[Strip]:
        """The entry's lines: the step, then the text wrapped in the column after it."""
        width, indent = self._width, self._step_width + 1
        base, step_style = styles["base"], styles["step"]
        text = Text(shown.text(), style=styles.get(shown.entry.level, ""))
        console = self.app.console
        lines = text.wrap(console, max(width - indent, MIN_TEXT_WIDTH), overflow="fold")
        strips = []
        for i, line in enumerate(lines):
            prefix = f"{shown.step:>{self._step_width},} " if i == 0 else " " * indent
            line.rstrip()
            segments = [Segment(prefix, step_style), *line.render(console)]
            strips.append(Strip(segments).apply_style(base).crop_extend(0, width, base))
        return strips

    def _part_style(self, part: str) -> Style:
        return self.get_component_rich_style(f"event-log--{part}", partial=True)

    def render_line(self, y: int) -> Strip:
        row = y + int(self.scroll_offset.y)
        width = self.scrollable_content_region.width
        if not 0 <= row < self._line_count:
            return Strip.blank(width, self.rich_style)
        i = bisect.bisect_right(self._starts, row) - 1
        return self._visible[i].lines[row - self._starts[i]]


def _bounded(shown: list[_Shown]) -> list[_Shown]:
    """`shown` without its oldest entries beyond MAX_LESSER lesser ones and MAX_ENTRIES others."""
    lesser = sum(1 for s in shown if is_lesser(s.entry))
    extra_lesser, extra_other = max(lesser - MAX_LESSER, 0), max(len(shown) - lesser - MAX_ENTRIES, 0)
    if not extra_lesser and not extra_other:
        return shown
    kept = []
    for s in shown:
        if is_lesser(s.entry) and extra_lesser:
            extra_lesser -= 1
        elif not is_lesser(s.entry) and extra_other:
            extra_other -= 1
        else:
            kept.append(s)
    return kept
