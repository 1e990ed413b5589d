"""Summaries of many runs, for the runs browser, `rltui report` and comparisons: one `RunSummary`
per run directory, folded from its metrics.jsonl and preset.toml, kept up to date from the log's tail.

    index = RunIndex([Path("saves")])
    for run in index.refresh():          # call again to pick up what the runs appended since
        print(run.name, run.state, run.step, run.last_eval)

What a summary says:

- `state`: one of
    "live"      the run's process is alive: it answers on its control socket (`live_state` is then
                its state: "starting", "running", "paused" or "evaluating", and `step` its step now),
                or it holds the run directory's lock and has no socket yet ("starting");
    "finished"  the log's last state is finished, at `total_steps`;
    "stopped"   the log's last state is finished before `total_steps` (stopped by the user, with a
                final checkpoint unless asked otherwise; `rltui resume` continues it);
    "failed"    the log's last state is failed (`message` says why);
    "killed"    the log ends without a final state and nothing answers on the run's socket: the
                process died (SIGKILL, a crash of the machine); `rltui resume` continues it from its
                last checkpoint.
- the evaluation curve: the interval and requested evaluations (`return_mean` per step), without
  the single episodes of evaluation mode (`e` in the dashboard); `last_eval`, `best_eval` read from
  it. After a resume, what a killed session logged beyond the checkpoint it resumes from is dropped,
  as the dashboard does.
- `group`: the key shared by runs that differ only by their seed (and device, threads and
  checkpoint settings): the preset's name (a sweep's name for its trials) plus `key=value` for
  each setting of preset.toml that differs between the runs of that name, e.g.
  `pendulum-mpo mpo.kl_epsilon=0.05`. So it is computed across the runs indexed together.

Speed: a run's log is read once; later refreshes read only what was appended (a replaced, truncated
or rewritten log is read again from its start; a half-written last line is left for the next
refresh). Of the lines, only those a summary needs are parsed (the run's start, states, evaluations,
errors, the last episodes and the last line): the others are recognised by their first bytes as
the run log writes them. The lines that are parsed go through `rltui.runlog.parse_event_line`, the
run log's own line parser. The folded state is also cached on disk between processes, per root,
under `$XDG_CACHE_HOME/rltui/runs/` (default `~/.cache/rltui`), keyed by each run directory's path
and its files' identity (device, inode, size, modification time); a cache that cannot be read or
does not fit is ignored, one that cannot be written is skipped. Nothing is written in run
directories, so read-only ones work. Live runs are asked for their state over their control sockets
(at most `probe_timeout` seconds, all at once); a run is only asked when its log has no final state
and its directory is locked by a process or holds a socket.
"""

from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import hashlib
import json
import math
import os
import stat
import sys
import threading
import time
from array import array
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rltui.events import MAX_INT, EpisodeFinished, ErrorRaised, EvalResult, Event, RunStarted, RunState, StateChanged
from rltui.runlog import LOG_NAME, MAX_LINE_BYTES, parse_event_line

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

PRESET_FILE = "preset.toml"
META_FILE = "run.json"
SOCKET_NAME = "control.sock"
PRUNED_DIRS = {"checkpoints"}
PROC_LOCKS = Path("/proc/locks")

PROBE_TIMEOUT_S = 0.5
RECENT_EPISODES = 10  # training episodes averaged into `recent_return`
CACHE_VERSION = 2  # 2: evaluation mode told by the eval events' source
CACHE_SAVE_INTERVAL_S = 5.0  # a refresh that changed something saves the cache at most this often
READ_CHUNK_BYTES = 8 << 20
_CHECK_BYTES = 64  # bytes at the log's start and before the read offset compared to notice a rewrite
# A log modified less than this before it was read may change again without its size or modification
# time changing (same size, same clock tick): its first and last bytes read are compared again.
RACY_NS = 1_000_000_000

LIVE, FINISHED, STOPPED, FAILED, KILLED = "live", "finished", "stopped", "failed", "killed"
STATES = (LIVE, FINISHED, STOPPED, FAILED, KILLED)

# Settings that do not make a different experiment: runs differing only in these share a group.
UNGROUPED_KEYS = {"name", "description", "extends", "train.seed", "train.device", "train.threads"}
UNGROUPED_SECTIONS = ("checkpoint.",)

# Lines the summary does not need, as the run log writes them (`event` first, compact separators).
# A line written any other way is parsed, so this is only a shortcut.
_SKIPPED_PREFIXES = (b'{"event":"update"', b'{"event":"checkpoint"', b'{"event":"warning"')
_EPISODE_PREFIX = b'{"event":"episode"'
_EVAL_PREFIX = b'{"event":"eval"'


# ------------------------------------------------------------------------------------- summaries


