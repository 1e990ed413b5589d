"""One sweep trial inside Ray Tune: an ordinary rltui run in its own run directory.

`run_trial` is the Tune trainable. It builds the trial's preset from the sweep's plan (the base
preset with the trial's setting and seed as overrides), runs the rltui Engine synchronously into
`<sweep dir>/<trial name>/`, and reports every evaluation to Tune (`tune.report`) with a small Tune
checkpoint that only names rltui's latest checkpoint (`rltui-checkpoint.json`). So:

- ASHA compares trials on their evaluation returns at equal env steps (`env_steps`).
- A trial Tune restarts (its process died, or the engine failed: up to `max_failures` times)
  resumes its run directory from rltui's latest checkpoint, `Engine(..., resume=True)`: the step
  counter, networks, optimisers and RNGs carry on. A trial that died before its first checkpoint
  starts over (its log of the lost attempt is dropped).
- A trial Tune stops (ASHA, or the sweep interrupted) stops its engine the usual way: a final
  checkpoint, the run log ends with the state "finished" and "stopped at step N", followed by a
  warning saying who stopped it, and the lock and control socket are gone. Tune's stop reaches the
  trial as SystemExit inside `tune.report`, or as its worker process exiting (an atexit handler
  then stops the engine and waits for its final checkpoint).
"""

from __future__ import annotations

import atexit
import collections
import json
import math
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rltui.commands import Stop
from rltui.events import CheckpointSaved, EpisodeFinished, ErrorRaised, EvalResult, Event, RunState, WarningRaised
from rltui.sweep.plan import TRIAL_RECORD_FILE, read_plan, sweep_record, write_text_atomic

POINTER_FILE = "rltui-checkpoint.json"
EXIT_WAIT_S = 120.0  # how long an exiting trial process waits for its engine's final checkpoint
RECENT_EPISODES = 10  # training episodes averaged into `train_return_mean`
# How the warning a trial adds to its run log when Tune stopped it before total_steps begins.
STOPPED_EARLY_NOTE, INTERRUPTED_NOTE = "stopped early", "interrupted"

Report = Callable[[dict[str, Any], str | None], None]  # (metrics, pointer directory or None)


class TrialFailed(Exception):
    """The trial's run failed; Tune restarts it from its last checkpoint (up to max_failures)."""


def tune_metrics(event: EvalResult, train_returns: collections.deque[float]) -> dict[str, Any]:
    """What a trial reports to Tune for one evaluation."""
    return {
        "env_steps": event.step,
        "eval_return_mean": event.return_mean,
        "eval_return_std": event.return_std,
        "eval_episodes": event.episodes,
        "train_return_mean": sum(train_returns) / len(train_returns) if train_returns else math.nan,
    }


class TuneReporter:
    """Engine subscriber: every evaluation goes to `report` with a pointer to rltui's latest
    checkpoint. When Tune says stop (SystemExit out of `tune.report`) it asks the engine to stop
    with a final checkpoint, and reports nothing more."""

    def __init__(self, report: Report, stop: Callable[[], object], total_steps: int) -> None:
        self.report = report
        self.stop = stop
        self.total_steps = total_steps
        self.stopped_by_tune = False
        self.checkpoint: tuple[int, str] | None = None
        self.error: str | None = None
        self.train_returns: collections.deque[float] = collections.deque(maxlen=RECENT_EPISODES)

    def __call__(self, event: Event) -> None:
        if isinstance(event, EpisodeFinished):
            self.train_returns.append(event.episode_return)
        elif isinstance(event, CheckpointSaved):
            self.checkpoint = (event.step, event.path)
        elif isinstance(event, ErrorRaised):
            self.error = event.message
        elif isinstance(event, EvalResult) and not self.stopped_by_tune:
            self._report(event)

    def _report(self, event: EvalResult) -> None:
        metrics = tune_metrics(event, self.train_returns)
        with tempfile.TemporaryDirectory(prefix="rltui-pointer-") as pointer_dir:
            if self.checkpoint is not None:
                step, path = self.checkpoint
                pointer = {"run_dir": str(Path(path).parent.parent), "checkpoint": path, "step": step}
                (Path(pointer_dir) / POINTER_FILE).write_text(json.dumps(pointer) + "\n", encoding="utf-8")
            try:
                self.report(metrics, pointer_dir if self.checkpoint is not None else None)
            except SystemExit:  # Tune stops this trial
                self.stopped_by_tune = True
                if event.step < self.total_steps:  # (at the end the engine is finishing anyway)
                    self.stop()


