"""Full-size view of one chart drawn with plotext (axes, ticks, legend).

plotext is only used here, for the one maximised chart: it is rebuilt once per data or size
change (never per paint), from series downsampled to at most twice the plot width. As in the
braille grid (rltui.widgets.line_chart): the EMA runs over the drawn points, so its effect does
not depend on the run's length; log scale is a symmetric log when a value is <= 0; and each
series has a marker of its own (braille dots, quarter blocks, bullets), so they stay apart
without colour.
"""

from __future__ import annotations

import numpy as np
import plotext
from rich.style import Style
from rich.text import Span, Text
from textual.widgets import Static

from rltui.history import SeriesSnapshot
from rltui.widgets.line_chart import (
    REFERENCE_CHAR,
    ChartSpec,
    chart_values,
    choose_scale,
    ema,
    format_value,
    option_flags,
)

MARKERS = {"main": "braille", "second": "hd", "third": "dot"}
TICKS = 5  # y ticks on a log or symmetric log scale


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
    """Build the chart with plotext's figure and return its ANSI text.

    On a log or symmetric log scale the values are transformed here and the y ticks labelled
    with the values they stand for (plotext's own log scale takes no values <= 0).
    """
    scale = choose_scale(log_y, chart_values(spec, data))
    fig = plotext.figure
    fig.clear()  # the figure is plotext's module-level one: start from a clean state every time
    plotext.terminal.limit(False, False)  # the widget's size, not the size of the terminal plotext sees
    fig.plot_size(width, height)
    fig.theme("dark")
    flags = option_flags(scale.flag, smoothing if any(s.smooth for s in spec.series) else 0.0, compact=False)
    fig.title(spec.title + (f" {flags}" if flags else ""))
    points = max(2, 2 * width)
    x_range: list[float] = []
    y_range: list[float] = []
    for s in spec.series:
        snap = data.get(s.name)
        if snap is None or len(snap) == 0:
            continue
        finite = np.isfinite(snap.y)
        x, y = downsample(snap.x[finite], scale.forward(snap.y[finite]), points)
        keep = np.isfinite(y)  # log: values <= 0 never come here (the scale is symlog then)
        x, y = x[keep], y[keep]
        if len(x) == 0:
            continue
        if s.smooth:
            y = ema(y, smoothing)
        signal = fig.signal(x.tolist(), y.tolist(), marker=MARKERS.get(s.role, "braille"))
        signal.label(s.label)
        signal.lines(True)
        fig.draw(signal)
        x_range = [min(x_range[0], x[0]), max(x_range[1], x[-1])] if x_range else [x[0], x[-1]]
        y_range = [min(y_range[0], y.min()), max(y_range[1], y.max())] if y_range else [y.min(), y.max()]
    if not x_range:
        fig.clear()
        return "no data yet"
    for ref in spec.references:  # drawn as a flat series: plotext's fig.line takes no transformed scale
        value = float(scale.forward(np.array([ref.value]))[0])
        if np.isfinite(value):
            signal = fig.signal(x_range, [value, value], marker=REFERENCE_CHAR)
            signal.label(f"{ref.label} {ref.value:g}")
            signal.lines(True)
            fig.draw(signal)
            y_range = [min(y_range[0], value), max(y_range[1], value)]
    if scale.kind != "linear":
        ticks = np.linspace(y_range[0], y_range[1], TICKS) if y_range[1] > y_range[0] else np.array(y_range[:1])
        fig.ruler(1).ticks(ticks.tolist(), [format_value(scale.inverse(float(t))) for t in ticks])
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
