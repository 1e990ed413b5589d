"""Live runs under a directory, found by their control sockets (`rltui ps`).

A run is live when its `control.sock` answers `status`. A socket that nobody listens on is stale:
its run was killed (the next `rltui resume` of that run replaces it). Nothing is written.
"""

from __future__ import annotations

import concurrent.futures
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rltui.control import SOCKET_NAME, ControlClient, ControlError, NotLiveError

PROBE_TIMEOUT_S = 2.0
PRUNED_DIRS = {"checkpoints"}  # a run's checkpoints hold no sockets
MAX_SHOWN = 80  # characters of a name or message from another process


@dataclass(frozen=True)
class Probe:
    """What one control socket said: `status` when live, else `problem` (and `stale`)."""

    socket: Path
    status: dict[str, Any] | None = None
    problem: str = ""
    stale: bool = False

    @property
    def live(self) -> bool:
        return self.status is not None


def find_sockets(root: Path) -> list[Path]:
    """Every `control.sock` that is a socket in `root` and below (no symlinks followed), sorted."""
    found = []
    for directory, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d not in PRUNED_DIRS)
        if SOCKET_NAME in files:
            path = Path(directory) / SOCKET_NAME
            try:
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    found.append(path)
            except OSError:
                continue
    return sorted(found)


def probe(path: Path, timeout: float = PROBE_TIMEOUT_S) -> Probe:
    try:
        with ControlClient(path, timeout=timeout) as client:
            return Probe(path, status=client.status())
    except NotLiveError as exc:
        return Probe(path, problem=str(exc), stale=exc.stale)
    except ControlError as exc:
        return Probe(path, problem=str(exc))


def probe_all(root: Path, timeout: float = PROBE_TIMEOUT_S) -> list[Probe]:
    """Every socket under `root`, asked at once (a stuck run costs `timeout`, not one per run)."""
    sockets = find_sockets(root)
    if not sockets:
        return []
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(sockets))) as pool:
        return list(pool.map(lambda path: probe(path, timeout), sockets))


def shown(value: Any, limit: int = MAX_SHOWN) -> str:
    """A value from another process, safe to print: no control characters, at most `limit` characters."""
    text = "-" if value is None else str(value)
    text = "".join(ch if ch.isprintable() else "?" for ch in text)  # (lone surrogates too)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def relative(path: str) -> str:
    """`path` relative to the working directory when it lies below it, else as it is."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def _number(value: Any, digits: int = 0) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-"
    return f"{value:,.{digits}f}"


def table(probes: list[Probe]) -> list[str]:
    """The `rltui ps` lines for the live ones among `probes` (a header first)."""
    rows = [["PID", "STATE", "STEP", "STEPS/S", "ALGO", "ENV", "RUN DIR"]]
    for p in probes:
        if p.status is None:
            continue
        s = p.status
        step = f"{_number(s.get('step'))}/{_number(s.get('total_steps'))}"
        run_dir = s["run_dir"] if isinstance(s.get("run_dir"), str) else str(p.socket.parent)
        rate = _number(s.get("steps_per_s")) if s.get("state") == "running" else "-"  # (the last rate is old)
        rows.append([shown(s.get("pid")), shown(s.get("state")), step, rate,
                     shown(s.get("algo")), shown(s.get("env_id")), shown(relative(run_dir), 1000)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    right = {2, 3}  # numbers
    lines = []
    for row in rows:
        cells = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append("  ".join([*cells, row[-1]]))
    return lines

