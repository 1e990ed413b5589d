"""The agent, drawn with terminal characters: an RGB frame as half blocks.

Each cell shows two pixels, one above the other: "▀" in the upper pixel's colour on the lower
pixel's colour, so pixels are about square. The frame is fitted to the widget keeping its aspect
ratio, by nearest-neighbour sampling (numpy indexing, once per frame and size). Without colour
(NO_COLOR) the cells are shades of one character ramp by luminance. Works over SSH, no X needed.
"""

from __future__ import annotations

import numpy as np
from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip
from textual.widget import Widget

UPPER_HALF = "▀"
RAMP = " .:-=+*#%@"  # dark to light, for NO_COLOR


def fit(frame_shape: tuple[int, int], cols: int, rows: int) -> tuple[int, int]:
    """(width, height) in pixels of a `frame_shape` (height, width) frame fitted into `cols` x
    `2 * rows` pixels, aspect kept; at least 1x2 when there is room at all."""
    height, width = frame_shape
    if cols < 1 or rows < 1 or height < 1 or width < 1:
        return 0, 0
    scale = min(cols / width, 2 * rows / height)
    return max(1, int(width * scale)), max(2, int(height * scale) // 2 * 2)


def sample(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """`frame` (H, W, 3) resized to (height, width, 3) by nearest neighbour (pixel centres)."""
    rows = ((np.arange(height) + 0.5) * frame.shape[0] / height).astype(int)
    cols = ((np.arange(width) + 0.5) * frame.shape[1] / width).astype(int)
    return frame[rows[:, None], cols[None, :], :3]


def to_lines(pixels: np.ndarray, color: bool) -> list[list[Segment]]:
    """Half-block lines of a (2R, W, 3) pixel array: R lines of W cells."""
    lines = []
    cells: dict[tuple[int, ...], Segment] = {}  # one Segment per colour pair (rendered scenes have few)
    for top, bottom in zip(pixels[0::2], pixels[1::2], strict=True):
        if color:
            segments = []
            for pair in np.concatenate([top, bottom], axis=1).tolist():
                key = tuple(pair)
                segment = cells.get(key)
                if segment is None:
                    segment = cells[key] = Segment(UPPER_HALF, Style(color=Color.from_rgb(*key[:3]),
                                                                     bgcolor=Color.from_rgb(*key[3:])))
                segments.append(segment)
        else:
            luminance = (0.299 * top[:, 0] + 0.587 * top[:, 1] + 0.114 * top[:, 2]
                         + 0.299 * bottom[:, 0] + 0.587 * bottom[:, 1] + 0.114 * bottom[:, 2]) / 2
            index = np.minimum((luminance / 256 * len(RAMP)).astype(int), len(RAMP) - 1)
            segments = [Segment("".join(RAMP[i] for i in index.tolist()))]
        lines.append(segments)
    return lines


class FrameView(Widget):
    """Shows the newest frame given to `show` (a version number says when it is new)."""

    DEFAULT_CSS = "FrameView { height: 1fr; width: 1fr; }"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._version = -1
        self._frame: np.ndarray | None = None
        self._lines: list[list[Segment]] = []
        self._key: tuple[int, int, int, bool] | None = None

    def show(self, version: int, frame: np.ndarray) -> None:
        if version != self._version:
            self._version, self._frame = version, frame
            self.refresh()

    def _draw(self) -> None:
        cols, rows = self.content_size.width, self.content_size.height
        color = not self.app.no_color
        key = (self._version, cols, rows, color)
        if key == self._key:
            return
        self._key = key
        self._lines = []
        if self._frame is None:
            return
        width, height = fit(self._frame.shape[:2], cols, rows)
        if width and height:
            self._lines = to_lines(sample(self._frame, width, height), color)

    def render_line(self, y: int) -> Strip:
        self._draw()
        width = self.content_size.width
        if y >= len(self._lines):
            return Strip.blank(width, self.rich_style)
        line = self._lines[y]
        margin = (width - sum(s.cell_length for s in line)) // 2  # centred
        return Strip([Segment(" " * margin, self.rich_style), *line]).adjust_cell_length(width, self.rich_style)
