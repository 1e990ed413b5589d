"""Log of notable run events: checkpoints (with paths), evaluations, warnings and errors."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import RichLog

from rltui.history import LogEntry

# Tags keep the levels readable without colour (NO_COLOR).
LEVELS = {"info": ("", ""), "good": ("", "green"), "warning": ("warning: ", "yellow"), "error": ("ERROR: ", "bold red")}


class EventLog(RichLog):
    DEFAULT_CSS = "EventLog { height: 1fr; }"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, max_lines=500, wrap=True, markup=False, highlight=False)
        self.next_index = 0

    def show(self, entries: list[LogEntry]) -> None:
        for entry in entries:
            tag, style = LEVELS.get(entry.level, ("", ""))
            line = Text(f"{entry.step:>9,} ", style="dim")
            line.append(tag + entry.text, style=style)
            self.write(line)
            self.next_index = entry.index + 1
