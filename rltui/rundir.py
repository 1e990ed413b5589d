"""A run directory: its creation, its resolved preset, and the lock that gives it one owner.

    <saves>/<name>-<YYYYmmdd-HHMMSS>/
        preset.toml     the resolved preset (rewritten with the overrides of each resume)
        metrics.jsonl   the run log (rltui.runlog)
        checkpoints/    rltui.checkpoint

The lock is an advisory `flock` on the run directory itself, taken before anything in it is
written and held until the run ends: nothing is written to take it, so a refused command leaves
the directory exactly as it was. The kernel drops the lock when its process dies however it dies,
so a run whose owner was killed is simply free again. Who holds a lock is read from /proc/locks
(Linux); elsewhere the message says "another process".
"""

from __future__ import annotations

import errno
import fcntl
import os
from datetime import datetime
from pathlib import Path

from rltui.presets import Preset, preset_to_toml

PRESET_FILE = "preset.toml"
PROC_LOCKS = Path("/proc/locks")


class RunLockedError(Exception):
    """Another live process owns the run directory; str() is a one-line message."""


def create_run_dir(preset: Preset, saves_root: Path) -> Path:
    """saves_root/<name>-<YYYYmmdd-HHMMSS>/ (suffixed -2, -3... if taken), holding preset.toml."""
    saves_root = Path(saves_root)
    if saves_root.exists() and not saves_root.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(saves_root))
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
    temp.write_text(preset_to_toml(preset), encoding="utf-8")
    temp.replace(run_dir / PRESET_FILE)


class RunLock:
    """Exclusive ownership of a run directory for as long as this object is held (see module doc)."""

    def __init__(self, run_dir: Path) -> None:
        """Take the lock or raise RunLockedError naming the process that holds it."""
        self.run_dir = Path(run_dir)
        fd = os.open(self.run_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _flock_holder(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            who = f"process {holder}" if holder is not None else "another process"
            raise RunLockedError(
                f"{run_dir}: the run is in use by {who} (a live `rltui train` or `rltui resume`); "
                "stop it first, or watch it with `rltui watch`"
            ) from None
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def _flock_holder(fd: int) -> int | None:
    """The pid holding a flock on the file of `fd`, from /proc/locks; None where unknown."""
    st = os.fstat(fd)
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        lines = PROC_LOCKS.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fd:00:1573903 0 EOF"; waiting requests have "->" after the id
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == device and fields[4].isdigit():
            return int(fields[4])
    return None
