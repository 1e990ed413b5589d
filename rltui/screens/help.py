"""Key reference, shown over a screen (`?`), made from that screen's BINDINGS.

Each binding's `tooltip` is its help text (the Footer shows the same text on hover); bindings
that share a help text share a row ("p, space  pause or resume training"), so a key added to a
screen's BINDINGS shows up here without anything else to edit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static


def help_rows(
    bindings: Iterable[BindingType],
    key_display: Callable[[Binding], str],
    notes: Mapping[str, str] | None = None,
) -> list[tuple[str, str]]:
    """(keys, what they do) per help text, in the bindings' order.

    A binding's help text is its tooltip, else its description. `notes` maps an action to a remark
    appended in brackets (e.g. "not in watch mode").
    """
    notes = notes or {}
    rows: dict[str, list[str]] = {}
    for binding in Binding.make_bindings(bindings):  # tuples become Bindings, "a,b" one per key
        text = binding.tooltip or binding.description or binding.action
        note = notes.get(binding.action.partition("(")[0])
        if note:
            text += f" ({note})"
        keys = rows.setdefault(text, [])
        key = key_display(binding)
        if key not in keys:
            keys.append(key)
    return [(_join_keys(keys), text) for text, keys in rows.items()]


def _join_keys(keys: list[str]) -> str:
    """"p, space"; a run of three or more consecutive digits as "1-4"."""
    if len(keys) > 2 and all(len(k) == 1 and k.isdigit() for k in keys):
        if [int(k) for k in keys] == list(range(int(keys[0]), int(keys[0]) + len(keys))):
            return f"{keys[0]}-{keys[-1]}"
    return ", ".join(keys)


DASHBOARD_FOOT = ("Charts: faint band = raw min/max, line = mean (smoothed); ━ ╍ ┉ = the title's series, "
                  "┄ = target (ε, δ). Esc closes.")


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape", "dismiss", "Close"),
        Binding("question_mark", "dismiss", "Close", show=False),
        Binding("q", "dismiss", "Close", show=False),
    ]

    def __init__(self, rows: list[tuple[str, str]], *, title: str = "rltui keys", foot: str = DASHBOARD_FOOT) -> None:
        super().__init__()
        self.rows = rows
        self.title_text = title
        self.foot = foot

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        for keys, what in self.rows:
            table.add_row(keys, what)
        with Vertical(id="help-box"):
            yield Static(self.title_text, id="help-title")
            yield Static(table, id="help-keys")
            yield Static(self.foot, id="help-foot")
