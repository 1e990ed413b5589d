"""Latest value of every metric, one row each, sorted by name.

A Line-API scroll view: rows are plain strips made on demand, and a new value repaints only
its own row (a DataTable re-rendered the whole table at every refresh).
"""

from __future__ import annotations

from rich.segment import Segment
from textual.geometry import Region, Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from rltui.widgets.line_chart import format_value

VALUE_WIDTH = 8


class MetricsTable(ScrollView, can_focus=True):
    COMPONENT_CLASSES = {"metrics-table--header", "metrics-table--value"}
    DEFAULT_CSS = """
    MetricsTable { height: 1fr; }
    MetricsTable > .metrics-table--header { text-style: bold; color: $text-muted; }
    MetricsTable > .metrics-table--value { color: $accent; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._names: list[str] = []
        self._values: dict[str, str] = {}
        self._version = -1

    def show(self, version: int, latest: dict[str, float]) -> None:
        if version == self._version:
            return
        self._version = version
        values = {name: format_value(value) for name, value in latest.items()}
        if sorted(values) != self._names:
            self._names = sorted(values)
            self._values = values
            self.virtual_size = Size(self.scrollable_content_region.width, len(self._names) + 1)
            self.refresh()
            return
        top = int(self.scroll_offset.y)
        for row, name in enumerate(self._names, start=1):
            if values[name] != self._values.get(name):
                self.refresh(Region(0, row - top, self.scrollable_content_region.width, 1))
        self._values = values

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        row = y + int(self.scroll_offset.y)
        base = self.rich_style
        if row == 0:
            text = "metric".ljust(max(0, width - VALUE_WIDTH)) + "latest".rjust(VALUE_WIDTH)
            style = base + self.get_component_rich_style("metrics-table--header", partial=True)
            return Strip([Segment(text[:width], style)]).adjust_cell_length(width, base)
        if row > len(self._names):
            return Strip.blank(width, base)
        name = self._names[row - 1]
        name_width = max(0, width - VALUE_WIDTH - 1)
        label = name if len(name) <= name_width else name[: max(0, name_width - 1)] + "…"
        value_style = base + self.get_component_rich_style("metrics-table--value", partial=True)
        segments = [Segment(label.ljust(name_width) + " ", base),
                    Segment(self._values.get(name, "").rjust(VALUE_WIDTH), value_style)]
        return Strip(segments).adjust_cell_length(width, base)
