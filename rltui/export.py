"""`rltui export`: runs' logs as one tidy CSV, for pandas, R or a spreadsheet.

Columns `run, step, time, event, metric, value`, one row per number of each event of each run's
metrics.jsonl, in the log's order (a resumed run's log holds every session, as written):

    run_started  total_steps
    episode      episode_return, episode_length
    update       updates, then each of its metrics by name (loss/q, dual/temperature, ...)
    eval         return_mean, return_std, length_mean, episodes, then returns[0], returns[1], ...

`run` is the run directory as given or found (e.g. `saves/pendulum-mpo-20261123-101500`), `time`
unix seconds, and a value that is not finite (written as null in the log) an empty cell. Events
without numbers (states, checkpoints, warnings, errors) have no rows. E.g. in pandas:

    df = pd.read_csv("runs.csv")
    evals = df[(df.event == "eval") & (df.metric == "return_mean")]
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

from rltui.events import EpisodeFinished, EvalResult, Event, RunStarted, UpdateMetrics
from rltui.runlog import LOG_NAME, display_path, read_events
from rltui.summaries import find_runs

COLUMNS = ("run", "step", "time", "event", "metric", "value")


class RunsNotFound(Exception):
    """A path given names no run; str() is the one-line message."""


def run_dirs_of(paths: Iterable[Path]) -> list[Path]:
    """The run directories named by `paths` (a run directory, or a directory searched for runs),
    each once, in the order given (runs found under one path sorted)."""
    found: list[Path] = []
    seen: set[str] = set()
    for path in paths:
        if not path.exists():
            raise RunsNotFound(f"{display_path(path)}: no such file or directory")
        if not path.is_dir():
            raise RunsNotFound(f"{display_path(path)}: not a directory (expected a run directory or a directory "
                               "of runs)")
        runs = find_runs([path])
        if not runs:
            raise RunsNotFound(f"{display_path(path)}: no runs found (expected a run directory, holding "
                               f"{LOG_NAME}, or a directory of them)")
        for run in runs:
            key = os.path.abspath(run)
            if key not in seen:
                seen.add(key)
                found.append(run)
    return found


def event_values(event: Event) -> Iterator[tuple[str, float]]:
    """(metric, value) of every number an event carries, in the order of the module docstring."""
    if isinstance(event, RunStarted):
        yield "total_steps", event.total_steps
    elif isinstance(event, EpisodeFinished):
        yield "episode_return", event.episode_return
        yield "episode_length", event.episode_length
    elif isinstance(event, UpdateMetrics):
        yield "updates", event.updates
        yield from event.metrics.items()
    elif isinstance(event, EvalResult):
        yield "return_mean", event.return_mean
        yield "return_std", event.return_std
        yield "length_mean", event.length_mean
        yield "episodes", event.episodes
        for i, value in enumerate(event.returns):
            yield f"returns[{i}]", value


def _cell(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return repr(value) if math.isfinite(value) else ""


def write_csv(run_dirs: Iterable[Path], out: TextIO) -> int:
    """The CSV of every run's log on `out`; returns the number of data rows."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    rows = 0
    for run_dir in run_dirs:
        run = str(run_dir)
        events, _ = read_events(run_dir / LOG_NAME)
        for event in events:
            time = _cell(event.time)
            for metric, value in event_values(event):
                writer.writerow((run, event.step, time, event.kind, metric, _cell(value)))
                rows += 1
    return rows


def export_to_file(run_dirs: list[Path], path: Path) -> int:
    """`write_csv` into `path`, written under a temporary name and renamed (never half a file)."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temp, "w", encoding="utf-8", newline="") as handle:
            rows = write_csv(run_dirs, handle)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return rows
