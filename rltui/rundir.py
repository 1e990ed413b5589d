"""A run directory: its creation, its resolved preset, and the lock that gives it one owner.

    <saves>/<name>-<YYYYmmdd-HHMMSS>/
        preset.toml     the resolved preset (rewritten with the overrides of each resume)
        metrics.jsonl   the run log (rltui.runlog)
        checkpoints/    rltui.checkpoint
        .lock           held (flock) by the one process that trains the run; holds its pid

The lock is an advisory `flock` on `.lock`, taken before anything in the directory is written and
held until the run ends. The kernel drops it when its process dies however it dies, so a lock left
by a killed process is simply free again; the file itself stays (deleting it would race with a
process about to lock it).
"""

from __future__ import annotations

import errno
import fcntl
import os
from datetime import datetime
from pathlib import Path

from rltui.presets import Preset, preset_to_toml

PRESET_FILE = "preset.toml"
LOCK_FILE = ".lock"


class RunLockedError(Exception):
    """Another live process owns the run directory; str() is a one-line message."""


def create_run_dir(preset: Preset, saves_root: Path) -> Path:
    """saves_root/<name>-<YYYYmmdd-HHMMSS>/ (suffixed -2, -3... if taken), holding preset.toml."""
    saves_root = Path(saves_root)
    saves_root.mkdir(parents=True, exist_ok=True)
    stem = f"{preset.name}-{datetime.now():%Y%m%d-%H%M%S}"
    run_dir, n = saves_root / stem, 1
    while True:
        try:
            run_dir.mkdir()
            break
        except FileExistsError:
            n += 1
            run_dir = saves_root / f"{stem}-{n}"
    write_preset(run_dir, preset)
    return run_dir


def write_preset(run_dir: Path, preset: Preset) -> None:
    temp = run_dir / f".{PRESET_FILE}.tmp"
    temp.write_text(preset_to_toml(preset))
    temp.replace(run_dir / PRESET_FILE)


class RunLock:
    """Exclusive ownership of a run directory for as long as this object is held (see module doc)."""

    def __init__(self, run_dir: Path) -> None:
        """Take the lock or raise RunLockedError naming the process that holds it."""
        self.path = Path(run_dir) / LOCK_FILE
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            holder = _read_pid(self.path)
            who = f"process {holder}" if holder is not None else "another process"
            raise RunLockedError(
                f"{run_dir}: the run is in use by {who} (a live `rltui train` or `rltui resume`); "
                "stop it first, or watch it with `rltui watch`"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
