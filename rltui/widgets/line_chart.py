"""A light braille line chart for the live grid.

Each terminal cell holds a 2x4 braille dot matrix. For every dot column the chart draws the
range of the raw values that fall in it (a faint band, from the history's per-bucket min/max)
and the mean as a connected line on top, optionally smoothed by an EMA over the chart's dot
columns (like W&B's time-weighted EMA: the same weight smooths as much at every width and run
length). Everything is computed in numpy once per data, size or option change and kept as
Strips; painting the widget only looks them up.

The first line is the title: chart number, name, a legend entry per series (its mark, label and
last value), the reference lines, and the options in effect (`[log ema 0.9]`). When it does not
fit, it is shortened step by step (reference values, references, short labels, values, the
name) but never drops a series. A left gutter shows the y range.

Series in one chart differ by dash pattern as well as colour (solid, long dashes, short dashes;
reference lines are drawn with ┄), and the legend's marks match, so they stay apart with NO_COLOR; there,
the raw band is also stippled so the line stands out from it.

Log scale: values <= 0 cannot be drawn on a log axis, so a chart that has any is drawn on a
symmetric log scale instead (linear within ±C, logarithmic beyond; C is the decade of the
smallest non-zero magnitude), and its title says `symlog`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
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
# Legend mark of each role, drawn the way its line is: solid, long dashes, short dashes;
# reference lines ┄.
MARKS = {"main": "━", "second": "╍", "third": "┉", "ref": "┄"}
# Dash pattern of each role's line along its path, in dots: (period, dots drawn per period).
DASHES = {"second": (8, 6), "third": (4, 2)}
REFERENCE_CHAR = "┄"
GUTTER = 7  # width of the y labels (the axis line comes after)
# Symmetric log: |values| under C are linear, with C no smaller than this fraction of the largest.
SYMLOG_MIN_LINEAR_FRACTION = 1e-6


@dataclass(frozen=True)
class SeriesSpec:
    """One history series drawn in a chart. `role` picks its style (main, second, third);
    `short` is its label where the title has little room (default: the label)."""

    name: str
    label: str
    role: str = "main"
    smooth: bool = True
    band: bool = False  # faint band of the raw min/max behind the line
    short: str = ""

    @property
    def short_label(self) -> str:
        return self.short or self.label


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


@dataclass(frozen=True)
class YScale:
    """How values map to the vertical axis: "linear", "log" (log10) or "symlog".

    symlog(y) = sign(y) * log10(1 + |y| / linear_width): about linear within ±linear_width,
    logarithmic beyond, defined for every value (the log of values that can be <= 0).
    """

    kind: str = "linear"
    linear_width: float = 1.0

    def forward(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=float)
        if self.kind == "log":
            return _transform(values, True)
        if self.kind == "symlog":
            return np.sign(values) * np.log10(1.0 + np.abs(values) / self.linear_width)
        return values

    def inverse(self, value: float) -> float:
        if self.kind == "log":
            return float(10.0**value)
        if self.kind == "symlog":
            return math.copysign(self.linear_width * (10.0 ** abs(value) - 1.0), value)
        return value

    @property
    def flag(self) -> str:
        """What the title says of the scale ("" for linear)."""
        return "" if self.kind == "linear" else self.kind


LINEAR = YScale()


def choose_scale(log_y: bool, values: Iterable[np.ndarray]) -> YScale:
    """The scale for a chart asked to be `log_y` whose drawn values are `values`.

    Log when every finite value is > 0 (or there are none yet), else symmetric log, with the
    linear part as wide as the decade of the smallest non-zero magnitude.
    """
    if not log_y:
        return LINEAR
    finite = [v[np.isfinite(v)] for v in (np.asarray(a, dtype=float) for a in values)]
    flat = np.concatenate(finite) if finite else np.empty(0)
    if len(flat) == 0 or (flat > 0).all():
        return YScale("log")
    magnitudes = np.abs(flat[flat != 0])
    if len(magnitudes) == 0:
        return YScale("symlog", 1.0)
    smallest = max(float(magnitudes.min()), float(magnitudes.max()) * SYMLOG_MIN_LINEAR_FRACTION)
    return YScale("symlog", 10.0 ** math.floor(math.log10(smallest)))


def chart_values(spec: ChartSpec, data: dict[str, SeriesSnapshot | None]) -> list[np.ndarray]:
    """Every value a chart draws: its series' means (and raw extremes where banded), its references."""
    values = [np.array([r.value for r in spec.references], dtype=float)]
    for s in spec.series:
        snap = data.get(s.name)
        if snap is not None and len(snap):
            values.extend((snap.y, snap.y_min, snap.y_max) if s.band else (snap.y,))
    return values


