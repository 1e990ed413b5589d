"""The training engine: one interface, an MPO loop and a TRPO loop, run on a thread.

    engine = Engine(preset, rltui.rundir.create_run_dir(preset, Path("saves")))
    engine.subscribe(print)          # called on the engine thread with every rltui.events.Event
    thread = engine.start()          # or engine.run() to block
    engine.pause(); engine.resume(); engine.request_checkpoint(); engine.request_evaluation(5)
    engine.set_eval_mode(True); engine.set_eval_mode(False); engine.stop()

Controls are queued (thread-safe) and applied between env steps and between updates, so they take
effect within a second except during a single long TRPO update. Evaluation mode pauses training and
runs deterministic episodes one after another, one EvalResult per episode, until switched off.

MPO: act on the normalised observation -> step the envs -> store the raw transition; once
`update_after` env steps are done, `updates_per_step` updates per env step (fractions accumulate as
credit), each on a batch sampled from replay (sequences of `retrace_steps` when `use_retrace`) and
normalised with the current observation statistics.
TRPO: rollouts of `rollout_steps` per env with values and log-probs from `agent.act`, GAE through
`agents.trpo.compute_gae` bootstrapping truncated episodes from V(final observation), one update.
A run that reaches `total_steps` mid-rollout keeps the partial rollout for a resume; it does not
learn from it.

A run directory has one owner: the engine takes its lock (rltui.rundir) before writing anything
and releases it when `run()` ends (or on `close()` for an engine that never runs). Checkpoints hold
everything needed to continue exactly (networks, optimisers, duals, counters, normalisers, RNGs,
replay, the environments' state where it can be captured, TRPO's rollout in progress): a run stopped
at any step and resumed gives the same weights as one that never stopped. The run log is part of the
run: when it cannot be written the run fails (FAILED, one ErrorRaised) rather than go on unrecorded.

Every exception inside the loop becomes an ErrorRaised event and the FAILED state; a subscriber that
raises is reported once (WarningRaised) and never stops the loop.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rltui import checkpoint as ckpt
from rltui.env_state import EnvStateError
from rltui.envs import (
    EnvSpec,
    ObsNormalizer,
    Policy,
    RewardNormalizer,
    TrainingEnvs,
    eval_seeds,
    make_env,
    run_episode,
)
from rltui.events import (
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
from rltui.presets import Preset, PresetError, preset_device, preset_from_toml_text, preset_to_toml
from rltui.replay import ReplayBuffer, ReplayError
from rltui.resume import ResumeError, check_resume
from rltui.rollout import RolloutBuffer, RolloutError
from rltui.rundir import RunLock, write_preset
from rltui.runlog import LOG_NAME, RunLogWriter

log = logging.getLogger(__name__)

METRICS_INTERVAL_S = 0.5
STREAM_FIRST_INDEX = 500_000  # evaluation-mode episodes use seeds apart from interval evaluations
RESUME_SEED_OFFSET = 2**32  # envs whose state was not saved are re-seeded on resume: seed + offset + env steps


class _Stop(Exception):
    """Unwinds the loop when stop() was requested."""


class RunLogError(Exception):
    """The run log cannot be written; the run fails rather than go on unrecorded."""


@dataclass
class Counters:
    env_steps: int = 0
    episodes: int = 0
    updates: int = 0
    skipped_updates: int = 0
    update_credit: float = 0.0
    stream_episodes: int = 0
    warmup_until: int = 0  # no updates before this env step (set when resuming without replay)


def build_agent(preset: Preset, spec: EnvSpec, device: torch.device) -> Any:
    """MPOAgent or TRPOAgent for `spec`, with the preset's [network] and [mpo]/[trpo] settings."""
    agent_class = _agent_class(preset.algo)
    return agent_class(
        obs_dim=spec.obs_dim,
        act_dim=spec.act_dim,
        action_low=spec.action_low,
        action_high=spec.action_high,
        device=device,
        policy_layer_sizes=tuple(preset.network.policy_layer_sizes),
        critic_layer_sizes=tuple(preset.network.critic_layer_sizes),
        **preset.agent,
    )


def _agent_class(algo: str) -> type:
    if algo == "mpo":
        from agents.mpo import MPOAgent

        return MPOAgent
    if algo == "trpo":
        from agents.trpo import TRPOAgent

        return TRPOAgent
    raise ValueError(f"unknown algo {algo!r}")


