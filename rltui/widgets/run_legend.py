"""The legend of the compare view: each run's (or group's) marker in its colour, and its name.

Entries are packed into as many lines as the width needs, never broken inside an entry, so a
marker always stands beside its name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text
from textual.widget import Widget

from rltui.comparison import RunStyle

SEPARATOR = "   "


@dataclass(frozen=True)
class LegendEntry:
    label: str
    style: RunStyle
    note: str = ""  # after the label, dim: "(failed)", "(3 runs)"


def entry_text(entry: LegendEntry) -> Text:
    text = Text(no_wrap=True)
    text.append(f"━{entry.style.marker}━ ", entry.style.colour)
    text.append(entry.label)
    if entry.note:
        text.append(f" {entry.note}", "dim")
    return text


def pack(heading: Text | None, entries: Sequence[LegendEntry], width: int) -> Text:
    """`heading` then the entries, on lines of at most `width` cells (an entry longer than a line
    gets a line of its own)."""
    parts = ([heading] if heading is not None else []) + [entry_text(e) for e in entries]
    lines: list[Text] = []
    for part in parts:
        if lines and lines[-1].cell_len + len(SEPARATOR) + part.cell_len <= width:
            lines[-1].append(SEPARATOR)
            lines[-1].append_text(part)
        else:
            lines.append(part.copy())
    return Text("\n", no_wrap=True, overflow="ellipsis").join(lines)


class RunLegend(Widget):
    DEFAULT_CSS = "RunLegend { height: auto; }"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._heading: Text | None = None
        self._entries: tuple[LegendEntry, ...] = ()

    def show(self, heading: Text | None, entries: Sequence[LegendEntry]) -> None:
        self._heading, self._entries = heading, tuple(entries)
        self.refresh(layout=True)

    def render(self) -> Text:
        return pack(self._heading, self._entries, max(self.content_size.width, 1))