@dataclass
class Raster:
    """Result of rasterising a chart: per plot row, the cell characters and a layer per cell.

    Layer names: "" (empty), "raw", "ref", or a series role. `y_low`/`y_high` are the values at
    the bottom and top row; `t_low`/`t_high` the same in the scale's coordinates.
    """

    chars: list[str]
    layers: list[list[str]]
    y_low: float = math.nan
    y_high: float = math.nan
    scale: YScale = LINEAR
    t_low: float = math.nan
    t_high: float = math.nan

    def value_at(self, row: int) -> float:
        """The value at the middle of plot row `row` (0 the top), by the chart's scale."""
        rows = len(self.chars)
        if rows < 2 or not math.isfinite(self.t_low):
            return self.y_high
        frac = row / (rows - 1)
        return self.scale.inverse(self.t_high * (1 - frac) + self.t_low * frac)


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
    """log10 of the positive values (NaN for the rest) when `log_y`, else the values as floats."""
    if not log_y:
        return values.astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(values > 0, np.log10(np.where(values > 0, values, 1.0)), np.nan)


def _column_fill(top: np.ndarray, bottom: np.ndarray, valid: np.ndarray, dot_rows: int) -> np.ndarray:
    """Boolean (dot_rows, columns) mask with rows top..bottom set in every valid column."""
    rows = np.arange(dot_rows)[:, None]
    return (rows >= top[None, :]) & (rows <= bottom[None, :]) & valid[None, :]


def _dashed(mask: np.ndarray, top: np.ndarray, bottom: np.ndarray, period: int, drawn: int) -> np.ndarray:
    """`mask` (a line filled from `top` to `bottom` in each column) with only the first `drawn`
    dots of every `period` kept, counted along the line's path (so steep parts are dashed too)."""
    heights = np.where(bottom >= top, bottom - top + 1, 0)
    first = np.cumsum(heights) - heights  # path index of each column's top dot
    index = first[None, :] + np.arange(mask.shape[0])[:, None] - top[None, :]
    return mask & (index % period < drawn)


def _cell_codes(mask: np.ndarray, rows: int, cols: int) -> np.ndarray:
    cells = mask.reshape(rows, 4, cols, 2).astype(np.int32)
    return np.einsum("hywx,yx->hw", cells, _BRAILLE_BITS)