@dataclass(frozen=True)
class EvalCurve:
    """A run's evaluations: env steps, mean return of each and the std of its episodes' returns.
    Non-finite values (written as null) are NaN."""

    steps: tuple[int, ...] = ()
    returns: tuple[float, ...] = ()
    stds: tuple[float, ...] = ()

    def __len__(self) -> int:
        return len(self.steps)


@dataclass(frozen=True)
class RunSummary:
    """What the runs browser shows of one run (see the module docstring for `state` and `group`)."""

    run_dir: Path
    name: str  # the run directory's name
    algo: str
    env_id: str
    seed: int | None
    preset: str  # the preset's name
    group: str
    sweep: str | None  # the sweep's name (run.json), for a sweep's trial
    trial: str | None  # the trial's id in its sweep
    state: str  # one of STATES
    live_state: str | None  # for a live run: starting, running, paused, evaluating
    step: int
    total_steps: int
    last_eval: float | None  # mean return of the last evaluation
    best_eval: float | None  # the highest mean return of an evaluation
    eval_curve: EvalCurve
    recent_return: float | None  # mean return of the last RECENT_EPISODES training episodes
    started: float | None  # unix time of the first session's start
    wall_s: float  # seconds spent in all sessions, from each one's start to its last event
    sessions: int  # 1 + the number of resumes
    pid: int | None  # the live run's process
    message: str  # the last state's message, or the error of a failed run
    config: tuple[tuple[str, Any], ...]  # preset.toml flattened: ("mpo.kl_epsilon", 0.1), ...; lists as tuples

    @property
    def progress(self) -> float:
        """Fraction of total_steps done, in [0, 1]."""
        return min(self.step / self.total_steps, 1.0) if self.total_steps > 0 else 0.0

    def setting(self, key: str) -> Any:
        """A flattened preset value ("train.seed"), None when absent."""
        return dict(self.config).get(key)


def find_runs(roots: Iterable[Path]) -> list[Path]:
    """Run directories in and below `roots` (a root can be a run directory itself), sorted, each
    once: directories holding metrics.jsonl or preset.toml. Symbolic links to directories, hidden
    directories and a run's own subdirectories (its checkpoints/) are not searched."""
    return [run for _root, run in _find_runs_by_root(roots)]


def _find_runs_by_root(roots: Iterable[Path]) -> list[tuple[Path, Path]]:
    found: list[tuple[Path, Path]] = []
    seen: set[str] = set()
    for root in roots:
        for run in sorted(_walk(Path(root))):
            key = os.path.abspath(run)
            if key not in seen:
                seen.add(key)
                found.append((Path(root), run))
    return found


def _walk(directory: Path) -> Iterator[Path]:
    try:
        with os.scandir(directory) as it:
            entries = list(it)
    except OSError:
        return
    if any(e.name in (LOG_NAME, PRESET_FILE) and _is_file(e) for e in entries):
        yield directory
        return
    for entry in entries:
        if entry.name.startswith(".") or entry.name in PRUNED_DIRS:
            continue
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
        except OSError:
            continue
        if is_dir:
            yield from _walk(directory / entry.name)


