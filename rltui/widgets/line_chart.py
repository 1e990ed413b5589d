"""A light braille line chart for the live grid.

Each terminal cell holds a 2x4 braille dot matrix. For every dot column the chart draws the
range of the raw values that fall in it (a faint band, from the history's per-bucket min/max)
and the mean, optionally EMA-smoothed, as a connected line on top. Everything is computed in
numpy once per data, size or option change and kept as Strips; painting the widget only looks
them up. The first line is the title: chart number, name, last value of each series, options.
A left gutter shows the y range.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.geometry import Size
from textual.strip import Strip
from textual.widget import Widget

from rltui.history import SeriesSnapshot

ROLES = ("main", "second", "third")
# Dot (row, col) of a braille cell -> bit of U+2800 + bits.
_BRAILLE_BITS = np.array([[0x01, 0x08], [0x02, 0x10], [0x04, 0x20], [0x40, 0x80]], dtype=np.int32)
_MARKS = {"main": "━", "second": "━", "third": "━", "ref": "┄"}


@dataclass(frozen=True)
class SeriesSpec:
    """One history series drawn in a chart. `role` picks its style (main, second, third)."""

    name: str
    label: str
    role: str = "main"
    smooth: bool = True
    band: bool = False  # faint band of the raw min/max behind the line


@dataclass(frozen=True)
class ReferenceLine:
    label: str
    value: float


@dataclass(frozen=True)
class ChartSpec:
    title: str
    series: tuple[SeriesSpec, ...]
    references: tuple[ReferenceLine, ...] = ()
    log_y: bool = False


@dataclass
class Raster:
    """Result of rasterising a chart: per plot row, the cell characters and a layer per cell.

    Layer names: "" (empty), "raw", "ref", or a series role.
    """

    chars: list[str]
    layers: list[list[str]]
    y_low: float = math.nan
    y_high: float = math.nan


def ema(values: np.ndarray, weight: float) -> np.ndarray:
    """Exponential moving average debiased like TensorBoard (the first values are not pulled to 0)."""
    if weight <= 0.0 or len(values) == 0:
        return values
    out = np.empty_like(values, dtype=float)
    last = 0.0
    for i, v in enumerate(values.tolist()):
        last = last * weight + (1.0 - weight) * v
        out[i] = last / (1.0 - weight ** (i + 1))
    return out


def format_value(value: float) -> str:
    """Short number for axes and titles (at most 7 characters)."""
    if not math.isfinite(value):
        return "–"
    a = abs(value)
    if a == 0:
        return "0"
    if a >= 1e6:
        return f"{value / 1e6:.3g}M"
    if a >= 1e4:
        return f"{value / 1e3:.3g}k"
    if a >= 100:
        return f"{value:.0f}"
    if a >= 1e-2:
        return f"{value:.3g}"
    return f"{value:.1e}".replace("e-0", "e-")


def _transform(values: np.ndarray, log_y: bool) -> np.ndarray:
    if not log_y:
        return values.astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(values > 0, np.log10(np.where(values > 0, values, 1.0)), np.nan)


def _column_fill(top: np.ndarray, bottom: np.ndarray, valid: np.ndarray, dot_rows: int) -> np.ndarray:
    """Boolean (dot_rows, columns) mask with rows top..bottom set in every valid column."""
    rows = np.arange(dot_rows)[:, None]
    return (rows >= top[None, :]) & (rows <= bottom[None, :]) & valid[None, :]


def _cell_codes(mask: np.ndarray, rows: int, cols: int) -> np.ndarray:
    cells = mask.reshape(rows, 4, cols, 2).astype(np.int32)
    return np.einsum("hywx,yx->hw", cells, _BRAILLE_BITS)


def rasterize(
    spec: ChartSpec,
    data: dict[str, SeriesSnapshot | None],
    cols: int,
    rows: int,
    smoothing: float,
    log_y: bool,
) -> Raster:
    """Draw `spec` on a `cols` x `rows` cell canvas (braille: 2*cols x 4*rows dots)."""
    empty = Raster(chars=[" " * cols] * rows, layers=[[""] * cols for _ in range(rows)])
    if cols < 1 or rows < 1:
        return empty
    dot_w, dot_h = 2 * cols, 4 * rows

    lines: list[tuple[SeriesSpec, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]] = []
    for s in spec.series:
        snap = data.get(s.name)
        if snap is None or len(snap) == 0:
            continue
        y = ema(snap.y, smoothing) if s.smooth else snap.y
        band_lo = _transform(snap.y_min, log_y) if s.band else None
        band_hi = _transform(snap.y_max, log_y) if s.band else None
        lines.append((s, snap.x, _transform(y, log_y), band_lo, band_hi))
    if not lines:
        return empty

    x_all = np.concatenate([x for _, x, *_ in lines])
    x0, x1 = float(x_all.min()), float(x_all.max())
    y_parts = [v for _, _, y, lo, hi in lines for v in (y, lo, hi) if v is not None]
    y_parts.append(_transform(np.array([r.value for r in spec.references], dtype=float), log_y))
    y_all = np.concatenate(y_parts)
    y_all = y_all[np.isfinite(y_all)]
    if len(y_all) == 0:
        return empty
    y0, y1 = float(y_all.min()), float(y_all.max())
    if y1 - y0 < 1e-12 * max(1.0, abs(y1)):
        pad = 0.5 if log_y else max(abs(y1) * 0.1, 1.0)
        y0, y1 = y0 - pad, y1 + pad
    x_span = (x1 - x0) or 1.0

    def to_col(x: np.ndarray) -> np.ndarray:
        return np.rint((x - x0) / x_span * (dot_w - 1)).astype(int)

    def to_row(v: np.ndarray) -> np.ndarray:
        return np.rint((y1 - v) / (y1 - y0) * (dot_h - 1))

    layers: list[tuple[str, np.ndarray]] = []  # painted in order; later layers win a cell
    for ref in spec.references:
        v = _transform(np.array([ref.value], dtype=float), log_y)[0]
        if math.isfinite(v):
            mask = np.zeros((dot_h, dot_w), dtype=bool)
            mask[int(to_row(np.array([v]))[0]), (np.arange(dot_w) // 2) % 2 == 0] = True
            layers.append(("ref", mask))
    for _, x, _, lo, hi in lines:
        if lo is None or hi is None:
            continue
        ok = np.isfinite(hi)
        lo = np.where(np.isfinite(lo), lo, y0)
        col = to_col(x[ok])
        top = np.full(dot_w, np.inf)
        bottom = np.full(dot_w, -np.inf)
        np.minimum.at(top, col, to_row(hi[ok]))
        np.maximum.at(bottom, col, to_row(lo[ok]))
        layers.append(("raw", _column_fill(top, bottom, np.isfinite(top), dot_h)))
    order = {role: i for i, role in enumerate(reversed(ROLES))}
    for s, x, y, _, _ in sorted(lines, key=lambda item: order.get(item[0].role, 0)):
        ok = np.isfinite(y)
        if not ok.any():
            continue
        col = to_col(x[ok])
        counts = np.bincount(col, minlength=dot_w)
        sums = np.bincount(col, weights=y[ok], minlength=dot_w)
        has = counts > 0
        known = np.flatnonzero(has)
        span = np.arange(known[0], known[-1] + 1)
        row = np.rint(np.interp(span, known, to_row(sums[has] / counts[has]))).astype(int)
        prev = np.concatenate([row[:1], row[:-1]])
        top = np.full(dot_w, 0)
        bottom = np.full(dot_w, -1)
        top[span] = np.minimum(row, prev)
        bottom[span] = np.maximum(row, prev)
        layers.append((s.role, _column_fill(top, bottom, bottom >= 0, dot_h)))

    top_code = np.zeros((rows, cols), dtype=np.int32)
    top_layer = np.full((rows, cols), "", dtype=object)
    for name, mask in layers:
        codes = _cell_codes(mask, rows, cols)
        hit = codes > 0
        top_code[hit] = codes[hit]
        top_layer[hit] = name
    chars = [
        "".join(chr(0x2800 + c) if c else " " for c in row_codes) for row_codes in top_code.tolist()
    ]
    y_low, y_high = (10**y0, 10**y1) if log_y else (y0, y1)
    return Raster(chars=chars, layers=top_layer.tolist(), y_low=y_low, y_high=y_high)


class LineChart(Widget, can_focus=True):
    """Live braille chart; call `update_data` with fresh snapshots, it redraws only then."""

    COMPONENT_CLASSES = {
        "line-chart--title",
        "line-chart--axis",
        "line-chart--raw",
        "line-chart--main",
        "line-chart--second",
        "line-chart--third",
        "line-chart--ref",
    }
    DEFAULT_CSS = """
    LineChart { height: 1fr; min-height: 3; }
    LineChart > .line-chart--title { text-style: bold; }
    LineChart > .line-chart--axis { color: $text-muted; }
    LineChart > .line-chart--raw { color: $primary-muted; text-style: dim; }
    LineChart > .line-chart--main { color: $accent; }
    LineChart > .line-chart--second { color: $warning; }
    LineChart > .line-chart--third { color: $success; }
    LineChart > .line-chart--ref { color: $error; }
    """

    def __init__(self, number: int, spec: ChartSpec | None = None, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.number = number
        self.spec = spec
        self.smoothing = 0.0
        self.log_y = spec.log_y if spec else False
        self._data: dict[str, SeriesSnapshot | None] = {}
        self._data_token = 0
        self._cache_key: int | None = None
        self._base: Style | None = None
        self._size = Size(0, 0)
        self._strips: list[Strip] = []

    # ---- inputs -----------------------------------------------------------------------------
    def set_spec(self, spec: ChartSpec | None, *, keep_scale: bool = False) -> None:
        """Show `spec` (None: nothing); its default y scale unless `keep_scale` (the user's stays)."""
        self.spec = spec
        if not keep_scale:
            self.log_y = spec.log_y if spec is not None else False
        self._changed()

    def update_data(self, data: dict[str, SeriesSnapshot | None]) -> None:
        self._data = data
        self._changed()

    def set_smoothing(self, weight: float) -> None:
        if weight != self.smoothing:
            self.smoothing = weight
            self._changed()

    def toggle_log(self) -> None:
        self.log_y = not self.log_y
        self._changed()

    @property
    def data(self) -> dict[str, SeriesSnapshot | None]:
        return self._data

    def _changed(self) -> None:
        self._data_token += 1
        self.refresh()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._cache_key = None
        self._base = None

    def on_resize(self, event: events.Resize) -> None:
        self._size = event.size
        self._cache_key = None

    def on_focus(self) -> None:
        self._cache_key = None
        self.refresh()

    def on_blur(self) -> None:
        self._cache_key = None
        self.refresh()

    # ---- drawing ----------------------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        # Called for every line of every frame, so the check must stay cheap: self.size and
        # rich_style can cost milliseconds (the size comes from Resize events instead).
        # Resize, focus and style changes clear the key; new data or options change the token.
        if self._cache_key != self._data_token:
            self._strips = self._build(*self._size)
            self._cache_key = self._data_token
        if y < len(self._strips):
            return self._strips[y]
        return Strip.blank(self._size.width, self._base or Style())

    def _style(self, name: str) -> Style:
        return (self._base or Style()) + self.get_component_rich_style(f"line-chart--{name}", partial=True)

    def _build(self, width: int, height: int) -> list[Strip]:
        if width <= 0 or height <= 0:
            return []
        if self._base is None:  # rich_style walks the ancestors: costly, so kept until styles change
            self._base = self.rich_style
        base = self._base
        spec = self.spec
        if spec is None:
            return [Strip.blank(width, base)] * height
        axis = self._style("axis")
        plot_rows = height - 1
        strips = [self._title(width)]
        if plot_rows <= 0:
            return strips
        # The gutter is sized from a first pass's y range, then the plot is drawn beside it.
        gutter = 7
        plot_cols = max(1, width - gutter - 1)
        raster = rasterize(spec, self._data, plot_cols, plot_rows, self.smoothing, self.log_y)
        labels = {0: raster.y_high, plot_rows - 1: raster.y_low}
        if plot_rows >= 5:
            mid = (plot_rows - 1) // 2
            frac = mid / (plot_rows - 1)
            if self.log_y and raster.y_low > 0:
                labels[mid] = 10 ** (math.log10(raster.y_high) * (1 - frac) + math.log10(raster.y_low) * frac)
            else:
                labels[mid] = raster.y_high * (1 - frac) + raster.y_low * frac
        styles = {name: self._style(name) for name in ("raw", "ref", *ROLES)}
        for r in range(plot_rows):
            value = labels.get(r)
            label = format_value(value) if value is not None and math.isfinite(value) else ""
            segments = [Segment(label.rjust(gutter)[:gutter] + ("┤" if label else "│"), axis)]
            chars = raster.chars[r]
            col = 0
            for layer, group in itertools.groupby(raster.layers[r]):
                n = len(list(group))
                segments.append(Segment(chars[col : col + n], styles.get(layer, base)))
                col += n
            # Every cell is one column wide: the length is known, no need to measure the text.
            strips.append(Strip(segments, gutter + 1 + plot_cols).adjust_cell_length(width, base))
        return strips

    def _title(self, width: int) -> Strip:
        """Number, name, last value of each series, references, options; shortened to fit."""
        spec = self.spec
        assert spec is not None
        title_style = self._style("title")
        if self.has_focus:
            title_style += Style(reverse=True)
        lasts = {s.name: snap.last for s in spec.series if (snap := self._data.get(s.name)) is not None}
        series = [
            [Segment(f" {_MARKS[s.role]}", self._style(s.role)),
             Segment(f"{s.label} {format_value(lasts[s.name])}", self._base)]
            for s in spec.series if s.name in lasts
        ]
        refs = [
            [Segment(f" {_MARKS['ref']}", self._style("ref")),
             Segment(f"{ref.label} {format_value(ref.value)}", self._base)]
            for ref in spec.references
        ]
        flags = []
        if self.log_y:
            flags.append("log")
        if self.smoothing > 0 and any(s.smooth for s in spec.series):
            flags.append(f"ema {self.smoothing:g}")
        flag_part = [[Segment(" [" + " ".join(flags) + "]", self._style("axis"))]] if flags else []
        head = [Segment(f"{self.number} {spec.title}", title_style)]
        for parts in (series + refs + flag_part, series + flag_part, series, series[:1], []):
            segments = head + [seg for part in parts for seg in part]
            if sum(seg.cell_length for seg in segments) <= width:
                break
        return Strip(segments).adjust_cell_length(width, self._base)
