"""Table with the latest value of every metric; only cells whose value changed are updated."""

from __future__ import annotations

from textual.widgets import DataTable

from rltui.widgets.line_chart import format_value


class MetricsTable(DataTable):
    DEFAULT_CSS = "MetricsTable { height: 1fr; }"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False, show_cursor=False)
        self._shown: dict[str, str] = {}
        self._version = -1

    def on_mount(self) -> None:
        self.add_column("metric", key="metric", width=24)
        self.add_column("latest", key="value", width=8)

    def show(self, version: int, latest: dict[str, float]) -> None:
        if version == self._version:
            return
        self._version = version
        added = False
        for name, value in latest.items():
            text = format_value(value)
            if name not in self._shown:
                self.add_row(name, text, key=name)
                added = True
            elif self._shown[name] != text:
                self.update_cell(name, "value", text)
            self._shown[name] = text
        if added:
            self.sort("metric")
