"""`rltui watch RUN_DIR`: the up-front check of the run directory. No Textual import.

The log itself is followed by `rltui.runlog.MetricsFollower` (the one reader of metrics.jsonl)
and folded into a `MetricsHistory` like every other view's.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from rltui.runlog import LOG_NAME, display_path, os_reason


class WatchError(ValueError):
    """A RUN_DIR that `rltui watch` cannot follow; str() is the one-line message."""


def check_run_dir(run_dir: Path | str) -> Path:
    """The run directory `rltui watch` may follow, or WatchError saying what is wrong with it.

    Needs a directory holding a readable regular file metrics.jsonl (created by `rltui train`
    as the run starts). Nothing is written.
    """
    if str(run_dir) == "":
        raise WatchError("RUN_DIR is an empty string (expected a run directory)")
    run_dir = Path(run_dir)
    shown = display_path(run_dir)
    try:
        st = os.stat(run_dir)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise WatchError(f"{shown}: no such directory (expected a run directory)") from None
        raise WatchError(f"{shown}: {os_reason(exc)}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise WatchError(f"{shown}: not a directory (expected a run directory, not a file)")
    log = run_dir / LOG_NAME
    try:
        st = os.stat(log)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise WatchError(f"{shown}: no {LOG_NAME} (expected a run directory made by `rltui train`)") from None
        raise WatchError(f"{display_path(log)}: {os_reason(exc)}") from None
    if not stat.S_ISREG(st.st_mode):
        raise WatchError(f"{display_path(log)}: not a regular file")
    try:
        fd = os.open(log, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise WatchError(f"{display_path(log)}: cannot be read ({os_reason(exc)})") from None
    os.close(fd)
    return run_dir
