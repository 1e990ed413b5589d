"""A braille chart of one metric for several runs (the compare view).

Like the dashboard's LineChart (whose braille helpers it shares), each terminal cell holds a 2x4
dot matrix and everything is computed once per data, size or option change. Each curve is drawn
in its run's colour, with its run's marker glyph every few cells along the line (at every data
point when there are few, e.g. evaluations), so runs stay apart without colour (NO_COLOR) too. A
group's band (min-max or ±std around its mean) is a stippled fill behind the lines. Below the
plot, the x range (env steps, or running time).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip

from rltui.comparison import Curve, RunStyle, XAxis
from rltui.widgets.line_chart import (
    CachedChart,
    ReferenceLine,
    _cell_codes,
    _column_fill,
    _transform,
    format_value,
    y_range,
)

MARKER_EVERY = 8  # cells between two markers of one line
GUTTER = 7  # y labels
Owner = tuple[str, str]  # (what: "" | "ref" | "band" | "line" | "marker", curve key)
NOBODY: Owner = ("", "")


@dataclass
class CurvesRaster:
    """Per plot row, its characters and who owns each cell; the ranges drawn."""

    chars: list[str]
    owners: list[list[Owner]]
    x_low: float = math.nan
    x_high: float = math.nan
    y_low: float = math.nan
    y_high: float = math.nan


def format_seconds(seconds: float) -> str:
    """Running time for an axis: 45s, 12:05 (minutes), 1:02:03 (hours)."""
    if not math.isfinite(seconds):
        return "–"
    whole = int(max(seconds, 0))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}" if minutes else f"{secs}s"


def _line_rows(cols: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dot columns from the first to the last point, the mean dot row in each (interpolated where
    no point falls), and the columns holding points."""
    counts = np.bincount(cols)
    sums = np.bincount(cols, weights=rows)
    known = np.flatnonzero(counts)
    span = np.arange(known[0], known[-1] + 1)
    return span, np.rint(np.interp(span, known, sums[known] / counts[known])).astype(int), known


