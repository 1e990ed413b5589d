"""Two-line run status: identity and state, then progress, throughput, elapsed time and ETA."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from rich.text import Text
from textual.widget import Widget

from rltui.events import RunState
from rltui.history import StatusSnapshot
from rltui.system import CPU_PERCENT, GPU_MEM_MB, GPU_PERCENT, RSS_MB
from rltui.widgets.line_chart import format_value

SILENT_S = 30.0  # a running run that logged nothing for this long shows no rates

STATE_STYLES = {
    RunState.STARTING: "bold",
    RunState.RUNNING: "bold green",
    RunState.PAUSED: "bold yellow",
    RunState.EVALUATING: "bold cyan",
    RunState.FINISHED: "bold blue",
    RunState.FAILED: "bold reverse red",
}


def format_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0 or seconds > 1e8:
        return "–"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def format_update_rate(updates_per_s: float | None) -> str:
    """"12 upd/s", or "4.2 s/upd" below one a second (TRPO: one update per rollout), "– upd/s"."""
    if updates_per_s is None or updates_per_s != updates_per_s:
        return "– upd/s"
    if 0 < updates_per_s < 1:
        return f"{1 / updates_per_s:.1f} s/upd"
    return f"{format_value(updates_per_s)} upd/s"


def format_system(system: Mapping[str, float]) -> str:
    """"CPU 98%  RAM 1.2G  GPU 45% 3.1G" from the "sys/..." metrics there are (rltui.system)."""
    parts = []
    if CPU_PERCENT in system:
        parts.append(f"CPU {system[CPU_PERCENT]:.0f}%")
    if RSS_MB in system:
        parts.append(f"RAM {_mib(system[RSS_MB])}")
    if GPU_PERCENT in system:
        memory = f" {_mib(system[GPU_MEM_MB])}" if GPU_MEM_MB in system else ""
        parts.append(f"GPU {system[GPU_PERCENT]:.0f}%{memory}")
    return "  ".join(parts)


def _mib(value: float) -> str:
    return f"{value / 1024:.1f}G" if value >= 1024 else f"{value:.0f}M"


def progress_bar(fraction: float, width: int) -> str:
    """Text progress bar with eighth-block resolution, `width` cells."""
    fraction = min(max(fraction, 0.0), 1.0)
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    bar = "█" * full + ("▏▎▍▌▋▊▉"[part - 1] if part else "")
    return bar + "·" * (width - len(bar))


class StatusBar(Widget):
    """Shows a StatusSnapshot. `clock` gives "now" for the elapsed time of a live run."""

    DEFAULT_CSS = "StatusBar { height: 2; padding: 0 1; background: $panel; }"

    def __init__(self, clock: Callable[[], float] | None, *, read_only: bool = False, id: str | None = None):
        super().__init__(id=id)
        self._clock = clock
        self._read_only = read_only
        self._status: StatusSnapshot | None = None
        self._extra = ""

    def show(self, status: StatusSnapshot, extra: str = "") -> None:
        if self._status is None or status.version != self._status.version or extra != self._extra:
            self._status, self._extra = status, extra
            self.refresh()
        elif self._clock is not None and not status.state.is_final:
            self.refresh()  # the elapsed time and ETA move on with the clock

    def _silent(self, status: StatusSnapshot) -> bool:
        """A run said to be running that has logged nothing for SILENT_S (e.g. a watched run that
        was killed): its last rates are not its rates now."""
        return (self._clock is not None and status.state is RunState.RUNNING and status.last_time is not None
                and self._clock() - status.last_time > SILENT_S)

    def _elapsed(self, status: StatusSnapshot) -> float | None:
        """Time spent running, over every session of the run (a live one up to the clock's now)."""
        return status.elapsed(None if self._clock is None or status.state.is_final else self._clock())

    def render(self) -> Text:
        status = self._status
        width = self.content_size.width
        if status is None:
            return Text("waiting for the run to start…")
        info = status.info
        top = Text(no_wrap=True, overflow="ellipsis")
        if info is not None:
            top.append(info.name, "bold")
            top.append(f"  {info.algo.upper()}  {info.env_id}  {info.device}")
        if self._read_only:
            top.append("  [watch]", "dim")
        top.append("  ")
        top.append(f" {status.state.value.upper()} ", STATE_STYLES[status.state])
        if status.message and status.state in (RunState.FAILED, RunState.FINISHED):
            top.append(f" {status.message}", "red" if status.state is RunState.FAILED else "")
        if self._extra:
            top.append(f"  {self._extra}", "dim")
        if not status.state.is_final and not self._silent(status) and status.system:
            top.append(f"  {format_system(status.system)}", "dim")

        total = max(status.total_steps, 1)
        sps, ups, eta = status.steps_per_s, status.updates_per_s, status.eta_s
        if self._silent(status):
            sps = ups = eta = None
        right = (
            f" {100 * status.step / total:3.0f}%"
            f"  {format_value(sps) if sps is not None else '–'} steps/s"
            f"  {format_update_rate(ups)}"
            f"  {format_duration(self._elapsed(status))}"
            f"  ETA {format_duration(eta)}"
        )
        left = f"{status.step:,}/{status.total_steps:,} "
        bar_width = max(6, min(40, width - len(left) - len(right)))
        bottom = Text(no_wrap=True, overflow="ellipsis")
        bottom.append(left)
        bottom.append(progress_bar(status.step / total, bar_width), "green")
        bottom.append(right)
        return Text("\n").join([top, bottom])
