"""The engine shell: one run in a worker thread, typed commands in, typed events out.

    engine = Engine(preset, create_run_dir(preset, Path("saves")))
    engine.subscribe(print)          # called on the engine thread with every rltui.events.Event
    thread = engine.start()          # or engine.run() to block
    future = engine.submit(Checkpoint())   # any thread; future.result() is a Reply

The shell owns what every algorithm shares: the run directory's lock, the command state machine,
evaluations, checkpoints, the metrics window and the events. The algorithm's own loop
(`rltui.engine.loops`) collects data and learns, and calls back into the shell between two chunks
of work (an env step, an update), where commands take effect. So controls are answered within a
second, except during one long TRPO update.

The command state machine, run between chunks (`_service`), in this order of precedence:
stop (unwinds the loop) > a checkpoint asked for > evaluation mode (one step of its episodes) >
an evaluation due or asked for (one step of it) > pause (wait for a command) > train. Pausing only
stops training: evaluations and checkpoints asked for while paused still run. Each command's
future resolves once it took effect (see rltui.commands).

Best model: after each scheduled evaluation (the interval ones and the final one, not those asked
for nor evaluation mode) whose mean return beats every earlier one of the run, the agent is saved
as checkpoints/best (rltui.checkpoint) and a BestCheckpointSaved follows its EvalResult; a resumed
run reads the return to beat from that checkpoint. The run's run.json (rltui.runmeta) is written
when the engine is built: created for a new run, a `resumes` entry added for a resume.

A run directory has one owner: the engine takes its lock (rltui.rundir) before writing anything
and releases it when `run()` ends (or on `close()` for an engine that never runs). Checkpoints hold
everything needed to continue exactly: a run stopped at any step and resumed gives the same weights
as one that never stopped. The run log is part of the run: when it cannot be written the run fails
(FAILED, one ErrorRaised) rather than go on unrecorded. Every other exception inside the loop
becomes an ErrorRaised event and the FAILED state; a subscriber that raises is reported once
(WarningRaised) and never stops the loop.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import random
import shlex
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rltui import checkpoint as ckpt
from rltui import runmeta
from rltui.commands import Checkpoint, Command, Evaluate, Pause, Reply, Resume, SetEvalMode, Stop
from rltui.control import ControlError, ControlServer
from rltui.engine.loops import LOOPS, Counters, Loop, LoopContext
from rltui.env_state import EnvStateError
from rltui.envs import EnvSpec, ObsNormalizer, Policy, TrainingEnvs, eval_seeds, make_env
from rltui.evaluation import EvalSummary, Evaluation
from rltui.events import (
    BestCheckpointSaved,
    CheckpointSaved,
    EpisodeFinished,
    ErrorRaised,
    EvalResult,
    Event,
    RunStarted,
    RunState,
    StateChanged,
    UpdateMetrics,
    WarningRaised,
)
from rltui.presets import (
    Preset,
    PresetError,
    agent_settings_in_effect,
    preset_device,
    preset_from_toml_text,
    preset_to_toml,
)
from rltui.replay import ReplayError
from rltui.resume import ResumeError, check_resume
from rltui.rollout import RolloutError
from rltui.rundir import RunLock, write_preset
from rltui.runlog import LOG_NAME, RunLogWriter, display_path
from rltui.system import SystemSampler
from rltui.video import DEFAULT_FPS, FrameTap, LiveFrames, render_offscreen

log = logging.getLogger(__name__)

METRICS_INTERVAL_S = 0.5
PAUSED_POLL_S = 0.2  # how long a paused engine waits for a command before looking again
FRAME_LAG_S = 0.2  # a watched episode late by more than this (a slow render) does not rush to catch up
STREAM_FIRST_INDEX = 500_000  # evaluation-mode episodes use seeds apart from interval evaluations
RESUME_SEED_OFFSET = 2**32  # envs whose state was not saved are re-seeded on resume: seed + offset + env steps
RUN_ENDED = "the run has ended"


class _Stop(Exception):
    """Unwinds the loop when a Stop command takes effect."""


class RunLogError(Exception):
    """The run log cannot be written; the run fails rather than go on unrecorded."""


def build_agent(preset: Preset, spec: EnvSpec, device: torch.device) -> Any:
    """The preset's agent for `spec`, with its [network] and [mpo]/[trpo] settings."""
    return LOOPS[preset.algo].agent_class()(
        obs_dim=spec.obs_dim,
        act_dim=spec.act_dim,
        action_low=spec.action_low,
        action_high=spec.action_high,
        device=device,
        policy_layer_sizes=tuple(preset.network.policy_layer_sizes),
        critic_layer_sizes=tuple(preset.network.critic_layer_sizes),
        **preset.agent,
    )


