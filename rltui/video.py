"""Seeing the agent: the rendered frames of evaluation episodes, to a video file.

`FrameTap` wraps an environment made with `render_mode="rgb_array"` and hands every frame (after
each reset and step) to a sink; `VideoWriter` is such a sink that streams the frames to an .mp4
(imageio with its ffmpeg plugin) or a .gif, under a temporary name renamed into place when it is
closed, so a failed or interrupted recording never leaves a half-written file under the real name.
imageio, imageio-ffmpeg and pygame (classic-control rendering) come with the `video` extra.
MuJoCo tasks render off-screen through `MUJOCO_GL=egl` (a GPU) or `MUJOCO_GL=osmesa` (CPU).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

VIDEO_SUFFIXES = (".mp4", ".gif")
EXTRA_HINT = "pip install 'rltui[video]'"
DEFAULT_FPS = 30


class VideoError(Exception):
    """A recording that cannot be made (bad path, missing library, an env that cannot render)."""


def check_video_path(path: Path) -> None:
    """Before any episode runs: a known suffix, an existing writable folder, and the libraries."""
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise VideoError(f"{path}: expected a file ending in .mp4 or .gif")
    folder = path.parent
    if not folder.is_dir():
        raise VideoError(f"{path}: no such folder {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise VideoError(f"{path}: cannot write in {folder}")
    if path.is_dir():
        raise VideoError(f"{path}: is a folder (expected a video file name)")
    _imageio()
    if path.suffix.lower() == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise VideoError(f"{path}: writing .mp4 needs imageio-ffmpeg ({EXTRA_HINT}); "
                             ".gif works without it") from None


def render_offscreen() -> None:
    """Frames need no display: keep pygame's SDL (classic-control rendering) from looking for one
    (and printing an error about XDG_RUNTIME_DIR on a server). A user's own setting wins."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")


def _imageio() -> Any:
    try:
        import imageio.v2 as imageio
    except ImportError:
        raise VideoError(f"recording a video needs imageio ({EXTRA_HINT})") from None
    return imageio


class FrameTap(gym.Wrapper):
    """Hands `env.render()` (an RGB array) to `sink` after every reset and step.

    A frame that cannot be had raises VideoError, or, with `on_error`, is reported to it once and
    the tap stops (the episodes go on unseen: a live panel must never stop a run).
    """

    def __init__(self, env: gym.Env, sink: Callable[[np.ndarray], None],
                 on_error: Callable[[Exception], None] | None = None) -> None:
        super().__init__(env)
        self.sink = sink
        self.on_error = on_error
        self.broken = False

    def reset(self, **kwargs: Any) -> Any:
        result = self.env.reset(**kwargs)
        self._tap()
        return result

    def step(self, action: Any) -> Any:
        result = self.env.step(action)
        self._tap()
        return result

    def _tap(self) -> None:
        if self.broken:
            return
        try:
            frame = self.env.render()
            if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] not in (3, 4):
                raise VideoError(f"{self.env.spec.id if self.env.spec else 'the environment'} does not render "
                                 "RGB frames (render_mode='rgb_array')")
            self.sink(frame[:, :, :3])
        except Exception as exc:
            if self.on_error is None:
                raise
            self.broken = True
            self.on_error(exc)


class LiveFrames:
    """The latest frame evaluation mode rendered, for a dashboard panel.

    The UI thread sets `watching` (the engine then renders evaluation-mode episodes, paced at the
    environment's frame rate, so the agent moves at its natural speed) and polls `latest()`; the
    engine thread `put`s frames. One reference is swapped per frame: no lock is needed.
    """

    def __init__(self) -> None:
        self.watching = False
        self.unavailable: str | None = None  # why frames cannot be had (said once, then no more tries)
        self._latest: tuple[int, np.ndarray] | None = None

    def put(self, frame: np.ndarray) -> None:
        version = self._latest[0] + 1 if self._latest is not None else 1
        self._latest = (version, frame)

    def latest(self) -> tuple[int, np.ndarray] | None:
        """(version, RGB frame) of the newest frame, None before the first."""
        return self._latest


class VideoWriter:
    """Streams frames to `path` (.mp4 or .gif) at `fps`; `close()` puts the file in place.

        with VideoWriter(path, fps=30) as video:
            env = FrameTap(env, video.add)
            ...
    """

    def __init__(self, path: Path, fps: int = DEFAULT_FPS) -> None:
        check_video_path(path)
        imageio = _imageio()
        self.path = path
        self.frames = 0
        self._temporary = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
        options: dict[str, Any] = {"fps": fps}
        if path.suffix.lower() == ".mp4":
            options.update(codec="libx264", quality=7, macro_block_size=1)  # any frame size; no ffmpeg chatter
            options["ffmpeg_log_level"] = "error"
        else:
            options = {"duration": 1000 / fps, "loop": 0}
        self._writer = imageio.get_writer(self._temporary, **options)

    def add(self, frame: np.ndarray) -> None:
        self._writer.append_data(np.ascontiguousarray(frame, dtype=np.uint8))
        self.frames += 1

    def close(self) -> None:
        self._writer.close()
        if self.frames == 0:
            self._temporary.unlink(missing_ok=True)
            raise VideoError(f"{self.path}: no frame was rendered")
        os.replace(self._temporary, self.path)

    def abandon(self) -> None:
        try:
            self._writer.close()
        finally:
            self._temporary.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abandon()