def rasterize_curves(curves: Sequence[Curve], references: Sequence[ReferenceLine], cols: int, rows: int,
                     log_y: bool, markers: Mapping[str, str]) -> CurvesRaster:
    """Draw `curves` on a `cols` x `rows` cell canvas with shared axes: bands, then lines, then
    each curve's glyph from `markers` (by curve key) along its line."""
    empty = CurvesRaster([" " * max(cols, 0)] * max(rows, 0), [[NOBODY] * max(cols, 0) for _ in range(max(rows, 0))])
    if cols < 1 or rows < 1:
        return empty
    dot_w, dot_h = 2 * cols, 4 * rows
    drawn = [(c, _transform(c.y, log_y),
              _transform(c.lo, log_y) if c.lo is not None else None,
              _transform(c.hi, log_y) if c.hi is not None else None) for c in curves if len(c)]
    if not drawn:
        return empty
    x_all = np.concatenate([c.x for c, *_ in drawn])
    x0, x1 = float(x_all.min()), float(x_all.max())
    y_parts = [v for _, y, lo, hi in drawn for v in (y, lo, hi) if v is not None]
    y_parts.append(_transform(np.array([r.value for r in references], dtype=float), log_y))
    y_span = y_range(y_parts, logarithmic=log_y)
    if y_span is None:
        return empty
    y0, y1 = y_span
    x_span = (x1 - x0) or 1.0

    def to_col(x: np.ndarray) -> np.ndarray:
        return np.rint((x - x0) / x_span * (dot_w - 1)).astype(int)

    def to_row(v: np.ndarray) -> np.ndarray:
        return np.clip(np.rint((y1 - v) / (y1 - y0) * (dot_h - 1)), 0, dot_h - 1)

    layers: list[tuple[Owner, np.ndarray]] = []  # painted in order; a later layer takes the cell
    for ref in references:
        v = _transform(np.array([ref.value], dtype=float), log_y)[0]
        if math.isfinite(v):
            mask = np.zeros((dot_h, dot_w), dtype=bool)
            mask[int(to_row(np.array([v]))[0]), (np.arange(dot_w) // 2) % 2 == 0] = True
            layers.append((("ref", ref.label), mask))
    stipple = (np.arange(dot_h)[:, None] + np.arange(dot_w)[None, :]) % 2 == 0
    for c, _, lo, hi in drawn:
        if lo is None or hi is None:
            continue
        ok = np.isfinite(lo) & np.isfinite(hi)
        if not ok.any():
            continue
        span, top, _ = _line_rows(to_col(c.x[ok]), to_row(hi[ok]))
        _, bottom, _ = _line_rows(to_col(c.x[ok]), to_row(lo[ok]))
        top_full, bottom_full = np.full(dot_w, 0), np.full(dot_w, -1)
        top_full[span], bottom_full[span] = top, bottom
        layers.append((("band", c.key), _column_fill(top_full, bottom_full, bottom_full >= 0, dot_h) & stipple))
    marks: list[tuple[int, int, str]] = []  # (cell row, cell column, curve key)
    for index, (c, y, _, _) in enumerate(drawn):
        ok = np.isfinite(y)
        if not ok.any():
            continue
        span, row, known = _line_rows(to_col(c.x[ok]), to_row(y[ok]))
        prev = np.concatenate([row[:1], row[:-1]])
        top_full, bottom_full = np.full(dot_w, 0), np.full(dot_w, -1)
        top_full[span], bottom_full[span] = np.minimum(row, prev), np.maximum(row, prev)
        layers.append((("line", c.key), _column_fill(top_full, bottom_full, bottom_full >= 0, dot_h)))
        row_at = dict(zip(span.tolist(), row.tolist(), strict=True))
        if len(known) <= cols // MARKER_EVERY:  # few points: mark each of them
            spots = known
        else:  # many: every MARKER_EVERY cells, each curve at its own offset
            cells = np.arange(cols)
            spots = 2 * cells[(cells + 3 * index) % MARKER_EVERY == 0]
            spots = spots[(spots >= span[0]) & (spots <= span[-1])]
        marks.extend((row_at[int(s)] // 4, int(s) // 2, c.key) for s in spots)

    codes = np.zeros((rows, cols), dtype=np.int32)
    owners: list[list[Owner]] = [[NOBODY] * cols for _ in range(rows)]
    for owner, mask in layers:
        layer_codes = _cell_codes(mask, rows, cols)
        codes = np.where(layer_codes > 0, layer_codes, codes)
        for r, col in zip(*np.nonzero(layer_codes), strict=True):
            owners[r][col] = owner
    chars = [[chr(0x2800 + code) if code else " " for code in row_codes] for row_codes in codes.tolist()]
    for r, col, key in marks:
        chars[r][col] = markers.get(key, "·")
        owners[r][col] = ("marker", key)
    y_low, y_high = (10**y0, 10**y1) if log_y else (y0, y1)
    return CurvesRaster(["".join(row_chars) for row_chars in chars], owners, x0, x1, y_low, y_high)


class CompareChart(CachedChart):
    """One metric of several runs; `show()` gives it new curves, it redraws only then."""

    COMPONENT_PREFIX = "compare-chart"

    COMPONENT_CLASSES = {"compare-chart--title", "compare-chart--axis", "compare-chart--ref"}
    DEFAULT_CSS = """
    CompareChart { height: 1fr; min-height: 4; }
    CompareChart > .compare-chart--title { text-style: bold; }
    CompareChart > .compare-chart--axis { color: $text-muted; }
    CompareChart > .compare-chart--ref { color: $error; }
    """

    def __init__(self, number: int, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.number = number
        self.metric_title = ""
        self.curves: tuple[Curve, ...] = ()
        self.curve_styles: Mapping[str, RunStyle] = {}
        self.references: tuple[ReferenceLine, ...] = ()
        self.log_y = False
        self.x_axis = XAxis.STEPS
        self.flags = ""

    def show(self, title: str, curves: Sequence[Curve], styles: Mapping[str, RunStyle],
             references: Sequence[ReferenceLine], *, log_y: bool, x_axis: XAxis, flags: str = "") -> None:
        """Draw `curves` (their keys index `styles`); `flags` go in the title, e.g. "log ema 0.6"."""
        self.metric_title, self.curves, self.curve_styles = title, tuple(curves), styles
        self.references, self.log_y, self.x_axis, self.flags = tuple(references), log_y, x_axis, flags
        self._changed()

    def _build(self, width: int, height: int) -> list[Strip]:
        if width <= 0 or height <= 0:
            return []
        base, axis = self._base_style(), self._style("axis")
        title_style = self._style("title") + (Style(reverse=True) if self.has_focus else Style())
        title = _one_line([(f"{self.number} {self.metric_title}", title_style),
                           (f" [{self.flags}]" if self.flags else "", axis)], width, base)
        plot_rows = height - 2  # the title above, the x range below
        if plot_rows <= 0:
            return [title]
        plot_cols = max(1, width - GUTTER - 1)
        markers = {key: style.marker for key, style in self.curve_styles.items()}
        raster = rasterize_curves(self.curves, self.references, plot_cols, plot_rows, self.log_y, markers)
        if not any(len(c) for c in self.curves):
            message = "no data" if self.curves else "no run has this metric yet"
            return [title, Strip([Segment(" " * GUTTER + "│ " + message, axis)]).adjust_cell_length(width, base)]
        labels = {0: raster.y_high, plot_rows - 1: raster.y_low}
        if plot_rows >= 5:
            mid = (plot_rows - 1) // 2
            frac = mid / (plot_rows - 1)
            if self.log_y and raster.y_low > 0:
                labels[mid] = 10 ** (math.log10(raster.y_high) * (1 - frac) + math.log10(raster.y_low) * frac)
            else:
                labels[mid] = raster.y_high * (1 - frac) + raster.y_low * frac
        styles = self._owner_styles()
        strips = [title]
        for r in range(plot_rows):
            value = labels.get(r)
            label = format_value(value) if value is not None and math.isfinite(value) else ""
            segments = [Segment(label.rjust(GUTTER)[:GUTTER] + ("┤" if label else "│"), axis)]
            col = 0
            for owner, group in itertools.groupby(raster.owners[r]):
                n = len(list(group))
                segments.append(Segment(raster.chars[r][col: col + n], styles.get(owner, base)))
                col += n
            strips.append(Strip(segments, GUTTER + 1 + plot_cols).adjust_cell_length(width, base))
        shown = format_seconds if self.x_axis is XAxis.TIME else format_value
        low, high = shown(raster.x_low), shown(raster.x_high)
        x_line = " " * GUTTER + "└" + low + " " * max(1, plot_cols - len(low) - len(high)) + high
        strips.append(Strip([Segment(x_line, axis)]).adjust_cell_length(width, base))
        return strips

    def _owner_styles(self) -> dict[Owner, Style]:
        base = self._base or Style()
        out: dict[Owner, Style] = {}
        for c in self.curves:
            style = self.curve_styles.get(c.key)
            colour = base + Style(color=style.colour) if style is not None else base
            out[("line", c.key)] = out[("marker", c.key)] = colour
            out[("band", c.key)] = colour + Style(dim=True)
        ref = self._style("ref")
        for reference in self.references:
            out[("ref", reference.label)] = ref
        return out


def _one_line(parts: list[tuple[str, Style]], width: int, base: Style) -> Strip:
    """One line of styled parts, cut or padded to `width`."""
    return Strip([Segment(text, style) for text, style in parts if text]).crop(0, width).adjust_cell_length(width, base)