def make_policy(agent: Any, algo: str, spec: EnvSpec, deterministic: bool) -> Policy:
    """Normalised observation (O,) -> action for the environment (D,), clipped to the bounds."""
    return LOOPS[algo].make_policy(agent, spec, deterministic)


class _MetricsWindow:
    """Averages update metrics between UpdateMetrics events; tracks step and update rates.

    `restart` moves only the rates' baseline (time spent paused, evaluating or checkpointing is
    not training); the emission clock keeps running, so frequent evaluations cannot starve the
    UpdateMetrics events.
    """

    def __init__(self, step: int, system: SystemSampler | None = None) -> None:
        self.system = system  # CPU, memory and GPU use, added at most once a second
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.updates = 0
        self.episode_returns: list[float] = []
        self.emitted_at = time.monotonic()
        self.restart(step)

    def restart(self, step: int) -> None:
        self.started = time.monotonic()
        self.start_step = step
        self.start_updates = self.updates

    def add(self, metrics: dict[str, float]) -> None:
        self.updates += 1
        for key, value in metrics.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value)
            self.counts[key] = self.counts.get(key, 0) + 1

    def due(self) -> bool:
        return time.monotonic() - self.emitted_at >= METRICS_INTERVAL_S

    def take(self, step: int, skipped_total: int) -> UpdateMetrics:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        metrics = {k: self.sums[k] / self.counts[k] for k in self.sums}
        if self.episode_returns:
            metrics["env/episode_return"] = float(np.mean(self.episode_returns))
        metrics["perf/steps_per_s"] = (step - self.start_step) / elapsed
        metrics["perf/updates_per_s"] = (self.updates - self.start_updates) / elapsed
        metrics["train/skipped_updates"] = float(skipped_total)
        metrics["env/steps"] = float(step)
        if self.system is not None and self.system.due():
            metrics.update(self.system.sample())
        event = UpdateMetrics(step=step, updates=self.updates, metrics=metrics)
        self.sums, self.counts, self.updates, self.episode_returns = {}, {}, 0, []
        self.emitted_at = time.monotonic()
        self.restart(step)
        return event


@dataclass
class _PendingEvaluation:
    """An evaluation due (interval, final) or asked for (a future to resolve), once started."""

    episodes: int
    future: Future[Reply] | None = None
    evaluation: Evaluation | None = None