def read_pointer(directory: Path) -> dict[str, Any] | None:
    """The pointer a Tune checkpoint holds, or None when it holds none."""
    try:
        pointer = json.loads((Path(directory) / POINTER_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    if not isinstance(pointer, dict) or not isinstance(pointer.get("step"), int):
        raise TrialFailed(f"{directory}: {POINTER_FILE} is not a checkpoint pointer")
    return pointer


def prepare_run_dir(run_dir: Path, total_steps: int, pointer_step: int | None) -> str:
    """"resume" (a checkpoint to go on from), "finished" (its checkpoint is at total_steps) or
    "fresh" (none: a log left by an attempt that died before its first checkpoint is dropped)."""
    from rltui import checkpoint as ckpt
    from rltui.rundir import RunLock
    from rltui.runlog import LOG_NAME

    run_dir.mkdir(parents=True, exist_ok=True)
    found = ckpt.list_checkpoints(run_dir)
    latest = found[-1][0] if found else None
    if pointer_step is not None and (latest is None or latest < pointer_step):
        raise TrialFailed(f"{run_dir}: Tune's checkpoint names rltui's checkpoint at step {pointer_step}, "
                          f"which is gone (latest: {latest})")
    if latest is not None:
        return "finished" if latest >= total_steps else "resume"
    lock = RunLock(run_dir)  # (refuses if a live process still owns the run)
    try:
        (run_dir / LOG_NAME).unlink(missing_ok=True)
        shutil.rmtree(ckpt.checkpoints_dir(run_dir), ignore_errors=True)
    finally:
        lock.release()
    return "fresh"


def last_eval(run_dir: Path) -> EvalResult | None:
    from rltui.runlog import LOG_NAME, read_events

    events, _ = read_events(run_dir / LOG_NAME)
    evals = [e for e in events if isinstance(e, EvalResult)]
    return evals[-1] if evals else None


def append_note(run_dir: Path, step: int, message: str) -> None:
    """A warning line at the end of a run log the engine has closed."""
    from rltui.runlog import LOG_NAME, RunLogWriter

    writer = RunLogWriter(run_dir / LOG_NAME)
    try:
        writer(WarningRaised(step=step, message=message))
    finally:
        writer.close()


def _hide_unassigned_gpus() -> None:
    """A trial uses the GPUs Ray gave it and no others (`device = "auto"` then means CPU)."""
    import ray

    if not ray.get_gpu_ids():
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


def _tune_report(metrics: dict[str, Any], pointer_dir: str | None) -> None:
    from ray import tune

    tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(pointer_dir) if pointer_dir else None)


def _tune_pointer_step() -> int | None:
    from ray import tune

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        pointer = read_pointer(Path(directory))
    return None if pointer is None else int(pointer["step"])


def run_trial(config: dict[str, Any], sweep_dir: str) -> None:
    """The Tune trainable: `config["trial"]` names the trial in `<sweep_dir>/sweep-plan.json`."""
    plan = read_plan(Path(sweep_dir))
    trial = plan.trial(config["trial"])
    preset = plan.trial_preset(trial)
    run_dir = Path(sweep_dir) / trial.name
    _hide_unassigned_gpus()
    how = prepare_run_dir(run_dir, preset.train.total_steps, _tune_pointer_step())
    write_text_atomic(run_dir / TRIAL_RECORD_FILE, json.dumps(sweep_record(plan, trial), indent=1) + "\n")
    if how == "finished":  # e.g. the sweep's driver died between the trial's end and Tune hearing of it
        final = last_eval(run_dir)
        if final is not None:
            _tune_report(tune_metrics(final, collections.deque()), None)
        return
    from rltui.engine import Engine

    engine = Engine(preset, run_dir, resume=how == "resume")
    reporter = TuneReporter(_tune_report, lambda: engine.submit(Stop(final_checkpoint=True)),
                            preset.train.total_steps)
    engine.subscribe(reporter)
    ended = threading.Event()
    exiting = threading.Event()

    def stop_on_exit() -> None:  # the worker process exits (Tune stopped the trial between two reports)
        if not ended.is_set():
            exiting.set()
            engine.submit(Stop(final_checkpoint=True))
            ended.wait(EXIT_WAIT_S)

    atexit.register(stop_on_exit)
    try:
        engine.run()
        if engine.state is RunState.FAILED:
            raise TrialFailed(f"{run_dir}: {reporter.error or 'the run failed'}")
        if engine.step < preset.train.total_steps and (reporter.stopped_by_tune or exiting.is_set()):
            if reporter.stopped_by_tune and plan.options.scheduler == "asha":
                note = (f"{STOPPED_EARLY_NOTE} at step {engine.step} by the sweep's ASHA scheduler (its evaluation "
                        "return was below its rung's cutoff)")
            else:
                note = (f"{INTERRUPTED_NOTE} at step {engine.step}: Ray Tune stopped the trial (the sweep was "
                        "interrupted, or its process is exiting); `rltui sweep --resume` goes on")
            append_note(run_dir, engine.step, note)
    finally:
        ended.set()  # (last: an exiting process waits for the note too)
        atexit.unregister(stop_on_exit)
