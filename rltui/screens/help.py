"""Key reference, shown over the dashboard (`?`)."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS = [
    ("p / space", "pause or resume training", True),
    ("c", "save a checkpoint now", True),
    ("e", "deterministic evaluation mode on/off", True),
    ("s", "cycle smoothing (EMA 0, 0.6, 0.9, 0.99)", False),
    ("l", "log scale on the focused chart", False),
    ("1-4", "maximise a chart (plotext view); again to restore", False),
    ("tab", "move focus between charts, table and log", False),
    ("?", "this help", False),
    ("q", "quit (stops training with a final checkpoint)", False),
]


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape", "dismiss", "Close"),
        Binding("question_mark", "dismiss", "Close", show=False),
        Binding("q", "dismiss", "Close", show=False),
    ]

    def __init__(self, *, read_only: bool) -> None:
        super().__init__()
        self.read_only = read_only

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        for key, what, control in KEYS:
            if control and self.read_only:
                what += " (not in watch mode)"
            table.add_row(key, what)
        with Vertical(id="help-box"):
            yield Static("rltui keys", id="help-title")
            yield Static(table)
            yield Static("Charts: faint band = raw min/max, line = mean (smoothed); "
                         "dashed = target (ε, δ). Esc closes.", id="help-foot")