class Engine:
    def __init__(
        self,
        preset: Preset,
        run_dir: Path,
        *,
        resume: bool = False,
        command: Sequence[str] | None = None,
        sweep: Mapping[str, Any] | None = None,
    ) -> None:
        """Take the run directory's lock, build envs, agent and loop; with `resume`, restore the
        run's latest checkpoint. Nothing in the run directory changes before all of that succeeded;
        then preset.toml and run.json are written (`command`: the command line recorded there,
        default sys.argv; `sweep`: the sweep trial this new run is, any JSON object).

        Raises RunLockedError (another process owns the run), EnvError (environment), PresetError
        (device), CheckpointError or ResumeError (resume) or ValueError (agent settings).
        """
        self.preset = preset
        self.run_dir = Path(run_dir)
        self.algo = preset.algo
        self.total_steps = preset.train.total_steps
        self.state = RunState.STARTING
        self.device = torch.device(preset_device(preset))
        self._lock = RunLock(self.run_dir)  # before anything in the run directory is read or written
        try:
            self._build(preset, resume)
            self._write_run_meta(list(sys.argv) if command is None else list(command), sweep)
        except BaseException:
            self.close()
            raise

    def _build(self, preset: Preset, resume: bool) -> None:
        self._subscribers: list[Callable[[Event], None]] = []
        self._failed_subscribers: set[int] = set()
        self._commands: queue.Queue[tuple[Command, Future[Reply]]] = queue.Queue()
        self._submit_lock = threading.Lock()
        self._ended = False
        self._started = False
        # The state machine's inputs (see the module docstring).
        self._paused = False
        self._eval_mode = False
        self._stop: Stop | None = None
        self._stop_futures: list[Future[Reply]] = []
        self._checkpoint_futures: list[Future[Reply]] = []
        self._checkpoint_due = False
        self._evaluations: list[_PendingEvaluation] = []
        self._stream: Evaluation | None = None
        self._settled: list[tuple[Future[Reply], Reply]] = []  # resolved once the state is set
        self._notes: list[str] = []  # warnings found before run() (e.g. while resuming)

        torch.set_num_threads(preset.train.threads)
        seed = preset.train.seed
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        self._sampler = np.random.default_rng(seed)

        self._envs = TrainingEnvs(preset.env, seed)
        self.spec = self._envs.spec
        self.agent = build_agent(preset, self.spec, self.device)
        self.obs_normalizer = ObsNormalizer(self.spec.obs_dim, preset.env.normalize_obs, preset.env.clip_obs)
        self.counters = Counters()
        self.loop: Loop = LOOPS[preset.algo](LoopContext(
            preset=preset, envs=self._envs, spec=self.spec, agent=self.agent, obs_normalizer=self.obs_normalizer,
            sampler=self._sampler, counters=self.counters, service=self._service,
            env_stepped=self._env_stepped, record_update=self._record_update,
        ))
        self._log: RunLogWriter | None = None
        self._control: ControlServer | None = None
        self._eval_env: gym.Env | None = None
        self._stream_env: gym.Env | None = None
        self._frames_env: gym.Env | None = None  # evaluation mode's env while its frames are watched
        self.frames = LiveFrames()
        self._next_frame_at = 0.0
        self._frame_period = 1.0 / DEFAULT_FPS
        self._stream_paced = False
        self._last_eval_step = -1
        self._last_saved: tuple[int, int] | None = None
        self._resumed_from: Path | None = None  # the checkpoint a resume restored
        self._best_return: float | None = None  # the mean return of checkpoints/best
        self._reset_seed = seed
        self._episodes_restored = False  # a resume continues the saved episodes: no reset at the start
        if resume:
            self._restore()
        write_preset(self.run_dir, preset)
        self._window = _MetricsWindow(self.step, SystemSampler(str(self.device)))

    @property
    def step(self) -> int:
        return self.counters.env_steps

    # ------------------------------------------------------------------ subscribers and commands

    def subscribe(self, callback: Callable[[Event], None]) -> None:
        self._subscribers.append(callback)

    def submit(self, command: Command) -> Future[Reply]:
        """Queue a command (any thread, never blocks); the future resolves once it took effect."""
        future: Future[Reply] = Future()
        with self._submit_lock:
            if self._ended:
                future.set_result(Reply(False, RUN_ENDED))
            else:
                self._commands.put((command, future))
        return future

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="rltui-engine", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        """Close the environments and give up the run directory; `run()` does this when it ends.
        Commands still waiting are answered that the run has ended."""
        if hasattr(self, "_commands"):  # (missing when building failed early)
            self._end_commands()
        control = getattr(self, "_control", None)
        if control is not None:
            control.close()  # after the last replies: the answer to a stop still goes out
            self._control = None
        for name in ("_envs", "_eval_env", "_stream_env", "_frames_env"):  # (some are missing when building failed)
            env = getattr(self, name, None)
            if env is not None:
                env.close()
        self._lock.release()

    # ------------------------------------------------------------------ the run

    def run(self) -> None:
        """Train until total_steps, a Stop or an error. Never raises for errors inside the loop."""
        if self._started:
            raise RuntimeError("Engine.run() can only be called once")
        self._started = True
        self._open_control()
        try:
            self._log = RunLogWriter(self.run_dir / LOG_NAME)
            self._emit(RunStarted(
                step=self.step, name=self.preset.name, algo=self.algo, env_id=self.preset.env.id,
                device=str(self.device), total_steps=self.total_steps, run_dir=os.path.abspath(self.run_dir),
                resumed=self._last_saved is not None, agent_settings=agent_settings_in_effect(self.preset),
            ))
            for note in self._notes:
                self._warn(note)
            self._set_state(RunState.RUNNING)
            if not self._episodes_restored:
                self.loop.observe(self._envs.reset(seed=self._reset_seed))
            self._window.restart(self.step)
            stopped = False
            try:
                self.loop.train(self.total_steps)
            except _Stop:
                stopped = True
            self._finish(stopped)
        except Exception as exc:
            message = str(exc) if isinstance(exc, RunLogError) else f"{type(exc).__name__}: {exc}".splitlines()[0]
            self._emit(ErrorRaised(step=self.step, message=message, traceback=traceback.format_exc()))
            self._set_state(RunState.FAILED, message)
        finally:
            self._close_log()
            self.close()

    def _open_control(self) -> None:
        """Listen on the run's control socket (before the first event: its status is built from them);
        a run goes on without one where the socket cannot be made."""
        self._control = ControlServer(self, self.run_dir)
        try:
            self._control.start()
        except ControlError as exc:
            self._control = None
            self._notes.append(f"no control socket: {exc}")

    def _finish(self, stopped: bool) -> None:
        self._emit(self._window.take(self.step, self.counters.skipped_updates))
        message = f"stopped at step {self.step}" if stopped else f"finished {self.step} steps"
        final_evaluation_due = self.preset.eval.interval > 0 and self._last_eval_step != self.step
        if not stopped and (self._evaluations or final_evaluation_due):
            if not self._evaluations:  # (one due at this very step is the final one)
                self._evaluations.append(_PendingEvaluation(self.preset.eval.episodes))
            try:
                self._service(finishing=True)
            except _Stop:
                stopped, message = True, f"stopped at step {self.step} (final evaluation cut short)"
        if not stopped or self._stop is None or self._stop.final_checkpoint:
            self._save_checkpoint()
        self._set_state(RunState.FINISHED, message)

    def _end_commands(self) -> None:
        """From now on every command is answered that the run has ended; so are those waiting."""
        with self._submit_lock:
            self._ended = True
        ended = Reply(False, RUN_ENDED)
        if self._stop_futures:
            final = Reply(self.state is RunState.FINISHED, f"the run is {self.state.value}",
                          {"state": self.state.value, "step": self.step})
            for future in self._stop_futures:
                _resolve(future, final)
        waiting = [f for f, _ in self._settled] + self._checkpoint_futures
        waiting += [p.future for p in self._evaluations if p.future is not None]
        while True:
            try:
                waiting.append(self._commands.get_nowait()[1])
            except queue.Empty:
                break
        for future in waiting:
            _resolve(future, ended)
        self._stop_futures, self._checkpoint_futures, self._settled = [], [], []

    # ------------------------------------------------------------------ the loop's hooks

    def _env_stepped(self, finished: list[tuple[int, float, int]]) -> None:
        previous = self.step
        self.counters.env_steps += self._envs.num_envs
        for _, episode_return, episode_length in finished:
            self.counters.episodes += 1
            self._window.episode_returns.append(episode_return)
            self._emit(EpisodeFinished(step=self.step, episode_return=episode_return, episode_length=episode_length))
        if _crossed(previous, self.step, self.preset.eval.interval) and self.preset.eval.episodes > 0:
            self._evaluations.append(_PendingEvaluation(self.preset.eval.episodes))
        if _crossed(previous, self.step, self.preset.checkpoint.interval):
            self._checkpoint_due = True
        self._emit_metrics_if_due()

    def _record_update(self, metrics: dict[str, float] | None) -> None:
        if metrics is None:
            self.counters.skipped_updates += 1
            skipped = self.counters.skipped_updates
            if skipped & (skipped - 1) == 0:  # 1, 2, 4, 8...: visible without flooding
                self._warn(f"skipped {skipped} update(s) with non-finite values so far")
        else:
            self.counters.updates += 1
            self._window.add(metrics)
        self._emit_metrics_if_due()

    def _emit_metrics_if_due(self) -> None:
        if self._window.due():
            self._emit(self._window.take(self.step, self.counters.skipped_updates))

    # ------------------------------------------------------------------ the command state machine

    def _take_commands(self, wait_s: float = 0.0) -> None:
        """Apply queued commands to the state machine's inputs; with `wait_s`, wait that long for one."""
        try:
            item = self._commands.get(timeout=wait_s) if wait_s else self._commands.get_nowait()
        except queue.Empty:
            return
        while True:
            command, future = item
            if isinstance(command, Pause):
                self._paused = True
                self._settled.append((future, Reply(True, "paused: training waits (evaluations still run)")))
            elif isinstance(command, Resume):
                self._paused = False
                self._settled.append((future, Reply(True, "resumed")))
            elif isinstance(command, SetEvalMode):
                self._eval_mode = command.on
                self._settled.append((future, Reply(True, f"evaluation mode {'on' if command.on else 'off'}")))
            elif isinstance(command, Checkpoint):
                self._checkpoint_futures.append(future)
            elif isinstance(command, Evaluate):
                self._evaluations.append(_PendingEvaluation(command.episodes or self.preset.eval.episodes, future))
            elif isinstance(command, Stop):
                self._stop = self._stop or command
                self._stop_futures.append(future)
            else:
                _resolve(future, Reply(False, f"unknown command {command!r}"))
            try:
                item = self._commands.get_nowait()
            except queue.Empty:
                return

    def _service(self, finishing: bool = False) -> None:
        """Between two chunks of training: apply commands and run what comes before training, in
        the order of the module docstring; return when training may go on (`finishing`: once no
        checkpoint or evaluation is left, whatever pause or evaluation mode say)."""
        interrupted = False
        while True:
            self._take_commands()
            if self._stop is not None:
                raise _Stop
            if not finishing:
                self._set_state(RunState.EVALUATING if self._eval_mode
                                else RunState.PAUSED if self._paused else RunState.RUNNING)
            for future, reply in self._settled:
                _resolve(future, reply)
            self._settled = []
            if self._checkpoint_due or self._checkpoint_futures:
                self._save_checkpoint()
            elif self._eval_mode and not finishing:
                self._stream_step()
            elif self._evaluations:
                self._evaluation_step()
            elif self._paused and not finishing:
                self._take_commands(wait_s=PAUSED_POLL_S)
            else:
                if interrupted:
                    self._window.restart(self.step)
                return
            interrupted = True

    def _deterministic_policy(self) -> Policy:
        return make_policy(self.agent, self.algo, self.spec, deterministic=True)

    def _evaluation_step(self) -> None:
        """One env step of the oldest evaluation due; an EvalResult (and its reply) when it is done."""
        pending = self._evaluations[0]
        if pending.evaluation is None:
            if self._eval_env is None:
                self._eval_env = make_env(self.preset.env)
            seeds = eval_seeds(self.preset.train.seed, 0, pending.episodes)
            pending.evaluation = Evaluation(self._eval_env, self._deterministic_policy(), self.obs_normalizer, seeds)
        if not pending.evaluation.step():
            return
        self._evaluations.pop(0)
        summary = pending.evaluation.summary()
        self._last_eval_step = self.step
        self._emit(EvalResult(
            step=self.step, return_mean=summary.return_mean, return_std=summary.return_std,
            length_mean=summary.length_mean, episodes=len(summary.returns), returns=summary.returns,
            source="scheduled" if pending.future is None else "requested",
        ))
        if pending.future is None:  # a scheduled evaluation
            self._keep_if_best(summary)
        else:
            _resolve(pending.future, Reply(True, f"evaluated {len(summary.returns)} episodes", {
                "return_mean": summary.return_mean, "return_std": summary.return_std,
                "episodes": len(summary.returns), "step": self.step,
            }))

    def _stream_step(self) -> None:
        """Evaluation mode: one env step of its current episode; one EvalResult per episode."""
        if self._stream is None:
            env = self._watched_stream_env() if self.frames.watching else None
            self._stream_paced = env is not None
            if env is None:
                if self._stream_env is None:
                    self._stream_env = make_env(self.preset.env)
                env = self._stream_env
            index = STREAM_FIRST_INDEX + self.counters.stream_episodes
            seeds = eval_seeds(self.preset.train.seed, index, 1)
            self._stream = Evaluation(env, self._deterministic_policy(), self.obs_normalizer, seeds)
        self._stream_paced = self._stream_paced and self.frames.watching
        if self._stream_paced:  # watched: at the environment's own speed, answering commands meanwhile
            wait = self._next_frame_at - time.monotonic()
            if wait > 0:
                self._take_commands(wait_s=wait)
                return
            self._next_frame_at = max(self._next_frame_at, time.monotonic() - FRAME_LAG_S) + self._frame_period
        if not self._stream.step():
            return
        summary, self._stream = self._stream.summary(), None
        self.counters.stream_episodes += 1
        self._emit(EvalResult(
            step=self.step, return_mean=summary.return_mean, return_std=0.0, length_mean=summary.length_mean,
            episodes=1, returns=summary.returns, source="manual",
        ))

    def _watched_stream_env(self) -> gym.Env | None:
        """Evaluation mode's env rendering into `frames` (made once), None if frames cannot be had."""
        if self.frames.unavailable is not None:
            return None
        if self._frames_env is None:
            render_offscreen()

            def broken(exc: Exception) -> None:
                self.frames.unavailable = f"{type(exc).__name__}: {exc}"
                self._warn(f"no live frames: {self.frames.unavailable}")

            try:
                settings = dataclasses.replace(self.preset.env, kwargs={**self.preset.env.kwargs,
                                                                        "render_mode": "rgb_array"})
                env = make_env(settings)
            except Exception as exc:  # noqa: BLE001 - no renderer here: say so once, evaluate unseen
                broken(exc)
                return None
            fps = env.metadata.get("render_fps") or DEFAULT_FPS
            self._frame_period = 1.0 / max(float(fps), 1.0)
            self._frames_env = FrameTap(env, self.frames.put, on_error=broken)
        return self._frames_env

    # ------------------------------------------------------------------ checkpoints

    def _save_checkpoint(self) -> None:
        self._checkpoint_due = False
        key = (self.step, self.counters.updates + self.counters.skipped_updates)
        path = ckpt.checkpoints_dir(self.run_dir) / f"step-{self.step}"
        if key != self._last_saved or not path.is_dir():
            path = ckpt.save_checkpoint(
                self.run_dir, self.step, self.agent.state_dict(), self._engine_state(),
                preset_to_toml(self.preset), self.loop.replay_to_save(), self.preset.checkpoint.keep,
            )
            self._last_saved = key
        absolute = os.path.abspath(path)  # events and replies are read from other directories too
        self._emit(CheckpointSaved(step=self.step, path=absolute))
        for future in self._checkpoint_futures:
            _resolve(future, Reply(True, f"checkpoint {absolute}", {"path": absolute, "step": self.step}))
        self._checkpoint_futures = []

    def _keep_if_best(self, summary: EvalSummary) -> None:
        """Save the agent as checkpoints/best when `summary` beats every earlier scheduled evaluation."""
        previous = self._best_return
        if not np.isfinite(summary.return_mean) or (previous is not None and summary.return_mean <= previous):
            return
        path = ckpt.save_best_checkpoint(
            self.run_dir, self.step, self.agent.state_dict(), self._engine_state(), preset_to_toml(self.preset),
            self.loop.replay_to_save(),
            {"return_mean": summary.return_mean, "return_std": summary.return_std, "episodes": len(summary.returns)},
        )
        self._best_return = summary.return_mean
        self._emit(BestCheckpointSaved(step=self.step, path=os.path.abspath(path), return_mean=summary.return_mean))

    def _engine_state(self) -> dict[str, Any]:
        return {
            "algo": self.algo,
            "env_id": self.preset.env.id,
            "obs_dim": self.spec.obs_dim,
            "act_dim": self.spec.act_dim,
            "num_envs": self._envs.num_envs,
            "counters": dict(vars(self.counters)),
            "obs_normalizer": self.obs_normalizer.state_dict(),
            "envs": self._envs.state_dict(),
            "obs": torch.from_numpy(np.array(self.loop.obs, dtype=np.float32)),
            "rng": ckpt.capture_rng(self._sampler),
            **self.loop.state_dict(),
        }

    def _restore(self) -> None:
        """Load the latest checkpoint into the freshly built engine, or raise CheckpointError /
        ResumeError with nothing in the run directory changed but leftovers of a killed save."""
        ckpt.recover_checkpoints(self.run_dir)
        path = ckpt.latest_checkpoint(self.run_dir)
        if path is None:
            raise ckpt.CheckpointError(f"{self.run_dir}: no checkpoints to resume from")
        aside = path.with_name(f"broken-{path.name}")  # a name checkpoints/ leaves alone
        checkpoint = ckpt.load_latest_checkpoint(self.run_dir, path, lambda older: (
            f"the newest intact checkpoint is {older.name}: to resume from it, move the broken one "
            f"aside (mv {shlex.quote(display_path(path))} {shlex.quote(display_path(aside))})"))
        try:
            saved_preset = preset_from_toml_text(checkpoint.preset_text, str(path / ckpt.PRESET_FILE))
        except PresetError as exc:
            raise ckpt.CheckpointError(f"{path}: its preset.toml is not valid ({exc})") from None
        check_resume(saved_preset, self.preset, self.run_dir, checkpoint.step)
        state = checkpoint.engine_state
        try:
            found = tuple(state[key] for key in ("algo", "env_id", "obs_dim", "act_dim", "num_envs"))
            wanted = (self.algo, self.preset.env.id, self.spec.obs_dim, self.spec.act_dim, self._envs.num_envs)
            if found != wanted:
                raise ckpt.CheckpointError(
                    f"{path}: checkpoint is for (algo, env, obs, act, num_envs) = {found}, the preset gives {wanted}"
                )
            self.agent.load_state_dict(checkpoint.agent_state)  # the preset's learning rates apply
            vars(self.counters).update(vars(_counters_from(state["counters"])))
            if self.counters.env_steps != checkpoint.step:
                raise ValueError(f"counters say step {self.counters.env_steps}, meta.json says {checkpoint.step}")
            self.obs_normalizer.load_state_dict(state["obs_normalizer"])
            ckpt.restore_rng(state["rng"], self._sampler)
            self._notes += self.loop.load_state_dict(state, checkpoint)
            self._restore_episodes(state, path)
        except (ckpt.CheckpointError, ResumeError):
            raise
        except (ReplayError, RolloutError, EnvStateError) as exc:
            raise ckpt.CheckpointError(f"{path}: {exc}") from None
        except Exception as exc:  # any other misfit of the saved values (types, shapes, keys)
            raise ckpt.CheckpointError(f"{path}: does not fit this preset ({ckpt.one_line(exc)})") from None
        self._last_saved = (self.step, self.counters.updates + self.counters.skipped_updates)
        self._resumed_from = path
        self._best_return = self._restore_best_return()

    def _restore_best_return(self) -> float | None:
        """The return a new best must beat: that of checkpoints/best (None when there is none; a
        warning when it cannot be read, and the next scheduled evaluation replaces it)."""
        best = ckpt.best_checkpoint(self.run_dir)
        if best is None:
            return None
        try:
            return float(ckpt.best_evaluation(best)["return_mean"])
        except ckpt.CheckpointError as exc:
            self._notes.append(f"the best checkpoint cannot be used ({exc}); the next evaluation replaces it")
            return None

    def _write_run_meta(self, command: list[str], sweep: Mapping[str, Any] | None) -> None:
        """run.json: created for a new run, a resume recorded for a resumed one (rltui.runmeta)."""
        device = str(self.device)
        gpu = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None
        if self._resumed_from is None:
            runmeta.write_run_meta(self.run_dir, command=command, device=device, gpu=gpu, preset=self.preset,
                                   sweep=sweep)
        else:
            self._notes += runmeta.record_resume(self.run_dir, command=command, device=device, gpu=gpu,
                                                 preset=self.preset, checkpoint=self._resumed_from, step=self.step)

    def _restore_episodes(self, state: dict[str, Any], path: Path) -> None:
        """Continue the episodes in progress at save time where their state was saved; otherwise
        end them at the saved step (in the loop's storage) and re-seed the envs."""
        saved_obs = state.get("obs")
        if saved_obs is not None:
            saved_obs = saved_obs.numpy()
            if saved_obs.shape != (self._envs.num_envs, self.spec.obs_dim):
                raise ValueError(f"saved observations of shape {tuple(saved_obs.shape)}")
        if state.get("envs") is not None and saved_obs is not None:
            self._envs.load_state_dict(state["envs"])
            self.loop.obs = saved_obs.astype(np.float32)
            self._episodes_restored = True
            return
        self._notes.append(
            f"checkpoint {path.name} holds no state of the {self.preset.env.id} environments: the episodes in "
            f"progress at step {self.step:,} end there and the environments start new ones"
        )
        self._reset_seed = self.preset.train.seed + RESUME_SEED_OFFSET + self.step
        if saved_obs is not None:
            self.loop.end_episodes(saved_obs)

    # ------------------------------------------------------------------ events

    def _set_state(self, state: RunState, message: str = "") -> None:
        if state == self.state and not message:
            return
        self.state = state
        self._emit(StateChanged(step=self.step, state=state, message=message))

    def _warn(self, message: str) -> None:
        self._emit(WarningRaised(step=self.step, message=message))

    def _emit(self, event: Event) -> None:
        """The run log first (a failure to write it fails the run), then every subscriber."""
        if self._log is not None:
            try:
                self._log(event)
            except OSError as exc:
                path = self._log.path
                self._close_log()
                raise RunLogError(f"cannot write the run log {path}: {exc.strerror or exc}") from None
        broken = []
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception as exc:
                if id(callback) not in self._failed_subscribers:
                    self._failed_subscribers.add(id(callback))
                    broken.append(f"{getattr(callback, '__qualname__', type(callback).__name__)}: "
                                  f"{type(exc).__name__}: {exc}")
        for text in broken:
            log.warning("event subscriber raised %s; its further errors are ignored", text)
            self._warn(f"an event subscriber raised ({text}); its further errors are ignored")

    def _close_log(self) -> None:
        if self._log is not None:
            try:
                self._log.close()
            except OSError:
                pass  # already reported: the run failed on its first write error
            self._log = None


def _resolve(future: Future[Reply], reply: Reply) -> None:
    if not future.done():
        future.set_result(reply)


def _counters_from(saved: Any) -> Counters:
    """Counters from a checkpoint, every value checked for its type and sign."""
    if not isinstance(saved, dict) or set(saved) != {f for f in vars(Counters())}:
        raise ValueError(f"counters must have the keys {sorted(vars(Counters()))}")
    for name, value in saved.items():
        kind = float if name == "update_credit" else int
        if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int) or value < 0:
            raise ValueError(f"counter {name} must be a non-negative {kind.__name__}, got {value!r:.40}")
    return Counters(**saved)


def _crossed(previous: int, current: int, interval: int) -> bool:
    """True when a multiple of `interval` lies in (previous, current]."""
    return interval > 0 and current // interval > previous // interval