def _is_file(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_file(follow_symlinks=False)
    except OSError:
        return False


# ------------------------------------------------------------------------------ folding the log


@dataclass
class _Fold:
    """What a summary needs from a run's log, folded line by line (cached as JSON)."""

    name: str = ""
    algo: str = ""
    env_id: str = ""
    total_steps: int = 0
    step: int = 0
    state: str | None = None
    message: str = ""
    started: float | None = None
    session_start: float | None = None
    last_time: float | None = None
    earlier_s: float = 0.0
    sessions: int = 0
    # the evaluation curve, as arrays: cached as their bytes (a long run has thousands of points)
    eval_steps: array[int] = field(default_factory=lambda: array("q"))
    eval_means: array[float] = field(default_factory=lambda: array("d"))
    eval_stds: array[float] = field(default_factory=lambda: array("d"))
    episodes: list[tuple[int, float]] = field(default_factory=list)  # (step, return) of the last ones

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in ("eval_steps", "eval_means", "eval_stds"):
            out[name] = base64.b64encode(out[name].tobytes()).decode("ascii")
        out["episodes"] = [[s, _nan_to_none(r)] for s, r in self.episodes]
        return out

    @classmethod
    def from_json(cls, data: Any) -> _Fold:
        """Raises (KeyError, TypeError, ValueError) on anything that does not fit."""
        fold = cls(
            name=_typed(data["name"], str), algo=_typed(data["algo"], str), env_id=_typed(data["env_id"], str),
            total_steps=_typed(data["total_steps"], int), step=_typed(data["step"], int),
            state=_optional(data["state"], str), message=_typed(data["message"], str),
            started=_optional_float(data["started"]), session_start=_optional_float(data["session_start"]),
            last_time=_optional_float(data["last_time"]), earlier_s=_float(data["earlier_s"]),
            sessions=_typed(data["sessions"], int),
            eval_steps=_array("q", data["eval_steps"]), eval_means=_array("d", data["eval_means"]),
            eval_stds=_array("d", data["eval_stds"]),
            episodes=[(_typed(s, int), _float(r)) for s, r in data["episodes"]],
        )
        if fold.state is not None:
            RunState(fold.state)
        if not len(fold.eval_steps) == len(fold.eval_means) == len(fold.eval_stds):
            raise ValueError("evaluation curve of mismatched lengths")
        return fold

    # ---- folding
    def add_lines(self, data: bytes) -> None:
        """Fold complete lines (`data` ends with a newline, or is empty)."""
        episodes: deque[bytes] = deque(maxlen=RECENT_EPISODES)
        previous = b""
        for line in data.split(b"\n"):
            if not line or line.startswith(_SKIPPED_PREFIXES):
                previous = line or previous
                continue
            if line.startswith(_EPISODE_PREFIX):
                episodes.append(line)
                previous = line
                continue
            if line.startswith(_EVAL_PREFIX):
                point = _eval_point(line)
                if point is not None:
                    self._add_eval(*point)
                    previous = line
                    continue
            event = _parse(line)
            if event is None:
                continue
            if isinstance(event, RunStarted):
                self._add_episodes(episodes)
                before = _parse(previous) if previous else None
                if before is not None:  # the previous session's last event
                    self.step = before.step
                    self._saw_time(before.time)
                self._start_session(event)
            else:
                self._add(event)
            previous = line
        self._add_episodes(episodes)
        last = _parse(previous) if previous else None
        if last is not None:
            self.step = last.step
            self._saw_time(last.time)

    def _add_episodes(self, lines: deque[bytes]) -> None:
        for line in lines:
            event = _parse(line)
            if isinstance(event, EpisodeFinished):
                self.episodes.append((event.step, event.episode_return))
        del self.episodes[:-RECENT_EPISODES]
        lines.clear()

    def _start_session(self, event: RunStarted) -> None:
        if self.session_start is not None and self.last_time is not None:
            self.earlier_s += max(self.last_time - self.session_start, 0.0)
        if event.step < self.step:  # a resume from an earlier checkpoint: the steps after it never happened
            kept = next((i for i, s in enumerate(self.eval_steps) if s > event.step), len(self.eval_steps))
            del self.eval_steps[kept:], self.eval_means[kept:], self.eval_stds[kept:]
            self.episodes = [e for e in self.episodes if e[0] <= event.step]
        finite_time = event.time if math.isfinite(event.time) else None
        self.session_start = finite_time
        if self.started is None:
            self.started = finite_time
        self.name, self.algo, self.env_id = event.name, event.algo, event.env_id
        self.total_steps, self.step = event.total_steps, event.step
        self.state, self.message = RunState.STARTING.value, ""
        self.sessions += 1
        self._saw_time(event.time)

    def _add(self, event: Event) -> None:
        self.step = event.step
        self._saw_time(event.time)
        if isinstance(event, StateChanged):
            if event.state is not RunState.FAILED or event.message:
                self.message = event.message
            self.state = event.state.value
        elif isinstance(event, EvalResult):
            self._add_eval(event.step, event.time, event.return_mean, event.return_std, event.deterministic,
                           event.source)
        elif isinstance(event, ErrorRaised):
            self.message = event.message

    def _add_eval(self, step: int, time: float, mean: float, std: float, deterministic: bool,
                  source: str | None) -> None:
        self.step = step
        self._saw_time(time)
        # Evaluation mode's single episodes are not curve points: said by their source, or (logs
        # older than `source`) by coming while the state is "evaluating".
        manual = source == "manual" if source is not None else self.state == RunState.EVALUATING.value
        if deterministic and not manual:
            self.eval_steps.append(step)
            self.eval_means.append(mean)
            self.eval_stds.append(std)

    def _saw_time(self, value: float) -> None:
        if math.isfinite(value):
            self.last_time = value

    @property
    def wall_s(self) -> float:
        current = (self.last_time - self.session_start
                   if self.last_time is not None and self.session_start is not None else 0.0)
        return self.earlier_s + max(current, 0.0)


def _parse(line: bytes) -> Event | None:
    try:
        return parse_event_line(line)
    except ValueError:
        return None


def _eval_point(line: bytes) -> tuple[int, float, float, float, bool, str | None] | None:
    """(step, time, return_mean, return_std, deterministic, source) of an evaluation's line as the run log
    writes it (the one frequent line a summary needs), without building its event; None for
    anything else (null values, missing fields, wrong types), which `parse_event_line` then judges.
    Accepts only lines `parse_event_line` accepts, with the same values."""
    try:
        p = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if type(p) is not dict or p.get("event") != "eval":
        return None
    try:
        step, time_, mean, std, length, episodes = (p["step"], p["time"], p["return_mean"], p["return_std"],
                                                   p["length_mean"], p["episodes"])
    except KeyError:
        return None
    returns, deterministic, source = p.get("returns", []), p.get("deterministic", True), p.get("source")
    if (type(step) is int and type(episodes) is int and 0 <= step <= MAX_INT and 0 <= episodes <= MAX_INT
            and type(deterministic) is bool and type(returns) is list and (source is None or type(source) is str)
            and {type(time_), type(mean), type(std), type(length), *map(type, returns)} == {float}):
        return step, time_, mean, std, deterministic, source
    return None


# ----------------------------------------------------------------------------- one run's entry

FileIdentity = tuple[int, int, int, int]  # device, inode, size, mtime_ns


def _identity(path: Path) -> FileIdentity | None:
    """The identity of a regular file, None when it is missing or not a regular file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass
class _PresetInfo:
    name: str = ""
    algo: str = ""
    env_id: str = ""
    seed: int | None = None
    total_steps: int = 0
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Entry:
    """One run as the index keeps it: its log's fold and where reading stopped, its preset, its sweep."""

    log: FileIdentity | None = None
    read_ns: int = 0  # when the log was last read (time.time_ns())
    offset: int = 0  # just after the last complete line folded
    head: bytes = b""  # the log's first bytes, and those before `offset`: to notice a rewrite
    tail: bytes = b""
    skipping: bool = False  # inside a line longer than MAX_LINE_BYTES: drop bytes up to its newline
    fold: _Fold = field(default_factory=_Fold)
    read_problem: str = ""
    preset: FileIdentity | None = None
    preset_info: _PresetInfo = field(default_factory=_PresetInfo)
    meta: FileIdentity | None = None
    sweep: str | None = None
    trial: str | None = None
    summary: RunSummary | None = None  # built from the above (not cached on disk); None once they change
    cached_json: str | None = None  # the entry as the cache file holds it; None once it changes

    def update(self, run_dir: Path) -> bool:
        """Bring the entry up to date with the run's files; True when anything changed."""
        changed = self._update_log(run_dir / LOG_NAME)
        preset = _identity(run_dir / PRESET_FILE)
        if preset != self.preset:
            self.preset, self.preset_info, changed = preset, _read_preset(run_dir / PRESET_FILE), True
        meta = _identity(run_dir / META_FILE)
        if meta != self.meta:
            self.meta, changed = meta, True
            self.sweep, self.trial = _read_sweep(run_dir / META_FILE)
        return changed

    def _update_log(self, path: Path) -> bool:
        identity = _identity(path)
        if identity == self.log and not self._racy():
            return False
        before = (self.log, self.offset, self.head, self.tail, self._racy())
        try:
            self._read_log(path, identity)
            self.read_problem = ""
        except OSError as exc:
            self.read_problem = f"{LOG_NAME}: {(exc.strerror or type(exc).__name__).lower()}"
            self.log = None  # try again next time
        return (self.log, self.offset, self.head, self.tail, self._racy()) != before

    def _racy(self) -> bool:
        """Whether the log was read so soon after its last change that it could change again unseen."""
        return self.log is not None and self.read_ns - self.log[3] <= RACY_NS

    def _read_log(self, path: Path, identity: FileIdentity | None) -> None:
        if identity is None:
            self._restart(None)
            return
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        self.read_ns = time.time_ns()
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):  # swapped for something else since the stat
                self._restart(None)
                return
            identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            if not self._continues(fd, identity):
                self._restart(identity)
            self.log = identity
            self._read_from(fd, st.st_size)
        finally:
            os.close(fd)

    def _continues(self, fd: int, identity: FileIdentity) -> bool:
        """Whether the file is the one folded so far, with lines appended (not replaced or rewritten)."""
        if self.log is None or self.log[:2] != identity[:2] or identity[2] < self.offset:
            return False
        if self.head and os.pread(fd, len(self.head), 0) != self.head:
            return False
        return not self.tail or os.pread(fd, len(self.tail), self.offset - len(self.tail)) == self.tail

    def _restart(self, identity: FileIdentity | None) -> None:
        self.log, self.offset, self.head, self.tail, self.skipping = identity, 0, b"", b"", False
        self.fold = _Fold()

    def _read_from(self, fd: int, size: int) -> None:
        carried = b""  # a partial line, from the chunk before
        position = self.offset
        while position < size:
            data = os.pread(fd, min(READ_CHUNK_BYTES, size - position), position)
            if not data:
                break
            position += len(data)
            if self.skipping:
                cut = data.find(b"\n")
                if cut < 0:
                    self.offset = position
                    continue
                data, self.skipping = data[cut + 1:], False
                self.offset = position - len(data)
            data = carried + data
            end = data.rfind(b"\n") + 1
            self.fold.add_lines(data[:end])
            self.offset += end
            carried = data[end:]
            if len(carried) > MAX_LINE_BYTES:  # not a line anyone will finish: skip it
                self.offset += len(carried)
                carried, self.skipping = b"", True
        if len(self.head) < _CHECK_BYTES and self.offset:
            self.head = os.pread(fd, min(_CHECK_BYTES, self.offset), 0)
        n = min(_CHECK_BYTES, self.offset)
        self.tail = os.pread(fd, n, self.offset - n) if n else b""

    # ---- cache form
    def to_json(self) -> dict[str, Any]:
        info = self.preset_info
        return {
            "log": self.log, "read_ns": self.read_ns, "offset": self.offset, "head": self.head.hex(),
            "tail": self.tail.hex(), "skipping": self.skipping, "fold": self.fold.to_json(),
            "read_problem": self.read_problem, "preset": self.preset,
            "preset_info": {"name": info.name, "algo": info.algo, "env_id": info.env_id, "seed": info.seed,
                            "total_steps": info.total_steps, "config": info.config},
            "meta": self.meta, "sweep": self.sweep, "trial": self.trial,
        }

    @classmethod
    def from_json(cls, data: Any) -> _Entry:
        """Raises (KeyError, TypeError, ValueError) on anything that does not fit."""
        info = data["preset_info"]
        config = _typed(info["config"], dict)
        return cls(
            log=_file_identity(data["log"]), read_ns=_typed(data["read_ns"], int), offset=_typed(data["offset"], int),
            head=bytes.fromhex(_typed(data["head"], str)), tail=bytes.fromhex(_typed(data["tail"], str)),
            skipping=_typed(data["skipping"], bool), fold=_Fold.from_json(data["fold"]),
            read_problem=_typed(data["read_problem"], str), preset=_file_identity(data["preset"]),
            preset_info=_PresetInfo(
                name=_typed(info["name"], str), algo=_typed(info["algo"], str), env_id=_typed(info["env_id"], str),
                seed=_optional(info["seed"], int), total_steps=_typed(info["total_steps"], int),
                config={_typed(k, str): _tuples(v) for k, v in config.items()},
            ),
            meta=_file_identity(data["meta"]), sweep=_optional(data["sweep"], str),
            trial=_optional(data["trial"], str),
        )


