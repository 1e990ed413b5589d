"""Small modal screens: a yes/no question, and a choice among the live runs (`rltui attach`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, OptionList, Static
from textual.widgets.option_list import Option


class ConfirmScreen(ModalScreen[bool]):
    """`question`, answered with y (True) or n / Esc (False)."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n", "answer(False)", "No"),
        Binding("escape", "answer(False)", "No", show=False),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-box"):
            yield Static(self.question, id="confirm-question")
            yield Static("y yes   n no", id="confirm-keys")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class LiveRunsScreen(Screen[None]):
    """Pick one of several live runs to attach to; Enter posts `Chosen`, q leaves."""

    BINDINGS = [Binding("q", "app.quit", "Quit")]

    class Chosen(Message):
        def __init__(self, run_dir: Path) -> None:
            super().__init__()
            self.run_dir = run_dir

    def __init__(self, statuses: list[dict[str, Any]], lines: list[str]) -> None:
        """`statuses`: each live run's `status`; `lines`: a header and one line per run (as `rltui ps`)."""
        super().__init__()
        self.statuses = statuses
        self.lines = lines

    def compose(self) -> ComposeResult:
        yield Static(f"{len(self.statuses)} live runs: choose one to attach to (Enter)", id="runs-title")
        yield Static(self.lines[0], id="runs-header")
        yield OptionList(*(Option(line, id=str(i)) for i, line in enumerate(self.lines[1:])), id="runs")
        yield Footer()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        index = int(event.option.id or 0)
        self.post_message(self.Chosen(Path(self.statuses[index]["run_dir"])))
