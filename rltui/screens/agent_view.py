"""See the agent: evaluation mode's episodes drawn live in the terminal (half blocks), at the
environment's own speed, over SSH without X forwarding or a video file.

Opened from the dashboard (`v`) on a run of this process (its engine renders the frames:
`rltui.video.LiveFrames`). Opening it turns evaluation mode on if it was off and asks the engine for
frames; leaving (`v`, escape) stops the frames and gives evaluation mode back as it was.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

from rltui.history import MANUAL_RETURN, MetricsHistory
from rltui.video import LiveFrames
from rltui.widgets.frame_view import FrameView

FRAME_POLL_HZ = 15.0


class AgentViewScreen(ModalScreen[None]):
    """The newest frame of evaluation mode, with the episode returns seen so far."""

    DEFAULT_CSS = """
    AgentViewScreen { align: center middle; }
    AgentViewScreen > #agent-caption { height: 1; width: 1fr; padding: 0 1; background: $panel; }
    AgentViewScreen > FrameView { height: 1fr; width: 1fr; }
    """
    BINDINGS = [
        Binding("v", "close", "Back", tooltip="back to the dashboard"),
        Binding("escape", "close", "Back", show=False),
    ]

    def __init__(self, frames: LiveFrames, history: MetricsHistory) -> None:
        super().__init__()
        self.frames = frames
        self.history = history
        self._caption = ""

    def compose(self) -> ComposeResult:
        yield Static("waiting for the first frame…", id="agent-caption")
        yield FrameView(id="agent-frame")
        yield Footer()

    def on_mount(self) -> None:
        self.frames.watching = True
        self.pull()
        self.set_interval(1.0 / FRAME_POLL_HZ, self.pull)

    def pull(self) -> None:
        if self.frames.unavailable is not None:
            self._set_caption(f"no live frames: {self.frames.unavailable}")
            return
        latest = self.frames.latest()
        if latest is not None:
            self.query_one(FrameView).show(*latest)
            self._set_caption(self._episodes_caption())

    def _episodes_caption(self) -> str:
        series = self.history.series(MANUAL_RETURN)
        step = self.history.status().step
        if series is None or len(series) == 0:
            return f"evaluation mode at step {step:,}: the first episode is playing"
        return (f"evaluation mode at step {step:,}: last episode {series.last:.1f} "
                f"(deterministic; v or escape: back)")

    def _set_caption(self, text: str) -> None:
        if text != self._caption:
            self._caption = text
            self.query_one("#agent-caption", Static).update(text)

    def action_close(self) -> None:
        self.dismiss(None)

    def on_unmount(self) -> None:
        self.frames.watching = False