def _read_preset(path: Path) -> _PresetInfo:
    """What a summary takes from preset.toml; a missing or broken file gives an empty one."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return _PresetInfo()
    config = dict(_flatten(data))
    seed = config.get("train.seed")
    total_steps = config.get("train.total_steps")
    return _PresetInfo(
        name=_str_or_empty(config.get("name")), algo=_str_or_empty(config.get("algo")),
        env_id=_str_or_empty(config.get("env.id")),
        seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        total_steps=total_steps if isinstance(total_steps, int) and not isinstance(total_steps, bool) else 0,
        config=config,
    )


def _flatten(table: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in table.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", _json_value(value)


def _json_value(value: Any) -> Any:
    """A TOML value as JSON keeps it: lists as tuples (hashable), dates as their ISO text."""
    if isinstance(value, list):
        return tuple(_json_value(v) for v in value)
    if isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _read_sweep(path: Path) -> tuple[str | None, str | None]:
    """(sweep name, trial id) from run.json's `sweep`, (None, None) for anything else."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None, None
    sweep = data.get("sweep") if isinstance(data, dict) else None
    if not isinstance(sweep, dict) or not isinstance(sweep.get("name"), str):
        return None, None
    trial = sweep.get("trial")
    return sweep["name"], None if trial is None else str(trial)