def make_policy(agent: Any, algo: str, spec: EnvSpec, device: torch.device, deterministic: bool) -> Policy:
    """Normalised observation (O,) -> action for the environment (D,), clipped to the bounds."""
    if algo == "mpo":
        def mpo_policy(obs: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return np.asarray(agent.act(obs, deterministic=deterministic), dtype=np.float32).reshape(spec.act_dim)

        return mpo_policy

    def trpo_policy(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            action, _, _ = agent.act(torch.as_tensor(obs[None], device=device), deterministic=deterministic)
        return np.clip(action[0].cpu().numpy(), spec.action_low, spec.action_high)

    return trpo_policy


class _MetricsWindow:
    """Averages update metrics between UpdateMetrics events; tracks step and update rates.

    `restart` moves only the rates' baseline (time spent paused, evaluating or checkpointing is
    not training); the emission clock keeps running, so frequent evaluations cannot starve the
    UpdateMetrics events.
    """

    def __init__(self, step: int) -> None:
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
        event = UpdateMetrics(step=step, updates=self.updates, metrics=metrics)
        self.sums, self.counts, self.updates, self.episode_returns = {}, {}, 0, []
        self.emitted_at = time.monotonic()
        self.restart(step)
        return event


class Engine:
    def __init__(self, preset: Preset, run_dir: Path, *, resume: bool = False) -> None:
        """Take the run directory's lock, build envs, agent and buffers; with `resume`, restore the
        run's latest checkpoint. Nothing in the run directory changes before all of that succeeded.

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
        except BaseException:
            self.close()
            raise

    def _build(self, preset: Preset, resume: bool) -> None:
        self._subscribers: list[Callable[[Event], None]] = []
        self._failed_subscribers: set[int] = set()
        self._commands: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._started = False
        self._paused = False
        self._eval_mode = False
        self._stop_requested = False
        self._final_checkpoint = True
        self._checkpoint_requested = False
        self._eval_requests: list[int] = []
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
        self.reward_normalizer = (
            RewardNormalizer(self._envs.num_envs, preset.agent["gamma"])
            if self.algo == "trpo" and preset.env.normalize_reward
            else None
        )
        self.replay = (
            ReplayBuffer(preset.train.replay_size, self._envs.num_envs, self.spec.obs_dim, self.spec.act_dim)
            if self.algo == "mpo"
            else None
        )
        self.rollout = (
            RolloutBuffer(preset.train.rollout_steps, self._envs.num_envs, self.spec.obs_dim, self.spec.act_dim)
            if self.algo == "trpo"
            else None
        )
        self.counters = Counters()
        self._log: RunLogWriter | None = None
        self._eval_env: gym.Env | None = None
        self._stream_env: gym.Env | None = None
        self._last_eval_step = -1
        self._last_saved: tuple[int, int] | None = None
        self._reset_seed = seed
        self._obs = np.zeros((self._envs.num_envs, self.spec.obs_dim), dtype=np.float32)
        self._episodes_restored = False  # a resume continues the saved episodes: no reset at the start
        if resume:
            self._restore()
        write_preset(self.run_dir, preset)
        self._window = _MetricsWindow(self.step)

    @property
    def step(self) -> int:
        return self.counters.env_steps

    # ------------------------------------------------------------------ subscribers and controls

    def subscribe(self, callback: Callable[[Event], None]) -> None:
        self._subscribers.append(callback)

    def pause(self) -> None:
        self._commands.put(("pause", None))

    def resume(self) -> None:
        self._commands.put(("resume", None))

    def request_checkpoint(self) -> None:
        self._commands.put(("checkpoint", None))

    def request_evaluation(self, episodes: int | None = None) -> None:
        self._commands.put(("evaluate", episodes))

    def set_eval_mode(self, on: bool) -> None:
        self._commands.put(("eval_mode", bool(on)))

    def stop(self, final_checkpoint: bool = True) -> None:
        self._commands.put(("stop", final_checkpoint))

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="rltui-engine", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        """Close the environments and give up the run directory; `run()` does this when it ends."""
        for name in ("_envs", "_eval_env", "_stream_env"):  # (some are missing when building failed)
            env = getattr(self, name, None)
            if env is not None:
                env.close()
        self._lock.release()

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        """Train until total_steps, stop() or an error. Never raises for errors inside the loop."""
        if self._started:
            raise RuntimeError("Engine.run() can only be called once")
        self._started = True
        try:
            self._log = RunLogWriter(self.run_dir / LOG_NAME)
            self._emit(RunStarted(
                step=self.step, name=self.preset.name, algo=self.algo, env_id=self.preset.env.id,
                device=str(self.device), total_steps=self.total_steps, run_dir=str(self.run_dir),
                resumed=self._last_saved is not None,
            ))
            for note in self._notes:
                self._warn(note)
            self._set_state(RunState.RUNNING)
            if not self._episodes_restored:
                self._obs = self._envs.reset(seed=self._reset_seed)
                self.obs_normalizer.update(self._obs)
            self._window.restart(self.step)
            stopped = False
            try:
                if self.algo == "mpo":
                    self._train_mpo()
                else:
                    self._train_trpo()
            except _Stop:
                stopped = True
            self._finish(stopped)
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}".splitlines()[0] if not isinstance(exc, RunLogError) else str(exc)
            self._emit(ErrorRaised(step=self.step, message=message, traceback=traceback.format_exc()))
            self._set_state(RunState.FAILED, message)
        finally:
            self._close_log()
            self.close()

    def _train_mpo(self) -> None:
        """Pending updates first, then one env step; so a resumed run (which may have stopped
        between the updates of one step) does exactly what an uninterrupted one does."""
        assert self.replay is not None
        train = self.preset.train
        use_retrace = bool(self.preset.agent["use_retrace"])
        retrace_steps = int(self.preset.agent["retrace_steps"])
        n = self._envs.num_envs
        while True:
            while self.counters.update_credit >= 1.0:
                self._service()
                if use_retrace:
                    batch = self.replay.sample_sequences(train.batch_size, retrace_steps, self._sampler)
                else:
                    batch = self.replay.sample(train.batch_size, self._sampler)
                batch["obs"] = self.obs_normalizer.normalize(batch["obs"])
                batch["next_obs"] = self.obs_normalizer.normalize(batch["next_obs"])
                self._record_update(self.agent.update(batch))
                self.counters.update_credit -= 1.0
            self._periodic()
            if self.step >= self.total_steps:
                return
            self._service()
            obs = self._obs
            a_exec, a_raw, log_prob = self.agent.act_with_logp(self.obs_normalizer.normalize(obs), deterministic=False)
            a_exec = np.asarray(a_exec, dtype=np.float32).reshape(n, self.spec.act_dim)
            result = self._envs.step(a_exec)
            self.replay.add(
                obs=obs,
                actions_exec=a_exec,
                actions_raw=np.asarray(a_raw, dtype=np.float32).reshape(n, self.spec.act_dim),
                rewards=result.rewards,
                next_obs=result.final_obs,
                terminated=result.terminated,
                dones=result.dones,
                behaviour_log_probs=np.asarray(log_prob, dtype=np.float32).reshape(n),
            )
            self._after_env_step(result.obs, result.finished)
            learning = self.step >= max(train.update_after, self.counters.warmup_until)
            if learning and (not use_retrace or self.replay.can_sample_sequences(retrace_steps)):
                self.counters.update_credit += train.updates_per_step * n

    def _train_trpo(self) -> None:
        """Fill the rollout (a resumed one may be part-filled), then update on it. At total_steps
        a part-filled rollout is kept (in the final checkpoint) rather than learnt from."""
        from agents.trpo import RolloutActor

        assert self.rollout is not None
        rollout = self.rollout
        gamma = self.preset.agent["gamma"]
        gae_lambda = self.preset.agent["gae_lambda"]
        while True:
            actor = RolloutActor(self.agent, self._sampler)  # the policy is fixed until the next update
            while not rollout.full:
                if self.step >= self.total_steps:
                    return
                self._service()
                obs_norm = self.obs_normalizer.normalize(self._obs)
                action, log_prob, value = actor.act(obs_norm)
                result = self._envs.step(np.clip(action, self.spec.action_low, self.spec.action_high))
                rewards = result.rewards
                if self.reward_normalizer is not None:
                    rewards = self.reward_normalizer(rewards, result.dones)
                truncated = result.truncated & ~result.terminated
                final_values = None
                if truncated.any():  # V(final observation): GAE bootstraps through the time limit
                    final_values = actor.values(self.obs_normalizer.normalize(result.final_obs))
                rollout.add(obs=obs_norm, actions=action, log_probs=log_prob, values=value, rewards=rewards,
                            terminated=result.terminated, truncated=truncated, final_values=final_values)
                self._after_env_step(result.obs, result.finished)
            self._service()
            batch = rollout.batch(actor.values(self.obs_normalizer.normalize(self._obs)), gamma, gae_lambda)
            rollout.clear()
            self._record_update(self.agent.update({k: torch.from_numpy(v).to(self.device) for k, v in batch.items()}))
            self._periodic()

    def _after_env_step(self, next_obs: np.ndarray, finished: list[tuple[int, float, int]]) -> None:
        previous = self.step
        self.counters.env_steps += self._envs.num_envs
        self._obs = next_obs
        self.obs_normalizer.update(next_obs)
        for _, episode_return, episode_length in finished:
            self.counters.episodes += 1
            self._window.episode_returns.append(episode_return)
            self._emit(EpisodeFinished(step=self.step, episode_return=episode_return, episode_length=episode_length))
        if _crossed(previous, self.step, self.preset.eval.interval) and self.preset.eval.episodes > 0:
            self._eval_requests.append(self.preset.eval.episodes)
        if _crossed(previous, self.step, self.preset.checkpoint.interval):
            self._checkpoint_requested = True
        self._periodic()

    def _periodic(self) -> None:
        if self._window.due():
            self._emit(self._window.take(self.step, self.counters.skipped_updates))

    def _record_update(self, metrics: dict[str, float] | None) -> None:
        if metrics is None:
            self.counters.skipped_updates += 1
            skipped = self.counters.skipped_updates
            if skipped & (skipped - 1) == 0:  # 1, 2, 4, 8...: visible without flooding
                self._warn(f"skipped {skipped} update(s) with non-finite values so far")
            return
        self.counters.updates += 1
        self._window.add(metrics)

    def _finish(self, stopped: bool) -> None:
        self._emit(self._window.take(self.step, self.counters.skipped_updates))
        message = f"stopped at step {self.step}" if stopped else f"finished {self.step} steps"
        if not stopped and self.preset.eval.interval > 0 and self._last_eval_step != self.step:
            try:
                self._evaluate(self.preset.eval.episodes)
            except _Stop:
                stopped, message = True, f"stopped at step {self.step} (final evaluation cut short)"
        if not stopped or self._final_checkpoint:
            self._save_checkpoint()
        self._set_state(RunState.FINISHED, message)

    # ------------------------------------------------------------------ controls, between iterations

    def _drain(self, timeout: float | None = None) -> None:
        """Apply queued commands; with `timeout`, wait up to that long for the first one."""
        try:
            command = self._commands.get(timeout=timeout) if timeout else self._commands.get_nowait()
        except queue.Empty:
            return
        while True:
            name, arg = command
            if name == "pause":
                self._paused = True
            elif name == "resume":
                self._paused = False
            elif name == "checkpoint":
                self._checkpoint_requested = True
            elif name == "evaluate":
                self._eval_requests.append(arg if arg is not None else self.preset.eval.episodes)
            elif name == "eval_mode":
                self._eval_mode = arg
            elif name == "stop":
                self._stop_requested, self._final_checkpoint = True, arg
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return

    def _service(self) -> None:
        """Apply controls: checkpoints, evaluations, evaluation mode and pause block training here."""
        waited = False
        while True:
            self._drain()
            if self._stop_requested:
                raise _Stop
            if self._checkpoint_requested:
                self._save_checkpoint()
                waited = True
            elif self._eval_requests:
                self._evaluate(self._eval_requests.pop(0))
                waited = True
            elif self._eval_mode:
                self._stream_evaluation()
                waited = True
            elif self._paused:
                self._set_state(RunState.PAUSED)
                self._drain(timeout=0.2)
                waited = True
            else:
                self._set_state(RunState.RUNNING)
                if waited:
                    self._window.restart(self.step)
                return

    def _eval_checkpoint(self, paused_at_start: bool) -> None:
        """Controls during an evaluation episode: stop, checkpoint, evaluation mode, and a pause that
        arrived during the evaluation (blocks; an evaluation requested while paused runs through)."""
        self._drain()
        while True:
            if self._stop_requested:
                raise _Stop
            if self._checkpoint_requested:
                self._save_checkpoint()
            if self._eval_mode and self.state != RunState.EVALUATING:
                previous = self.state
                self._stream_evaluation()
                self._set_state(previous)
            if not self._paused or paused_at_start or self._eval_mode:
                return
            self._set_state(RunState.PAUSED)
            self._drain(timeout=0.2)

    def _evaluate(self, episodes: int) -> None:
        """`episodes` deterministic episodes (same seeds every time, so results compare) -> EvalResult."""
        if self._eval_env is None:
            self._eval_env = make_env(self.preset.env)
        policy = make_policy(self.agent, self.algo, self.spec, self.device, deterministic=True)
        paused_at_start = self._paused

        def keep_going() -> bool:
            self._eval_checkpoint(paused_at_start)
            return False

        results = []
        for seed in eval_seeds(self.preset.train.seed, 0, episodes):
            outcome = run_episode(self._eval_env, policy, self.obs_normalizer, seed, keep_going)
            assert outcome is not None
            results.append(outcome)
        returns = [r for r, _ in results]
        self._last_eval_step = self.step
        self._emit(EvalResult(
            step=self.step, return_mean=float(np.mean(returns)), return_std=float(np.std(returns)),
            length_mean=float(np.mean([n for _, n in results])), episodes=len(results), returns=tuple(returns),
        ))

    def _stream_evaluation(self) -> None:
        """Evaluation mode: deterministic episodes, one EvalResult each, until switched off."""
        self._set_state(RunState.EVALUATING)
        if self._stream_env is None:
            self._stream_env = make_env(self.preset.env)
        policy = make_policy(self.agent, self.algo, self.spec, self.device, deterministic=True)

        def switched_off() -> bool:
            self._drain()
            if self._stop_requested:
                raise _Stop
            if self._checkpoint_requested:
                self._save_checkpoint()
            return not self._eval_mode

        while self._eval_mode:
            index = STREAM_FIRST_INDEX + self.counters.stream_episodes
            seed = eval_seeds(self.preset.train.seed, index, 1)[0]
            outcome = run_episode(self._stream_env, policy, self.obs_normalizer, seed, switched_off)
            if outcome is None:
                break
            self.counters.stream_episodes += 1
            self._emit(EvalResult(
                step=self.step, return_mean=outcome[0], return_std=0.0, length_mean=float(outcome[1]),
                episodes=1, returns=(outcome[0],),
            ))

    # ------------------------------------------------------------------ checkpoints

    def _save_checkpoint(self) -> None:
        self._checkpoint_requested = False
        key = (self.step, self.counters.updates + self.counters.skipped_updates)
        path = ckpt.checkpoints_dir(self.run_dir) / f"step-{self.step}"
        if key != self._last_saved or not path.is_dir():
            save_replay = self.replay is not None and self.preset.checkpoint.save_replay
            path = ckpt.save_checkpoint(
                self.run_dir, self.step, self.agent.state_dict(), self._engine_state(),
                preset_to_toml(self.preset), self.replay if save_replay else None, self.preset.checkpoint.keep,
            )
            self._last_saved = key
        self._emit(CheckpointSaved(step=self.step, path=str(path)))

    def _engine_state(self) -> dict[str, Any]:
        legacy = np.random.get_state(legacy=True)
        assert isinstance(legacy, tuple)
        py_version, py_state, py_gauss = random.getstate()
        return {
            "algo": self.algo,
            "env_id": self.preset.env.id,
            "obs_dim": self.spec.obs_dim,
            "act_dim": self.spec.act_dim,
            "num_envs": self._envs.num_envs,
            "counters": dict(vars(self.counters)),
            "obs_normalizer": self.obs_normalizer.state_dict(),
            "reward_normalizer": None if self.reward_normalizer is None else self.reward_normalizer.state_dict(),
            "envs": self._envs.state_dict(),
            "obs": torch.from_numpy(np.array(self._obs, dtype=np.float32)),
            "rollout": None if self.rollout is None else self.rollout.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "torch_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "numpy": {"keys": torch.from_numpy(legacy[1].astype(np.int64)), "pos": int(legacy[2]),
                          "has_gauss": int(legacy[3]), "cached_gaussian": float(legacy[4])},
                "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
                "sampler": self._sampler.bit_generator.state,
            },
        }

    def _restore(self) -> None:
        """Load the latest checkpoint into the freshly built engine, or raise CheckpointError /
        ResumeError with nothing in the run directory changed but leftovers of a killed save."""
        ckpt.recover_checkpoints(self.run_dir)
        path = ckpt.latest_checkpoint(self.run_dir)
        if path is None:
            raise ckpt.CheckpointError(f"{self.run_dir}: no checkpoints to resume from")
        checkpoint = ckpt.load_checkpoint(path)
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
            self.counters = _counters_from(state["counters"])
            if self.counters.env_steps != checkpoint.step:
                raise ValueError(f"counters say step {self.counters.env_steps}, meta.json says {checkpoint.step}")
            self.obs_normalizer.load_state_dict(state["obs_normalizer"])
            if self.reward_normalizer is not None and state["reward_normalizer"] is not None:
                self.reward_normalizer.load_state_dict(state["reward_normalizer"])
            self._restore_rng(state["rng"])
            if self.replay is not None:
                self._restore_replay(checkpoint, path)
            if self.rollout is not None and state.get("rollout") is not None:
                self.rollout.load_state_dict(state["rollout"])
            self._restore_episodes(state, path)
        except (ckpt.CheckpointError, ResumeError):
            raise
        except (ReplayError, RolloutError, EnvStateError) as exc:
            raise ckpt.CheckpointError(f"{path}: {exc}") from None
        except Exception as exc:  # any other misfit of the saved values (types, shapes, keys)
            raise ckpt.CheckpointError(f"{path}: does not fit this preset ({ckpt.one_line(exc)})") from None
        self._last_saved = (self.step, self.counters.updates + self.counters.skipped_updates)

    def _restore_replay(self, checkpoint: ckpt.Checkpoint, path: Path) -> None:
        assert self.replay is not None
        if checkpoint.replay_path is not None:
            self.replay.load(checkpoint.replay_path)
            return
        self.counters.warmup_until = self.step + self.preset.train.update_after
        self._notes.append(
            f"checkpoint {path.name} holds no replay buffer: refilling {self.preset.train.update_after} "
            "steps before updating again"
        )

    def _restore_episodes(self, state: dict[str, Any], path: Path) -> None:
        """Continue the episodes in progress at save time where their state was saved; otherwise
        end them at the saved step (replay, rollout and reward scale agree) and re-seed the envs."""
        saved_obs = state.get("obs")
        if saved_obs is not None:
            saved_obs = saved_obs.numpy()
            if saved_obs.shape != (self._envs.num_envs, self.spec.obs_dim):
                raise ValueError(f"saved observations of shape {tuple(saved_obs.shape)}")
        if state.get("envs") is not None and saved_obs is not None:
            self._envs.load_state_dict(state["envs"])
            self._obs = saved_obs.astype(np.float32)
            self._episodes_restored = True
            return
        self._notes.append(
            f"checkpoint {path.name} holds no state of the {self.preset.env.id} environments: the episodes in "
            f"progress at step {self.step:,} end there and the environments start new ones"
        )
        self._reset_seed = self.preset.train.seed + RESUME_SEED_OFFSET + self.step
        if self.replay is not None:
            self.replay.end_episodes()
        if self.reward_normalizer is not None:
            self.reward_normalizer.end_episodes()
        if self.rollout is not None and saved_obs is not None:
            from agents.trpo import RolloutActor

            actor = RolloutActor(self.agent, self._sampler)
            self.rollout.end_episodes(actor.values(self.obs_normalizer.normalize(saved_obs)))

    def _restore_rng(self, rng: dict[str, Any]) -> None:
        torch.set_rng_state(rng["torch"])
        if torch.cuda.is_available() and rng["torch_cuda"]:
            torch.cuda.set_rng_state_all(rng["torch_cuda"])
        legacy = rng["numpy"]
        np.random.set_state(("MT19937", legacy["keys"].numpy().astype(np.uint32), legacy["pos"],
                             legacy["has_gauss"], legacy["cached_gaussian"]))
        python = rng["python"]
        random.setstate((python["version"], tuple(python["state"]), python["gauss"]))
        self._sampler.bit_generator.state = rng["sampler"]

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
