"""The runs browser (`rltui runs [DIR...]`, or `r` in the picker): every run found under the
directories, in a table kept up to date.

A thread worker calls `RunIndex.refresh()` every `REFRESH_S` seconds (it reads only what the logs
appended) and hands the summaries to the screen, which rebuilds its rows only when the rows
shown change (otherwise it updates the cells that changed), keeping the cursor on the same run.
Rows are sorted by a column (a header click or `s`/`S`), filtered by text (`/`), and optionally
grouped under a header row per preset (or sweep), which shows the mean ± std of its runs' last
evaluations. `space` marks runs, `c` compares the marked ones (or the group under the cursor),
Enter opens a run: the app attaches to a live one, or shows a finished one read-only, over the
list (`ListedRunDashboard`), and `q` comes back.

Screens ask, the app decides: this screen posts `OpenRequested`, `CompareRequested` and
`LeaveRequested`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static
from textual.worker import get_current_worker

from rltui.commands import Reply, Stop
from rltui.history import MetricsHistory
from rltui.screens.dashboard import LEAVING_ACTIONS, DashboardScreen, RunControl
from rltui.screens.help import HelpScreen, help_rows
from rltui.summaries import FAILED, FINISHED, KILLED, LIVE, STOPPED, RunIndex, RunSummary, mean_std
from rltui.widgets.line_chart import format_value
from rltui.widgets.status_bar import format_duration

REFRESH_S = 2.0
SPARK_WIDTH = 16
SPARK_BLOCKS = "▁▂▃▄▅▆▇█"
GROUP_PREFIX = "group:"  # row keys of group header rows; a run's row key is its run directory
STATE_STYLES = {LIVE: "bold green", FINISHED: "blue", STOPPED: "yellow", FAILED: "bold red", KILLED: "magenta"}
LIVE_ORDER = (LIVE, FAILED, KILLED, STOPPED, FINISHED)  # what `state` sorts by
HELP_FOOT = ("States: ● live (its own state), finished, stopped (before total_steps; resume continues it), "
             "failed, killed (the log ends without a final state). A group's header shows the mean ± std "
             "of its runs' last evaluations. Esc closes.")


# ---- cells ------------------------------------------------------------------------------------
def sparkline(values: Sequence[float], width: int = SPARK_WIDTH) -> str:
    """The last `width` finite values as block characters, lowest to highest of them."""
    finite = [v for v in values if math.isfinite(v)][-width:]
    if not finite:
        return ""
    low, high = min(finite), max(finite)
    if high - low <= 1e-12 * max(1.0, abs(high)):
        return SPARK_BLOCKS[len(SPARK_BLOCKS) // 2 - 1] * len(finite)
    top = len(SPARK_BLOCKS) - 1
    return "".join(SPARK_BLOCKS[round((v - low) / (high - low) * top)] for v in finite)


def _return(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.1f}"


def state_text(run: RunSummary) -> Text:
    """"running" (a live run's own state, with a ● so it shows without colour too), else the state."""
    if run.state == LIVE:
        return Text(f"● {run.live_state or 'live'}", STATE_STYLES[LIVE])
    return Text(run.state, STATE_STYLES.get(run.state, ""))


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    cell: Callable[[RunSummary], str | Text]
    sort_key: Callable[[RunSummary], Any] | None = None  # None: not sortable; a None key sorts last
    right: bool = False


COLUMNS = (
    Column("mark", " ", lambda r: ""),
    Column("name", "name", lambda r: r.name, lambda r: r.name),
    Column("algo", "algo", lambda r: r.algo, lambda r: r.algo),
    Column("env", "env", lambda r: r.env_id, lambda r: r.env_id),
    Column("seed", "seed", lambda r: "–" if r.seed is None else str(r.seed), lambda r: r.seed, right=True),
    Column("state", "state", state_text, lambda r: LIVE_ORDER.index(r.state) if r.state in LIVE_ORDER else None),
    Column("step", "step/total", lambda r: f"{format_value(r.step)}/{format_value(r.total_steps)}",
           lambda r: r.progress, right=True),
    Column("last", "last eval", lambda r: _return(r.last_eval), lambda r: r.last_eval, right=True),
    Column("best", "best eval", lambda r: _return(r.best_eval), lambda r: r.best_eval, right=True),
    Column("wall", "wall", lambda r: format_duration(r.wall_s), lambda r: r.wall_s, right=True),
    Column("evals", "evaluations", lambda r: sparkline(r.eval_curve.returns)),
)
SORTABLE = [c.key for c in COLUMNS if c.sort_key is not None]
BY_KEY = {c.key: c for c in COLUMNS}


def group_of(run: RunSummary) -> str:
    """What the browser groups by: the sweep of a sweep's trial, else the preset."""
    return run.sweep or run.preset or run.name


def matches(run: RunSummary, words: Sequence[str]) -> bool:
    """Every word (lower case) is in the run's name, algo, env, preset, group, sweep or state."""
    haystack = " ".join([run.name, run.algo, run.env_id, run.preset, run.group, run.sweep or "", run.state,
                         run.live_state or ""]).lower()
    return all(word in haystack for word in words)


def sort_runs(runs: Sequence[RunSummary], column: str, descending: bool) -> list[RunSummary]:
    """`runs` by `column` (ties by name), runs without a value last in either direction."""
    key = BY_KEY[column].sort_key
    assert key is not None
    by_name = sorted(runs, key=lambda r: r.name)
    with_value = [r for r in by_name if key(r) is not None]
    without = [r for r in by_name if key(r) is None]
    return sorted(with_value, key=key, reverse=descending) + without


@dataclass(frozen=True)
class Row:
    """One row of the table: a run, or the header of a group (`runs` its members shown)."""

    key: str
    cells: tuple[str | Text, ...]
    runs: tuple[RunSummary, ...]


def run_row(run: RunSummary, marked: bool) -> Row:
    cells = tuple(("✓" if marked else "") if c.key == "mark" else c.cell(run) for c in COLUMNS)
    return Row(str(run.run_dir), cells, (run,))


def group_row(name: str, runs: Sequence[RunSummary]) -> Row:
    """The header of a group: its name and size, live runs, mean ± std of the last evaluations
    (sample std, over the runs that have one), the best evaluation of any."""
    lasts = [r.last_eval for r in runs if r.last_eval is not None and math.isfinite(r.last_eval)]
    bests = [r.best_eval for r in runs if r.best_eval is not None and math.isfinite(r.best_eval)]
    live = sum(r.state == LIVE for r in runs)
    last = ""
    if lasts:
        mean, std = mean_std(lasts)
        last = f"{mean:.1f}" + (f" ± {std:.1f}" if std is not None else "")
    values = {
        "name": Text(f"▾ {name} · {len(runs)} run{'s' * (len(runs) != 1)}", "bold"),
        "state": Text(f"● {live} live", STATE_STYLES[LIVE]) if live else "",
        "last": last,
        "best": _return(max(bests)) if bests else "",
    }
    return Row(GROUP_PREFIX + name, tuple(values.get(c.key, "") for c in COLUMNS), tuple(runs))


def table_rows(runs: Sequence[RunSummary], *, words: Sequence[str], sort: str, descending: bool,
               grouped: bool, marked: set[str]) -> list[Row]:
    """What the table shows: the runs that match, sorted, under their group headers when grouped
    (groups in the order of their first run)."""
    shown = sort_runs([r for r in runs if matches(r, words)], sort, descending)
    if not grouped:
        return [run_row(r, str(r.run_dir) in marked) for r in shown]
    groups: dict[str, list[RunSummary]] = {}
    for run in shown:
        groups.setdefault(group_of(run), []).append(run)
    rows = []
    for name, members in groups.items():
        rows.append(group_row(name, members))
        rows.extend(run_row(r, str(r.run_dir) in marked) for r in members)
    return rows


# ---- the screen -------------------------------------------------------------------------------
class RunsTable(DataTable[str | Text]):
    """The table of runs; its Enter shows in the footer as Open."""

    BINDINGS = [Binding("enter", "select_cursor", "Open",
                        tooltip="open the run (attached if live, else read-only); on a group's header: compare it")]


class RunsScreen(Screen[None]):
    """Every run under `roots`, refreshed from a RunIndex on a thread every REFRESH_S seconds."""

    CSS_PATH = "runs.tcss"
    BINDINGS = [
        Binding("space", "mark", "Mark", tooltip="mark or unmark the run (and move down)"),
        Binding("c", "compare", "Compare", tooltip="compare the marked runs (none marked: the group under the cursor)"),
        Binding("slash", "filter", "Filter", tooltip="filter by text: name, algo, env, preset, group, state"),
        Binding("g", "toggle_grouping", "Group", tooltip="group by preset (a sweep's trials by sweep) on/off"),
        Binding("s", "sort_next", "Sort", tooltip="sort by the next column (or click a column's header)"),
        Binding("S", "reverse_sort", "Reverse", show=False, tooltip="reverse the sort order"),
        Binding("r", "refresh_now", "Refresh", show=False, tooltip="read the runs again now (else every 2 s)"),
        Binding("escape", "clear_filter", "Clear filter", show=False, tooltip="clear the filter"),
        Binding("question_mark", "help", "Help", tooltip="this help"),
        Binding("q", "leave", "Quit", tooltip="leave the runs browser"),
    ]

    class OpenRequested(Message):
        """Open `run`'s dashboard over the list (attached if it is live)."""

        def __init__(self, run: RunSummary) -> None:
            super().__init__()
            self.run = run

    class CompareRequested(Message):
        def __init__(self, runs: Sequence[RunSummary]) -> None:
            super().__init__()
            self.runs = list(runs)

    class LeaveRequested(Message):
        """`q`: back to the screen the browser was opened from, or leave."""

    sort_column: reactive[str] = reactive("name", init=False)
    descending: reactive[bool] = reactive(False, init=False)
    grouped: reactive[bool] = reactive(False, init=False)
    filter_text: reactive[str] = reactive("", bindings=True, init=False)

    def __init__(self, roots: Sequence[Path], *, index: RunIndex | None = None, refresh_s: float = REFRESH_S,
                 grouped: bool = False) -> None:
        super().__init__()
        self.set_reactive(RunsScreen.grouped, grouped)  # (a sweep's browser opens grouped by setting)
        self.roots = list(roots)
        self.index = index if index is not None else RunIndex(self.roots)
        self.refresh_s = refresh_s
        self.runs: list[RunSummary] = []
        self.rows: list[Row] = []
        self.marked: set[str] = set()
        self.loaded = False  # the first refresh came back
        self._wake = threading.Event()  # a refresh now, or the screen goes (with _stop)
        self._stop = threading.Event()

    def compose(self) -> ComposeResult:
        yield Static(id="runs-title")
        yield Input(placeholder="filter: name, algo, env, preset, group, state (Enter keeps it, Esc clears it)",
                    id="runs-filter", compact=True)
        yield RunsTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        yield Static(id="runs-empty")
        yield Footer()

    def on_mount(self) -> None:
        self._rebuild(headers=True)
        self.query_one("#runs-filter").display = False
        self.query_one(DataTable).focus()
        self._refresh_loop()

    def on_unmount(self) -> None:
        self._stop.set()
        self._wake.set()

    @property
    def roots_text(self) -> str:
        return ", ".join(str(root) for root in self.roots)

    # ---- refreshing -------------------------------------------------------------------------
    @work(thread=True, group="runs-refresh", exit_on_error=False)
    def _refresh_loop(self) -> None:
        worker = get_current_worker()
        while not worker.is_cancelled and not self._stop.is_set():
            try:
                runs = self.index.refresh()
            except Exception as exc:  # noqa: BLE001 - the list must outlive a bad refresh: say it, go on
                self.app.call_from_thread(self.notify, f"refresh: {type(exc).__name__}: {exc}",
                                          severity="error", timeout=4)
            else:
                if self._stop.is_set():
                    break
                self.app.call_from_thread(self.show_runs, runs)
            self._wake.wait(self.refresh_s)
            self._wake.clear()

    def show_runs(self, runs: list[RunSummary]) -> None:
        self.runs = runs
        self.marked &= {str(run.run_dir) for run in runs}  # a run deleted since it was marked
        self.loaded = True
        self._rebuild()

    def _rebuild(self, headers: bool = False) -> None:
        """Show the rows for the runs and options now: cells updated in place when the rows are
        the same runs in the same order, else the table refilled with the cursor on the same run
        (`headers`: the column headers changed too, e.g. the sort mark)."""
        rows = table_rows(self.runs, words=self.filter_text.lower().split(), sort=self.sort_column,
                          descending=self.descending, grouped=self.grouped, marked=self.marked)
        table = self.query_one(DataTable)
        if not headers and [r.key for r in rows] == [r.key for r in self.rows]:
            for old, new in zip(self.rows, rows, strict=True):
                for column, before, after in zip(COLUMNS, old.cells, new.cells, strict=True):
                    if before != after:
                        table.update_cell(new.key, column.key, after)
        else:
            cursor = self.cursor_row()
            table.clear(columns=headers)
            if headers:
                for column in COLUMNS:
                    table.add_column(self._header(column), key=column.key)
            for row in rows:
                table.add_row(*row.cells, key=row.key)
            keys = [r.key for r in rows]
            if cursor is not None and cursor.key in keys:
                table.move_cursor(row=keys.index(cursor.key), animate=False)
        self.rows = rows
        self._update_title()
        self._show_empty()

    def _show_empty(self) -> None:
        empty = self.query_one("#runs-empty", Static)
        table = self.query_one(DataTable)
        if not self.loaded:
            message = f"looking for runs under {self.roots_text}…"
        elif not self.runs:
            message = (f"no runs under {self.roots_text} yet: start one with `rltui train PRESET` "
                       "(or from the picker: `rltui`)")
        elif not self.rows:
            message = f"no run matches the filter “{self.filter_text}” (Esc clears it)"
        else:
            message = ""
        empty.update(message)
        empty.display = bool(message)
        table.display = bool(self.rows)

    def _update_title(self) -> None:
        live = sum(r.state == LIVE for r in self.runs)
        parts = [f"runs under {self.roots_text}", f"{len(self.runs)} run{'s' * (len(self.runs) != 1)}"
                 + (f" ({live} live)" if live else "")]
        if self.marked:
            parts.append(f"{len(self.marked)} marked")
        if self.filter_text:
            shown = sum(not row.key.startswith(GROUP_PREFIX) for row in self.rows)
            parts.append(f"filter “{self.filter_text}”: {shown} shown")
        if self.grouped:
            parts.append("grouped by preset / sweep")
        self.query_one("#runs-title", Static).update(" · ".join(parts))

    def _header(self, column: Column) -> Text:
        label = column.label
        if column.key == self.sort_column:
            label += " ▼" if self.descending else " ▲"
        return Text(label, justify="right" if column.right else "left")

    # ---- the cursor -------------------------------------------------------------------------
    def cursor_row(self) -> Row | None:
        table = self.query_one(DataTable)
        if not self.rows or not 0 <= table.cursor_row < len(self.rows):
            return None
        return self.rows[table.cursor_row]

    # ---- keys -------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("mark", "compare"):
            return True if self.cursor_row() is not None or (action == "compare" and self.marked) else None
        if action == "clear_filter":
            return True if self.filter_text or self.query_one("#runs-filter").display else None
        return True

    def on_data_table_row_highlighted(self) -> None:
        self.refresh_bindings()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        key = str(event.column_key.value)
        if key not in SORTABLE:
            return
        if key == self.sort_column:
            self.descending = not self.descending
        else:
            self.sort_column, self.descending = key, False

    def action_open(self) -> None:
        row = self.cursor_row()
        if row is None:
            return
        if row.key.startswith(GROUP_PREFIX):
            self.action_compare()
            return
        self.post_message(self.OpenRequested(row.runs[0]))

    def action_mark(self) -> None:
        row = self.cursor_row()
        if row is None:
            return
        keys = [str(r.run_dir) for r in row.runs]
        if all(k in self.marked for k in keys):
            self.marked.difference_update(keys)
        else:
            self.marked.update(keys)
        self._rebuild()
        self.query_one(DataTable).action_cursor_down()

    def action_compare(self) -> None:
        if self.marked:
            runs = [r for r in self.runs if str(r.run_dir) in self.marked]
        else:
            row = self.cursor_row()
            if row is None:
                return
            if row.key.startswith(GROUP_PREFIX):
                runs = list(row.runs)
            else:  # the run's seeds: the runs sharing its group
                runs = [r for r in self.runs if r.group == row.runs[0].group]
        if runs:
            self.post_message(self.CompareRequested(runs))

    def action_filter(self) -> None:
        field = self.query_one("#runs-filter", Input)
        field.display = True
        field.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value.strip()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        field = self.query_one("#runs-filter", Input)
        field.display = bool(self.filter_text)
        self.query_one(DataTable).focus()

    def action_clear_filter(self) -> None:
        field = self.query_one("#runs-filter", Input)
        field.value = ""
        field.display = False
        self.filter_text = ""
        self.query_one(DataTable).focus()

    def action_toggle_grouping(self) -> None:
        self.grouped = not self.grouped

    def action_sort_next(self) -> None:
        self.sort_column = SORTABLE[(SORTABLE.index(self.sort_column) + 1) % len(SORTABLE)]
        self.descending = False

    def action_reverse_sort(self) -> None:
        self.descending = not self.descending

    def action_refresh_now(self) -> None:
        self._wake.set()

    def _sort_changed(self) -> None:
        self._rebuild(headers=True)

    def _rows_changed(self) -> None:
        self._rebuild()

    watch_sort_column = watch_descending = _sort_changed
    watch_grouped = watch_filter_text = _rows_changed

    def action_help(self) -> None:
        rows = help_rows([*RunsTable.BINDINGS, *self.BINDINGS], self.app.get_key_display)
        self.app.push_screen(HelpScreen(rows, title="runs keys", foot=HELP_FOOT))

    def action_leave(self) -> None:
        self.post_message(self.LeaveRequested())


# ---- a run opened from the list ---------------------------------------------------------------
class ListedRunDashboard(DashboardScreen):
    """The dashboard of a run opened from the runs browser: `q` (or Esc) goes back to the list.

    The app follows the run's log into `history` until `stop_following` is set (when this screen
    goes); a live run is driven through `control` (its RemoteEngine, closed when the screen goes),
    `Q` stops it after a y/n and the dashboard stays on its end. A killed run (`killed_at`: the step
    its log ends at) reads FAILED, saying so, once its log is read that far: its last logged state
    would say it is still running.
    """

    # The dashboard's keys, `q` (and Esc) going back instead of quitting or detaching.
    BINDINGS = [
        *(b for b in DashboardScreen.BINDINGS if not isinstance(b, Binding) or b.action not in LEAVING_ACTIONS
          or b.action == "stop_run"),
        Binding("q", "back", "Back", tooltip="back to the runs (a live run goes on)"),
        Binding("escape", "back", "Back", show=False, tooltip="back to the runs (a live run goes on)"),
    ]

    def __init__(self, history: MetricsHistory, *, control: RunControl | None, close: Callable[[], None],
                 run_dir: Path, algo: str | None = None, killed_at: int | None = None, refresh_hz: float = 4.0,
                 clock: Callable[[], float] | None = None) -> None:
        super().__init__(history, control=control, algo=algo, refresh_hz=refresh_hz, clock=clock,
                         attached=control is not None, run_dir=run_dir)
        self.stop_following = threading.Event()
        self.killed_at = killed_at
        self._close = close

    def pull(self) -> None:
        if self.killed_at is not None and self.history.status().step >= self.killed_at:
            self.killed_at = None
            self.history.record_failure("killed: the log ends without a final state "
                                        "(`rltui resume` continues it from its last checkpoint)")
        super().pull()

    def action_back(self) -> None:
        self.dismiss()

    def on_unmount(self) -> None:
        self.stop_following.set()
        self._close()

    def on_dashboard_screen_stop_requested(self, message: DashboardScreen.StopRequested) -> None:
        from rltui.screens.choose import ConfirmScreen

        message.stop()
        if self.control is not None:
            self.app.push_screen(ConfirmScreen("Stop this run with a final checkpoint?"), self._stop_confirmed)

    def _stop_confirmed(self, confirmed: bool | None) -> None:
        if confirmed and self.control is not None:
            self.stopping = True
            self.notify("stopping the run: writing a final checkpoint…", timeout=10)
            self._await_stop(self.control.submit(Stop(final_checkpoint=True)))

    @work(group="quit")
    async def _await_stop(self, future: Future[Reply]) -> None:
        import asyncio

        reply = await asyncio.wrap_future(future)
        if not reply.ok:
            self.notify(f"stop: {reply.message}", severity="warning")