# ------------------------------------------------------------------------------------ the index


@dataclass(frozen=True)
class _Live:
    """What a run's process says of it (or its lock, when it has no socket yet)."""

    pid: int | None
    state: str
    step: int | None = None


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/rltui, or ~/.cache/rltui."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rltui"


class RunIndex:
    """The runs under `roots`, summarised; `refresh()` brings them up to date cheaply.

    `cache`: the directory of the on-disk cache (default `default_cache_dir()`), None for none.
    Safe to call from one thread at a time per index (refresh holds a lock).
    """

    def __init__(self, roots: Iterable[str | os.PathLike[str]], cache: str | os.PathLike[str] | None = None, *,
                 use_cache: bool = True, probe_timeout: float = PROBE_TIMEOUT_S) -> None:
        self.roots = [Path(r) for r in roots]
        self.cache_dir = (Path(cache) if cache is not None else default_cache_dir()) if use_cache else None
        self.probe_timeout = probe_timeout
        self._entries: dict[str, _Entry] = {}  # by the run directory's absolute path
        self._loaded_roots: set[str] = set()
        self._dirty: set[str] = set()  # roots whose cache file is out of date
        self._last_save = -math.inf
        self._groups: dict[str, str] = {}  # by run, as assign_groups last gave them
        self._group_signature: tuple[Any, ...] = ()
        self._lock = threading.Lock()

    def refresh(self) -> list[RunSummary]:
        """Every run now, sorted by run directory; reads only what changed since the last call."""
        with self._lock:
            found = _find_runs_by_root(self.roots)
            for root_key in {os.path.abspath(r) for r, _ in found} - self._loaded_roots:
                self._load_cache(root_key)
            current: dict[str, tuple[Path, _Entry]] = {}
            for root, run_dir in found:
                key = os.path.abspath(run_dir)
                entry = self._entries.get(key)
                if entry is None:
                    entry = self._entries[key] = _Entry()
                    self._dirty.add(os.path.abspath(root))
                if entry.update(run_dir):
                    self._dirty.add(os.path.abspath(root))
                    entry.summary = entry.cached_json = None
                current[key] = (run_dir, entry)
            for key in list(self._entries):
                if key not in current:
                    del self._entries[key]
                    self._dirty.update(self._loaded_roots)
            live = self._probe([(run_dir, entry) for run_dir, entry in current.values()
                                if entry.fold.state is None or not RunState(entry.fold.state).is_final])
            summaries = self._update_summaries(current)
            self._save_cache(found)
            out = [_with_live(s, live[key]) if key in live else s for key, s in summaries.items()]
            return sorted(out, key=lambda s: str(s.run_dir))

    def _update_summaries(self, current: dict[str, tuple[Path, _Entry]]) -> dict[str, RunSummary]:
        """Each run's summary, its group included, by key; only those whose files changed are built
        again, and the groups only when a run came, went, or changed its preset or sweep."""
        summaries: dict[str, RunSummary] = {}
        for key, (run_dir, entry) in current.items():
            if entry.summary is None or entry.summary.run_dir != run_dir:
                entry.summary = _summary(run_dir, entry)
            summaries[key] = entry.summary
        signature = tuple((key, entry.preset, entry.meta, summaries[key].preset) for key, (_, entry) in current.items())
        if signature != self._group_signature:
            grouped = assign_groups(list(summaries.values()))
            self._groups = {key: s.group for key, s in zip(summaries, grouped, strict=True)}
            self._group_signature = signature
        for key, (_, entry) in current.items():
            if summaries[key].group != self._groups[key]:
                summaries[key] = entry.summary = dataclasses.replace(summaries[key], group=self._groups[key])
        return summaries

    # ---- live runs
    def _probe(self, candidates: list[tuple[Path, _Entry]]) -> dict[str, _Live]:
        """The runs among `candidates` whose process is alive, by absolute path."""
        if not candidates:
            return {}
        holders = _flock_holders()
        to_ask: list[tuple[str, Path | None, int | None]] = []
        for run_dir, _entry in candidates:
            holder = _lock_holder(run_dir, holders)
            socket = run_dir / SOCKET_NAME
            has_socket = _is_socket(socket)
            if holder is not None or has_socket:
                to_ask.append((os.path.abspath(run_dir), socket if has_socket else None, holder))
        if not to_ask:
            return {}
        from rltui.runs import probe  # the control client: only when a run may be live

        def ask(item: tuple[str, Path | None, int | None]) -> tuple[str, _Live | None]:
            key, socket, holder = item
            if socket is not None:
                answer = probe(socket, self.probe_timeout)
                if answer.status is not None:
                    s = answer.status
                    pid = s.get("pid") if _is_int(s.get("pid")) else holder
                    state = s["state"] if isinstance(s.get("state"), str) else RunState.RUNNING.value
                    return key, _Live(pid, state, s["step"] if _is_int(s.get("step")) else None)
            if holder is not None:  # alive without a socket that answers: starting, or no socket could be made
                return key, _Live(holder, RunState.STARTING.value)
            return key, None

        with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, len(to_ask))) as pool:
            answers = list(pool.map(ask, to_ask))
        return {key: live for key, live in answers if live is not None}

    # ---- cache
    def _cache_file(self, root: str) -> Path | None:
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256(os.fsencode(root)).hexdigest()[:24]
        return self.cache_dir / "runs" / f"{digest}.json"

    def _load_cache(self, root: str) -> None:
        self._loaded_roots.add(root)
        path = self._cache_file(root)
        if path is None:
            return
        try:
            data = json.loads(path.read_bytes())
            if (data.get("version"), data.get("root"), data.get("byteorder")) != (CACHE_VERSION, root, sys.byteorder):
                return
            runs = data["runs"]
            if not isinstance(runs, dict):
                return
        except (OSError, ValueError, RecursionError, AttributeError, KeyError):
            return
        for key, value in runs.items():
            if key in self._entries:
                continue
            try:
                self._entries[key] = _Entry.from_json(value)
            except (KeyError, TypeError, ValueError, IndexError, AttributeError):
                continue  # that run is read again

    def _save_cache(self, found: list[tuple[Path, Path]]) -> None:
        if self.cache_dir is None or not self._dirty:
            return
        now = time.monotonic()
        if now - self._last_save < CACHE_SAVE_INTERVAL_S:
            return
        by_root: dict[str, list[str]] = {root: [] for root in self._dirty}
        for root, run_dir in found:
            runs = by_root.get(os.path.abspath(root))
            if runs is not None:
                key = os.path.abspath(run_dir)
                entry = self._entries[key]
                if entry.cached_json is None:
                    entry.cached_json = json.dumps(entry.to_json(), separators=(",", ":"))
                runs.append(f"{json.dumps(key)}:{entry.cached_json}")
        for root_key, runs in by_root.items():
            path = self._cache_file(root_key)
            assert path is not None
            header = json.dumps({"version": CACHE_VERSION, "root": root_key, "byteorder": sys.byteorder})
            try:  # (the header's closing brace makes way for the runs)
                _write_atomic(path, f'{header[:-1]}, "runs": {{{",".join(runs)}}}}}'.encode())
            except OSError:
                continue  # a cache that cannot be written is only slower next time
        self._dirty.clear()
        self._last_save = now

    def save_cache(self) -> None:
        """Write what changed to the cache now (refresh does so at most every few seconds)."""
        with self._lock:
            self._last_save = -math.inf
            self._save_cache(_find_runs_by_root(self.roots))


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _summary(run_dir: Path, entry: _Entry) -> RunSummary:
    """The summary of what the run's files say (a log without a final state reads as killed;
    `_with_live` then makes it live when its process answers)."""
    fold, info = entry.fold, entry.preset_info
    total_steps = fold.total_steps or info.total_steps
    step = fold.step
    if fold.state == RunState.FAILED.value:
        state = FAILED
    elif fold.state == RunState.FINISHED.value:
        state = FINISHED if step >= total_steps else STOPPED
    else:
        state = KILLED
    finite = list(filter(math.isfinite, fold.eval_means))
    recent = [r for _, r in fold.episodes if math.isfinite(r)]
    return RunSummary(
        run_dir=run_dir, name=os.path.basename(os.path.abspath(run_dir)), algo=fold.algo or info.algo,
        env_id=fold.env_id or info.env_id,
        seed=info.seed, preset=info.name or fold.name, group="", sweep=entry.sweep, trial=entry.trial,
        state=state, live_state=None, step=step, total_steps=total_steps,
        last_eval=fold.eval_means[-1] if fold.eval_means and math.isfinite(fold.eval_means[-1]) else None,
        best_eval=max(finite) if finite else None,
        eval_curve=EvalCurve(tuple(fold.eval_steps), tuple(fold.eval_means), tuple(fold.eval_stds)),
        recent_return=sum(recent) / len(recent) if recent else None,
        started=fold.started, wall_s=fold.wall_s, sessions=fold.sessions,
        pid=None, message=entry.read_problem or fold.message, config=tuple(sorted(info.config.items())),
    )


