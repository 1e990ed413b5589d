"""One sweep trial inside Ray Tune: an ordinary rltui run in its own run directory.

`SweepTrial` is the Tune trainable (Tune's class API). It builds the trial's preset from the sweep's
plan (the base preset with the trial's setting and seed as overrides) and runs the rltui Engine on
its own thread into `<sweep dir>/<trial name>/`. Each `step()` returns the next evaluation as Tune's
result (`env_steps`, `eval_return_mean`, ...), asking Tune for a checkpoint when rltui wrote a new
one since the last; the Tune checkpoint only names rltui's (`rltui-checkpoint.json`). So:

- ASHA compares trials on their evaluation returns at equal env steps (`env_steps`).
- A trial Tune restarts (its process died, or the engine failed: up to `max_failures` times)
  resumes its run directory from rltui's latest checkpoint, `Engine(..., resume=True)`: the step
  counter, networks, optimisers and RNGs carry on. A trial that died before its first checkpoint
  starts over (its log of the lost attempt is dropped).
- A trial Tune stops before its end (ASHA) stops its engine the usual way in `cleanup()`, which
  Tune runs before the trial's process exits: a final checkpoint, the run log ends with the state
  "finished", "stopped at step N", and a warning saying who stopped it; the lock and the control
  socket are gone.

Why not Tune's function API (`tune.report`): Tune stops a function trainable by ending its
process a fraction of a second after telling it, too soon for a final checkpoint; a class
trainable's `cleanup()` runs to its end first.
"""

from __future__ import annotations

import collections
import json
import math
import os
import queue
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
from ray import tune

from rltui.commands import Stop
from rltui.events import (
    CheckpointSaved,
    EpisodeFinished,
    ErrorRaised,
    EvalResult,
    Event,
    RunState,
    StateChanged,
    WarningRaised,
)
from rltui.sweep.plan import (
    INTERRUPTED_NOTE,
    STOPPED_EARLY_NOTE,
    read_plan,
    sweep_record,
)

if TYPE_CHECKING:
    from rltui.engine import Engine

POINTER_FILE = "rltui-checkpoint.json"
EXIT_WAIT_S = 120.0  # how long a stopped trial waits for its engine's final checkpoint
RECENT_EPISODES = 10  # training episodes averaged into `train_return_mean`


class TrialFailed(Exception):
    """The trial's run failed; Tune restarts it from its last checkpoint (up to max_failures)."""


def tune_metrics(event: EvalResult, train_returns: collections.deque[float]) -> dict[str, Any]:
    """Tune's result for one evaluation."""
    return {
        "env_steps": event.step,
        "eval_return_mean": event.return_mean,
        "eval_return_std": event.return_std,
        "eval_episodes": event.episodes,
        "train_return_mean": sum(train_returns) / len(train_returns) if train_returns else math.nan,
    }


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