def _column_means(col: np.ndarray, values: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(columns holding points, the mean of their values), columns in order."""
    counts = np.bincount(col, minlength=width)
    sums = np.bincount(col, weights=values, minlength=width)
    known = np.flatnonzero(counts > 0)
    return known, sums[known] / counts[known]


def y_range(parts: list[np.ndarray], *, logarithmic: bool) -> tuple[float, float] | None:
    """(low, high) of the finite values of `parts` (already on the drawn scale), padded when they
    are all equal (half a decade on a log scale, else 10% or 1); None when none is finite."""
    values = np.concatenate(parts)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return None
    y0, y1 = float(values.min()), float(values.max())
    if y1 - y0 < 1e-12 * max(1.0, abs(y1)):
        pad = 0.5 if logarithmic else max(abs(y1) * 0.1, 1.0)
        y0, y1 = y0 - pad, y1 + pad
    return y0, y1


def rasterize(
    spec: ChartSpec,
    data: dict[str, SeriesSnapshot | None],
    cols: int,
    rows: int,
    smoothing: float,
    log_y: bool,
    *,
    stipple_band: bool = False,
) -> Raster:
    """Draw `spec` on a `cols` x `rows` cell canvas (braille: 2*cols x 4*rows dots).

    `smoothing`: EMA weight over the dot columns, for the series that smooth; `log_y`: log scale
    (symmetric log when a value is <= 0); `stipple_band`: draw the raw band as a sparse pattern
    (for NO_COLOR, where it cannot be fainter than the line).
    """
    empty = Raster(chars=[" " * cols] * rows, layers=[[""] * cols for _ in range(rows)])
    if cols < 1 or rows < 1:
        return empty
    dot_w, dot_h = 2 * cols, 4 * rows
    scale = choose_scale(log_y, chart_values(spec, data))

    lines: list[tuple[SeriesSpec, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]] = []
    for s in spec.series:
        snap = data.get(s.name)
        if snap is None or len(snap) == 0:
            continue
        band_lo = scale.forward(snap.y_min) if s.band else None
        band_hi = scale.forward(snap.y_max) if s.band else None
        lines.append((s, snap.x, scale.forward(snap.y), band_lo, band_hi))
    if not lines:
        return empty

    x_all = np.concatenate([x for _, x, *_ in lines])
    x0, x1 = float(x_all.min()), float(x_all.max())
    references = [(ref, float(scale.forward(np.array([ref.value]))[0])) for ref in spec.references]
    y_parts = [v for _, _, y, lo, hi in lines for v in (y, lo, hi) if v is not None]
    y_parts.append(np.array([t for _, t in references], dtype=float))
    y_span = y_range(y_parts, logarithmic=scale.kind != "linear")
    if y_span is None:
        return empty
    y0, y1 = y_span
    x_span = (x1 - x0) or 1.0

    def to_col(x: np.ndarray) -> np.ndarray:
        return np.rint((x - x0) / x_span * (dot_w - 1)).astype(int)

    def to_row(v: np.ndarray) -> np.ndarray:
        return np.rint((y1 - v) / (y1 - y0) * (dot_h - 1))

    layers: list[tuple[str, np.ndarray]] = []  # painted in order; later layers win a cell
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
        band = _column_fill(top, bottom, np.isfinite(top), dot_h)
        if stipple_band:
            band &= (np.arange(dot_h)[:, None] + np.arange(dot_w)[None, :]) % 2 == 0
        layers.append(("raw", band))
    order = {role: i for i, role in enumerate(reversed(ROLES))}
    for s, x, y, _, _ in sorted(lines, key=lambda item: order.get(item[0].role, 0)):
        ok = np.isfinite(y)
        if not ok.any():
            continue
        known, means = _column_means(to_col(x[ok]), y[ok], dot_w)
        if s.smooth and smoothing > 0:
            means = ema(means, smoothing)
        span = np.arange(known[0], known[-1] + 1)
        row = np.rint(np.interp(span, known, to_row(means))).astype(int)
        prev = np.concatenate([row[:1], row[:-1]])
        top = np.full(dot_w, 0)
        bottom = np.full(dot_w, -1)
        top[span] = np.minimum(row, prev)
        bottom[span] = np.maximum(row, prev)
        mask = _column_fill(top, bottom, bottom >= 0, dot_h)
        if s.role in DASHES:
            mask = _dashed(mask, top, bottom, *DASHES[s.role])
        layers.append((s.role, mask))

    top_code = np.zeros((rows, cols), dtype=np.int32)
    top_layer = np.full((rows, cols), "", dtype=object)
    for name, mask in layers:
        codes = _cell_codes(mask, rows, cols)
        hit = codes > 0
        top_code[hit] = codes[hit]
        top_layer[hit] = name
    chars = [[chr(0x2800 + c) if c else " " for c in row_codes] for row_codes in top_code.tolist()]
    for _, t in references:  # under everything else: only where nothing is drawn
        if math.isfinite(t):
            r = int(to_row(np.array([t]))[0]) // 4
            for c in range(cols):
                if not top_code[r, c]:
                    chars[r][c] = REFERENCE_CHAR
                    top_layer[r, c] = "ref"
    return Raster(
        chars=["".join(row_chars) for row_chars in chars], layers=top_layer.tolist(),
        y_low=scale.inverse(y0), y_high=scale.inverse(y1), scale=scale, t_low=y0, t_high=y1,
    )


@dataclass(frozen=True)
class TitleForm:
    """How much of the title is written out (see LineChart._title): each field drops or shortens
    one part, tried from the longest form to the shortest."""

    name: bool = True
    short_labels: bool = False
    values: bool = True
    references: str = "full"  # "full", "labels" (no values) or "none"
    compact_flags: bool = False


TITLE_FORMS = (
    TitleForm(),
    TitleForm(references="labels"),
    TitleForm(references="none"),
    TitleForm(references="none", compact_flags=True),
    TitleForm(references="none", compact_flags=True, short_labels=True),
    TitleForm(references="none", compact_flags=True, short_labels=True, values=False),
    TitleForm(references="none", compact_flags=True, short_labels=True, values=False, name=False),
)


def option_flags(scale_flag: str, smoothing: float, compact: bool) -> str:
    """The options in effect, for the title: "[log ema 0.9]", compact "[log ema.9]"; "" if none."""
    flags = [scale_flag] if scale_flag else []
    if smoothing > 0:
        weight = f"{smoothing:g}"
        flags.append("ema" + weight.removeprefix("0") if compact else f"ema {weight}")
    return f"[{' '.join(flags)}]" if flags else ""


class CachedChart(Widget, can_focus=True):
    """A chart whose lines are all built at once by `_build(width, height)` and kept until its
    content changes (`_changed`), or a resize, focus or style change clears them. `_style(name)`
    is the component class `<COMPONENT_PREFIX>--<name>` over the widget's base style."""

    COMPONENT_PREFIX = ""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._content_token = 0
        self._cache_key: int | None = None
        self._base: Style | None = None
        self._size = Size(0, 0)
        self._strips: list[Strip] = []

    def _changed(self) -> None:
        self._content_token += 1
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

    def render_line(self, y: int) -> Strip:
        # Called for every line of every frame, so the check must stay cheap: self.size and
        # rich_style can cost milliseconds (the size comes from Resize events instead).
        # Resize, focus and style changes clear the key; new content changes the token.
        if self._cache_key != self._content_token:
            self._strips = self._build(*self._size)
            self._cache_key = self._content_token
        if y < len(self._strips):
            return self._strips[y]
        return Strip.blank(self._size.width, self._base or Style())

    def _base_style(self) -> Style:
        """The widget's own style, kept until styles change (rich_style walks the ancestors: costly)."""
        if self._base is None:
            self._base = self.rich_style
        return self._base

    def _style(self, name: str) -> Style:
        return (self._base or Style()) + self.get_component_rich_style(f"{self.COMPONENT_PREFIX}--{name}",
                                                                       partial=True)

    def _build(self, width: int, height: int) -> list[Strip]:
        raise NotImplementedError


class LineChart(CachedChart):
    """Live braille chart; call `update_data` with fresh snapshots, it redraws only then."""

    COMPONENT_PREFIX = "line-chart"

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

    def scale(self) -> YScale:
        """The y scale the chart is drawn with now (symlog where log was asked for values <= 0)."""
        if self.spec is None:
            return LINEAR
        return choose_scale(self.log_y, chart_values(self.spec, self._data))

    def smoothing_shown(self) -> float:
        """The EMA weight in effect (0 when no series of the chart smooths)."""
        if self.spec is None or not any(s.smooth for s in self.spec.series):
            return 0.0
        return self.smoothing

    # ---- drawing ----------------------------------------------------------------------------
    def _build(self, width: int, height: int) -> list[Strip]:
        if width <= 0 or height <= 0:
            return []
        base = self._base_style()
        spec = self.spec
        if spec is None:
            return [Strip.blank(width, base)] * height
        axis = self._style("axis")
        plot_rows = height - 1
        if plot_rows <= 0:
            return [self._title(width, self.scale())]
        plot_cols = max(1, width - GUTTER - 1)
        raster = rasterize(spec, self._data, plot_cols, plot_rows, self.smoothing, self.log_y,
                           stipple_band=self.app.no_color)
        strips = [self._title(width, raster.scale)]
        labelled = {0, plot_rows - 1} | ({(plot_rows - 1) // 2} if plot_rows >= 5 else set())
        styles = {name: self._style(name) for name in ("raw", "ref", *ROLES)}
        for r in range(plot_rows):
            value = raster.value_at(r) if r in labelled else math.nan
            label = format_value(value) if math.isfinite(value) else ""
            segments = [Segment(label.rjust(GUTTER)[:GUTTER] + ("┤" if label else "│"), axis)]
            chars = raster.chars[r]
            col = 0
            for layer, group in itertools.groupby(raster.layers[r]):
                n = len(list(group))
                segments.append(Segment(chars[col : col + n], styles.get(layer, base)))
                col += n
            # Every cell is one column wide: the length is known, no need to measure the text.
            strips.append(Strip(segments, GUTTER + 1 + plot_cols).adjust_cell_length(width, base))
        return strips

    def _title(self, width: int, scale: YScale) -> Strip:
        """Number, name, a legend entry per series, references, options: the longest form that fits."""
        spec = self.spec
        assert spec is not None
        title_style = self._style("title")
        if self.has_focus:
            title_style += Style(reverse=True)
        lasts = {s.name: snap.last for s in spec.series if (snap := self._data.get(s.name)) is not None}
        shown = [s for s in spec.series if s.name in lasts]
        segments: list[Segment] = []
        for form in TITLE_FORMS:
            segments = [Segment(f"{self.number} {spec.title}" if form.name else f"{self.number}", title_style)]
            for s in shown:
                label = s.short_label if form.short_labels else s.label
                value = f" {format_value(lasts[s.name])}" if form.values else ""
                segments += [Segment(f" {MARKS[s.role]}", self._style(s.role)), Segment(label + value, self._base)]
            if form.references != "none":
                for ref in spec.references:
                    value = f" {format_value(ref.value)}" if form.references == "full" else ""
                    segments += [Segment(f" {MARKS['ref']}", self._style("ref")),
                                 Segment(ref.label + value, self._base)]
            flags = option_flags(scale.flag, self.smoothing_shown(), form.compact_flags)
            if flags:
                segments.append(Segment(f" {flags}", self._style("axis")))
            if sum(segment.cell_length for segment in segments) <= width:
                break
        return Strip(segments).adjust_cell_length(width, self._base)