def _with_live(summary: RunSummary, live: _Live) -> RunSummary:
    return dataclasses.replace(summary, state=LIVE, live_state=live.state, pid=live.pid,
                               step=live.step if live.step is not None else summary.step)


# ------------------------------------------------------------------------------------- groups


def _grouped(key: str) -> bool:
    return key not in UNGROUPED_KEYS and not key.startswith(UNGROUPED_SECTIONS)


def format_value(value: Any) -> str:
    """A preset value as in a TOML file: 0.05, true, "adam" without quotes, [16, 16]."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


def assign_groups(summaries: Sequence[RunSummary]) -> list[RunSummary]:
    """`summaries` with `group` set: the base name (sweep or preset) plus `key=value` for every
    grouped setting that varies among the runs of that base (see the module docstring)."""
    by_base: dict[str, list[int]] = {}
    for i, s in enumerate(summaries):
        by_base.setdefault(s.sweep or s.preset or s.name, []).append(i)
    groups = [""] * len(summaries)
    for base, members in by_base.items():
        configs = [{k: v for k, v in summaries[i].config if _grouped(k)} for i in members]
        keys = sorted(set().union(*configs))
        varying = [k for k in keys if len({repr(c.get(k)) for c in configs}) > 1]
        for i, config in zip(members, configs, strict=True):
            parts = [f"{k}={format_value(config[k]) if k in config else '-'}" for k in varying]
            groups[i] = " ".join([base, *parts])
    return [dataclasses.replace(s, group=g) for s, g in zip(summaries, groups, strict=True)]


def by_group(summaries: Iterable[RunSummary]) -> dict[str, list[RunSummary]]:
    """Runs by their group, groups in order of first appearance."""
    out: dict[str, list[RunSummary]] = {}
    for s in summaries:
        out.setdefault(s.group, []).append(s)
    return out


@dataclass(frozen=True)
class SeedBand:
    """Evaluation curves of a group's runs on common steps: their mean, and min and max."""

    steps: tuple[float, ...]
    mean: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    runs: int  # curves that went into it


