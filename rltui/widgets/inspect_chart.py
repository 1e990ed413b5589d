"""Full-size view of one chart drawn with plotext (axes, ticks, legend).

plotext is only used here, for the one maximised chart: it is rebuilt once per data or size
change (never per paint), from series downsampled to at most twice the plot width.
"""

from __future__ import annotations

import numpy as np
import plotext
from rich.style import Style
from rich.text import Span, Text
from textual.widgets import Static

from rltui.history import SeriesSnapshot
from rltui.widgets.line_chart import ChartSpec, ema


def downsample(x: np.ndarray, y: np.ndarray, points: int) -> tuple[np.ndarray, np.ndarray]:
    """Average consecutive points down to at most `points` (x and y keep their order)."""
    n = len(x)
    if n <= points:
        return x, y
    bins = (np.arange(n) * points) // n
    counts = np.bincount(bins, minlength=points)
    return np.bincount(bins, x, points) / counts, np.bincount(bins, y, points) / counts


def plot_chart(
    spec: ChartSpec,
    data: dict[str, SeriesSnapshot | None],
    width: int,
    height: int,
    smoothing: float,
    log_y: bool,
) -> str:
    """Build the chart with plotext's figure and return its ANSI text."""
    fig = plotext.figure
    fig.clear()  # the figure is plotext's module-level one: start from a clean state every time
    fig.plot_size(width, height)
    fig.theme("dark")
    fig.title(spec.title + (" (log)" if log_y else ""))
    points = max(2, 2 * width)
    x_range: list[float] = []
    for s in spec.series:
        snap = data.get(s.name)
        if snap is None or len(snap) == 0:
            continue
        y = ema(snap.y, smoothing) if s.smooth else snap.y
        keep = y > 0 if log_y else np.isfinite(y)
        x, y = downsample(snap.x[keep], y[keep], points)
        if len(x) == 0:
            continue
        signal = fig.signal(x.tolist(), y.tolist(), marker="braille")
        signal.label(s.label)
        signal.lines(True)
        fig.draw(signal)
        x_range = [min(x_range[0], x[0]), max(x_range[1], x[-1])] if x_range else [x[0], x[-1]]
    if not x_range:
        fig.clear()
        return "no data yet"
    for ref in spec.references:  # drawn as a flat series: plotext's fig.line ignores a log scale
        if not log_y or ref.value > 0:
            signal = fig.signal(x_range, [ref.value, ref.value], marker="braille")
            signal.label(f"{ref.label} {ref.value:g}")
            signal.lines(True)
            fig.draw(signal)
    if log_y:
        fig.ruler(1).scale("log")
    text = fig.build().string()
    fig.clear()
    return text


class InspectChart(Static):
    """Shows one chart full size; `show()` redraws it, a resize redraws it too."""

    DEFAULT_CSS = "InspectChart { height: 1fr; }"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._args: tuple[ChartSpec, dict[str, SeriesSnapshot | None], float, bool] | None = None

    def show(self, spec: ChartSpec, data: dict[str, SeriesSnapshot | None], smoothing: float, log_y: bool) -> None:
        self._args = (spec, data, smoothing, log_y)
        self._redraw()

    def on_resize(self) -> None:
        self._redraw()

    def _redraw(self) -> None:
        width, height = self.content_size
        if self._args is None or width < 10 or height < 5:
            return
        spec, data, smoothing, log_y = self._args
        text = Text.from_ansi(plot_chart(spec, data, width, height, smoothing, log_y), no_wrap=True)
        # Keep the foreground colours only: the app's theme supplies the background.
        text.spans = [Span(s.start, s.end, Style(color=_style(s.style).color)) for s in text.spans]
        self.update(text)


def _style(style: str | Style) -> Style:
    return Style.parse(style) if isinstance(style, str) else style
