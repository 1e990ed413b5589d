"""`RUN_DIR/run.json`: who made a run, where, with what, and every time it was resumed.

Written atomically (temporary name, fsync, rename) by the owner of the run: when a run is created
(`write_run_meta`, called by the Engine for `rltui train`, the picker, a detached run and any code
that builds an Engine) and on every resume (`record_resume`, which keeps the creation data and
appends to `resumes`). Read by the info view (`i` in the dashboard) and by anything that lists or
compares runs, through `read_run_meta`, which returns None for a run without one (runs made before
run.json existed) or an unreadable one. Nothing here imports torch.

Schema 1 (every key always present; `null` where unknown or not applicable):

    {
      "schema": 1,
      "versions": {"rltui": "0.1.0", "python": "3.11.9", "torch": "2.13.0", "gymnasium": "1.0.0",
                   "numpy": "2.1.3", "mujoco": "3.2.7" | null},
      "git": {"commit": "<40 hex digits>", "dirty": true | false} | null,
      "hostname": "lab-3",
      "device": "cpu" | "cuda:0" | ...,          the torch device the run trains on
      "gpu": "NVIDIA H100 80GB HBM3" | null,     that device's name, when CUDA
      "command": ["rltui", "train", "pendulum-mpo", "--seed", "1"],   argv of the process
      "cwd": "/home/me/project",
      "start_time": "2026-11-23T10:15:00.123+01:00",   ISO 8601 with the local timezone
      "start_epoch": 1795425300.123,                  the same instant in Unix seconds
      "preset": {"name": "pendulum-mpo", "algo": "mpo", "env_id": "Pendulum-v1", "seed": 0},
      "resumed_from": null | {"run_dir": "...", "checkpoint": "...", "step": 2000},
      "sweep": null | {"name": "...", "trial": "...", "config": {...}},
      "resumes": [
        {"versions": {...}, "git": ..., "hostname": ..., "device": ..., "gpu": ..., "command": [...],
         "cwd": ..., "start_time": ..., "start_epoch": ...,
         "checkpoint": "checkpoints/step-10000", "step": 10000},
        ...
      ]
    }

The top-level session keys (versions to start_epoch) describe the process that created the run;
each entry of `resumes` holds the same keys for a process that resumed it, with the checkpoint
it resumed from (relative to the run directory) and its step. `git` is that of the process's
working directory (null outside a git repository, or when git is missing or slow); `dirty` means
tracked files differ from the commit (untracked files do not count). `resumed_from` is for a run
started from another run's checkpoint (`rltui resume` continues a run in place and records that
under `resumes`; nothing in rltui itself starts a run from another's checkpoint yet), `sweep` is
whatever the code that started the run as a sweep trial passed in. A run made before run.json
existed gets one on its first resume, its creation keys null apart from `preset` and the start
time (read from the first event of its metrics.jsonl). Readers must ignore keys they do not know:
later schemas only add keys.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rltui import __version__

if TYPE_CHECKING:
    from rltui.presets import Preset

RUN_META_FILE = "run.json"
SCHEMA = 1
GIT_TIMEOUT_S = 2.0
VERSIONED_PACKAGES = ("torch", "gymnasium", "numpy", "mujoco")
LOG_NAME = "metrics.jsonl"  # (rltui.runlog's; not imported to keep this module light)


@dataclass(frozen=True)
class Session:
    """What is true of one process that starts (or resumes) a run; the session keys of run.json."""

    versions: dict[str, str | None] | None
    git: dict[str, Any] | None
    hostname: str | None
    device: str | None
    gpu: str | None
    command: list[str] | None
    cwd: str | None
    start_time: str | None
    start_epoch: float | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


UNKNOWN_SESSION = Session(
    versions=None, git=None, hostname=None, device=None, gpu=None, command=None, cwd=None, start_time=None,
    start_epoch=None,
)


def current_session(*, command: Sequence[str], device: str, gpu: str | None = None) -> Session:
    """This process, now: package versions, git state of the working directory, host, time."""
    epoch = time.time()
    cwd = os.getcwd()
    return Session(
        versions=package_versions(),
        git=git_state(cwd),
        hostname=socket.gethostname(),
        device=device,
        gpu=gpu,
        command=[str(part) for part in command],
        cwd=cwd,
        start_time=iso_time(epoch),
        start_epoch=epoch,
    )


def iso_time(epoch: float) -> str:
    """ISO 8601 in the local timezone, to the millisecond: 2026-11-23T10:15:00.123+01:00."""
    return datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="milliseconds")


def package_versions() -> dict[str, str | None]:
    """rltui, Python and the packages a run depends on (None for one that is not installed)."""
    versions: dict[str, str | None] = {"rltui": __version__, "python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_state(cwd: str | Path, timeout_s: float = GIT_TIMEOUT_S) -> dict[str, Any] | None:
    """{"commit", "dirty"} of the git repository holding `cwd`; None outside one, without git, or
    when git does not answer within `timeout_s` (each call). Never raises."""
    commit = _git(["rev-parse", "--verify", "HEAD"], cwd, timeout_s)
    if commit is None or not commit.strip():
        return None
    status = _git(["status", "--porcelain", "--untracked-files=no"], cwd, timeout_s)
    return {"commit": commit.strip(), "dirty": None if status is None else bool(status.strip())}


def _git(args: list[str], cwd: str | Path, timeout_s: float) -> str | None:
    """git's stdout, or None when it fails, is missing or takes too long."""
    # No prompts, no index lock taken by `status`, messages in English.
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}
    try:
        done = subprocess.run(["git", *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout_s, check=False)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.decode("utf-8", "replace")


def preset_summary(preset: Preset) -> dict[str, Any]:
    return {"name": preset.name, "algo": preset.algo, "env_id": preset.env.id, "seed": preset.train.seed}


def write_run_meta(
    run_dir: Path,
    *,
    command: Sequence[str],
    device: str,
    gpu: str | None = None,
    preset: Preset | None = None,
    sweep: Mapping[str, Any] | None = None,
    resumed_from: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write run.json for a run just created (replacing any), return what was written.

    `sweep`: an object describing the sweep trial this run is (any JSON); `resumed_from`: where a
    run started from another run's checkpoint came from. Raises TypeError or ValueError for a
    `sweep` or `resumed_from` that is not a JSON object, OSError when the file cannot be written.
    """
    meta = _new_meta(current_session(command=command, device=device, gpu=gpu), preset)
    meta["sweep"] = _json_object(sweep, "sweep")
    meta["resumed_from"] = _json_object(resumed_from, "resumed_from")
    _write_json(Path(run_dir) / RUN_META_FILE, meta)
    return meta


def record_resume(
    run_dir: Path,
    *,
    command: Sequence[str],
    device: str,
    checkpoint: Path,
    step: int,
    gpu: str | None = None,
    preset: Preset | None = None,
) -> list[str]:
    """Append this resume (from `checkpoint`, at `step`) to run.json's `resumes`; returns notes
    for the user (e.g. an unreadable run.json set aside). A run without run.json gets one, its
    creation data unknown but for the preset and the start time of its log."""
    run_dir = Path(run_dir)
    path = run_dir / RUN_META_FILE
    notes: list[str] = []
    try:
        meta = _load(path)
    except ValueError as exc:
        aside = path.with_name(f"{RUN_META_FILE}.unreadable-{int(time.time())}")
        os.replace(path, aside)
        notes.append(f"{path} was unreadable ({exc}): kept as {aside.name}, a new one records what is known")
        meta = None
    if meta is None:
        meta = _new_meta(_session_from_log(run_dir), preset)
    resumes = meta.get("resumes")
    if not isinstance(resumes, list):
        resumes = meta["resumes"] = []
    try:
        relative = Path(checkpoint).resolve().relative_to(run_dir.resolve()).as_posix()
    except ValueError:
        relative = str(checkpoint)
    entry = current_session(command=command, device=device, gpu=gpu).to_json()
    resumes.append({**entry, "checkpoint": relative, "step": int(step)})
    _write_json(path, meta)
    return notes


def read_run_meta(run_dir: Path) -> dict[str, Any] | None:
    """run.json as a dict; None when there is none, it cannot be read, or it is no run.json
    (not a JSON object with an integer `schema`). Never raises."""
    try:
        return _load(Path(run_dir) / RUN_META_FILE)
    except (ValueError, OSError):
        return None


def _new_meta(session: Session, preset: Preset | None) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        **session.to_json(),
        "preset": preset_summary(preset) if preset is not None else None,
        "resumed_from": None,
        "sweep": None,
        "resumes": [],
    }


def _session_from_log(run_dir: Path) -> Session:
    """What a run without run.json tells of its start: the time of its log's first event."""
    try:
        with open(run_dir / LOG_NAME, "rb") as handle:
            first = json.loads(handle.readline(1 << 20))
        epoch = float(first["time"])
        start = iso_time(epoch)
    except (OSError, ValueError, TypeError, KeyError, OverflowError, RecursionError):
        return UNKNOWN_SESSION
    return Session(**{**asdict(UNKNOWN_SESSION), "start_time": start, "start_epoch": epoch})


def _load(path: Path) -> dict[str, Any] | None:
    """None when `path` does not exist; ValueError saying why when it is no usable run.json."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ValueError(f"cannot be read: {(exc.strerror or str(exc)).lower()}") from None
    try:
        meta = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValueError(f"not JSON: {type(exc).__name__}") from None
    schema = meta.get("schema") if isinstance(meta, dict) else None
    if isinstance(schema, bool) or not isinstance(schema, int) or schema < 1:
        raise ValueError("not a run.json (no integer 'schema')")
    return meta


def _json_object(value: Mapping[str, Any] | None, what: str) -> dict[str, Any] | None:
    """`value` as a plain JSON object (a copy), checked to be one."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} must be a mapping (a JSON object), got {type(value).__name__}")
    try:
        copied = json.loads(json.dumps(dict(value), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be JSON (strings, finite numbers, lists, objects): {exc}") from None
    assert isinstance(copied, dict)
    return copied


def _write_json(path: Path, value: Mapping[str, Any]) -> None:
    """Atomically: a temporary file, fsync'ed, renamed over `path`."""
    text = json.dumps(value, indent=2, allow_nan=False) + "\n"
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