def seed_band(curves: Sequence[EvalCurve]) -> SeedBand:
    """The curves (non-finite points dropped) interpolated linearly onto the union of their steps,
    up to the last step every curve reaches (where they all have a value); min and max across runs."""
    usable = []
    for curve in curves:
        points = sorted((s, r) for s, r in zip(curve.steps, curve.returns, strict=True) if math.isfinite(r))
        if points:
            usable.append(points)
    if not usable:
        return SeedBand((), (), (), (), 0)
    start = max(p[0][0] for p in usable)
    end = min(p[-1][0] for p in usable)
    grid = sorted({s for p in usable for s, _ in p if start <= s <= end})
    values = [[_interpolate(p, x) for p in usable] for x in grid]
    return SeedBand(tuple(float(x) for x in grid), tuple(sum(v) / len(v) for v in values),
                    tuple(min(v) for v in values), tuple(max(v) for v in values), len(usable))


def _interpolate(points: list[tuple[int, float]], x: float) -> float:
    """Linear interpolation of sorted (step, value) points at x (within their range); a step
    evaluated twice (e.g. an evaluation asked for at the final step) counts by its last value."""
    lo, hi = 0, len(points) - 1
    while lo < hi:  # the first point at or after x
        mid = (lo + hi) // 2
        if points[mid][0] < x:
            lo = mid + 1
        else:
            hi = mid
    while lo + 1 < len(points) and points[lo + 1][0] == x:
        lo += 1
    s1, v1 = points[lo]
    if s1 == x or lo == 0:
        return v1
    s0, v0 = points[lo - 1]
    return v0 + (v1 - v0) * (x - s0) / (s1 - s0)


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1); the std is None for a single value."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