class SweepTrial(tune.Trainable):
    """The Tune trainable of a sweep: `config["trial"]` names the trial in `<sweep_dir>/sweep-plan.json`."""

    def setup(self, config: dict[str, Any], sweep_dir: str) -> None:  # type: ignore[override]
        self.sweep_dir = Path(sweep_dir)
        self._begin(config)

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """The next trial in this process (Tune reuses it: no new process, no imports again)."""
        self.cleanup()
        self._begin(new_config)
        return True

    def _begin(self, config: dict[str, Any]) -> None:
        self.plan = read_plan(self.sweep_dir)
        self.trial_plan = self.plan.trial(config["trial"])
        self.preset = self.plan.trial_preset(self.trial_plan)
        self.run_dir = self.sweep_dir / self.trial_plan.name
        self.pointer_step: int | None = None
        self.engine: Engine | None = None
        self.thread: threading.Thread | None = None
        self.evaluations: queue.Queue[EvalResult | None] = queue.Queue()  # None: the run ended
        self.latest_checkpoint: tuple[int, str] | None = None
        self.named_checkpoint: tuple[int, str] | None = None  # the one Tune's last checkpoint names
        self.train_returns: collections.deque[float] = collections.deque(maxlen=RECENT_EPISODES)
        self.error: str | None = None
        self.last_result: dict[str, Any] = {}
        if not ray.get_gpu_ids():  # a trial uses the GPUs Ray gave it and no others ("auto" -> CPU)
            os.environ["CUDA_VISIBLE_DEVICES"] = ""

    def load_checkpoint(self, checkpoint: dict[str, Any] | str | None) -> None:
        """Tune restarts this trial from its checkpoint (before the first step)."""
        pointer = read_pointer(Path(checkpoint)) if isinstance(checkpoint, str) else None
        self.pointer_step = None if pointer is None else int(pointer["step"])

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        checkpoint = self.latest_checkpoint
        if checkpoint is not None:
            step, path = checkpoint
            pointer = {"run_dir": str(self.run_dir), "checkpoint": path, "step": step}
            (Path(checkpoint_dir) / POINTER_FILE).write_text(json.dumps(pointer) + "\n", encoding="utf-8")
        self.named_checkpoint = checkpoint

    def step(self) -> dict[str, Any]:
        """The next evaluation (the engine trains on meanwhile)."""
        if self.engine is None and not self._start():
            final = last_eval(self.run_dir)  # it had finished (its driver died before Tune heard)
            return {**(tune_metrics(final, self.train_returns) if final else {}), "done": True}
        evaluation = self.evaluations.get()
        if evaluation is None:  # the run ended after its last evaluation (or without one: it failed)
            assert self.thread is not None and self.engine is not None
            self.thread.join()
            if self.engine.state is RunState.FAILED:
                raise TrialFailed(f"{self.run_dir}: {self.error or 'the run failed'}")
            return {**self.last_result, "done": True}
        self.last_result = tune_metrics(evaluation, self.train_returns)
        new_checkpoint = self.latest_checkpoint is not None and self.latest_checkpoint != self.named_checkpoint
        done = evaluation.step >= self.preset.train.total_steps
        return {**self.last_result, "should_checkpoint": new_checkpoint, "done": done}

    def cleanup(self) -> None:
        """Tune is done with this trial: a run still going (stopped before its end) stops with a
        final checkpoint; a finished one is waited for (its final checkpoint)."""
        if self.engine is None or self.thread is None:
            return
        stopped = self.thread.is_alive()
        if stopped:
            self.engine.submit(Stop(final_checkpoint=True))
        self.thread.join(EXIT_WAIT_S)
        step = self.engine.step
        if stopped and self.engine.state is RunState.FINISHED and step < self.preset.train.total_steps:
            if self.plan.options.scheduler == "asha":
                note = (f"{STOPPED_EARLY_NOTE} at step {step} by the sweep's ASHA scheduler (its evaluation "
                        "return was below its rung's cutoff)")
            else:
                note = (f"{INTERRUPTED_NOTE} at step {step}: Ray Tune stopped the trial (the sweep was "
                        "interrupted); `rltui sweep --resume` goes on")
            append_note(self.run_dir, step, note)

    def _start(self) -> bool:
        """Build the engine (a fresh run or a resume) and start it; False when the run had finished."""
        how = prepare_run_dir(self.run_dir, self.preset.train.total_steps, self.pointer_step)
        if how == "finished":
            return False
        from rltui.engine import Engine

        # run.json's `sweep` names the sweep, the trial, its setting and config (kept from the
        # trial's first session on: a restarted trial resumes its run)
        self.engine = Engine(self.preset, self.run_dir, resume=how == "resume", command=["rltui", "sweep"],
                             sweep=sweep_record(self.plan, self.trial_plan))
        self.engine.subscribe(self._on_event)
        self.thread = self.engine.start()
        return True

    def _on_event(self, event: Event) -> None:
        """On the engine's thread: keep what `step()` and `save_checkpoint()` need."""
        if isinstance(event, EvalResult) and event.episodes > 0:
            self.evaluations.put(event)
        elif isinstance(event, EpisodeFinished):
            self.train_returns.append(event.episode_return)
        elif isinstance(event, CheckpointSaved):
            self.latest_checkpoint = (event.step, event.path)
        elif isinstance(event, ErrorRaised):
            self.error = event.message
        elif isinstance(event, StateChanged) and event.state.is_final:
            self.evaluations.put(None)