# -------------------------------------------------------------------------------- small helpers


def _flock_holders() -> dict[tuple[int, int, int], int] | None:
    """(major, minor, inode) -> pid of every flock in /proc/locks; None where it cannot be read."""
    try:
        text = PROC_LOCKS.read_text()
    except OSError:
        return None
    holders = {}
    for line in text.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fd:00:1573903 0 EOF"; waiting requests have "->" after the id
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[4].isdigit():
            parts = fields[5].split(":")
            try:
                holders[(int(parts[0], 16), int(parts[1], 16), int(parts[2]))] = int(fields[4])
            except (ValueError, IndexError):
                continue
    return holders


def _lock_holder(run_dir: Path, holders: dict[tuple[int, int, int], int] | None) -> int | None:
    if not holders:
        return None
    try:
        st = os.stat(run_dir)
    except OSError:
        return None
    return holders.get((os.major(st.st_dev), os.minor(st.st_dev), st.st_ino))


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        return False


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _str_or_empty(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _nan_to_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _typed(value: Any, kind: type) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"expected {kind.__name__}")
    return value


def _optional(value: Any, kind: type) -> Any:
    return None if value is None else _typed(value, kind)


def _float(value: Any) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("expected a number")
    return float(value)


def _optional_float(value: Any) -> float | None:
    return None if value is None else _float(value)


def _file_identity(value: Any) -> FileIdentity | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 4:
        raise TypeError("expected a file identity")
    return (_typed(value[0], int), _typed(value[1], int), _typed(value[2], int), _typed(value[3], int))


def _array(typecode: str, text: Any) -> array[Any]:
    """An array cached as the base64 of its bytes (machine byte order: the cache is per machine)."""
    values = array(typecode)
    values.frombytes(base64.b64decode(_typed(text, str), validate=True))
    return values


def _tuples(value: Any) -> Any:
    """JSON lists back into tuples, as _json_value made them."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value
