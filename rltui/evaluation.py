"""Evaluation: episodes of a fixed policy on their own environment, with frozen normalisation.

One piece of code serves the engine and `rltui eval`. An `Evaluation` advances one environment
step per `step()` call, so the engine can answer its controls between steps (a stop or a
checkpoint never waits for a whole evaluation); `evaluate` simply runs one to the end.

Seeds: evaluation `i` of a run with seed `s` uses `s + EVAL_SEED_OFFSET + i`, disjoint from the
training environments', and the same at every evaluation, so results compare across a run.
Returns are the true environment returns (rewards are never normalised here).
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from rltui.envs import ObsNormalizer, Policy, eval_seeds

if TYPE_CHECKING:
    from rltui.checkpoint import Checkpoint


@dataclass(frozen=True)
class EvalSummary:
    """Finished episodes: their true returns and lengths."""

    returns: tuple[float, ...]
    lengths: tuple[int, ...]

    @property
    def return_mean(self) -> float:
        return float(np.mean(self.returns))

    @property
    def return_std(self) -> float:
        return float(np.std(self.returns))

    @property
    def length_mean(self) -> float:
        return float(np.mean(self.lengths))


class Evaluation:
    """`len(seeds)` episodes of `policy` on `env`, one environment step per `step()`."""

    def __init__(self, env: gym.Env, policy: Policy, normalizer: ObsNormalizer, seeds: Sequence[int]) -> None:
        if not seeds:
            raise ValueError("an evaluation needs at least one episode")
        self._env, self._policy, self._normalizer = env, policy, normalizer
        self._seeds = list(seeds)
        self._returns: list[float] = []
        self._lengths: list[int] = []
        self._obs: np.ndarray | None = None  # None: the next step starts the next episode
        self._return, self._length = 0.0, 0

    @property
    def done(self) -> bool:
        return len(self._returns) == len(self._seeds)

    def step(self) -> bool:
        """One environment step (resetting first at an episode's start); True once all are done."""
        if self.done:
            return True
        if self._obs is None:
            self._obs = np.asarray(self._env.reset(seed=self._seeds[len(self._returns)])[0], dtype=np.float32)
            self._return, self._length = 0.0, 0
        action = self._policy(self._normalizer.normalize(self._obs))
        obs, reward, terminated, truncated, _ = self._env.step(action)
        self._return += float(reward)
        self._length += 1
        self._obs = np.asarray(obs, dtype=np.float32)
        if terminated or truncated:
            self._returns.append(self._return)
            self._lengths.append(self._length)
            self._obs = None
        return self.done

    def summary(self) -> EvalSummary:
        """The finished episodes so far."""
        return EvalSummary(tuple(self._returns), tuple(self._lengths))


def evaluate(env: gym.Env, policy: Policy, normalizer: ObsNormalizer, seeds: Sequence[int]) -> EvalSummary:
    """Run the episodes of `seeds` to the end."""
    evaluation = Evaluation(env, policy, normalizer, seeds)
    while not evaluation.step():
        pass
    return evaluation.summary()


def _load_for_evaluation(path: Path) -> Checkpoint:
    """The checkpoint at `path`, or a run directory's latest. When that latest cannot be loaded,
    the CheckpointError also names the newest older checkpoint that is intact, to evaluate instead."""
    from rltui.checkpoint import load_checkpoint, load_latest_checkpoint, resolve_checkpoint
    from rltui.runlog import display_path

    resolved = resolve_checkpoint(path)
    if resolved == path:  # a checkpoint directory, chosen by the user: no other is offered
        return load_checkpoint(resolved)
    return load_latest_checkpoint(path, resolved, lambda older: (
        f"the run's newest intact checkpoint is {older.name}: rltui eval {shlex.quote(display_path(older))}"))


def evaluate_checkpoint(path: Path, episodes: int, deterministic: bool, seed: int | None,
                        video: Path | None = None) -> dict[str, Any]:
    """`episodes` episodes of a saved agent on the CPU with the checkpoint's frozen normaliser.

    `path` is a run directory (its latest checkpoint) or a checkpoint directory (a step's, or the
    run's checkpoints/best: `rltui eval --best`). By default the episodes are those of the run's
    own evaluations (same seeds). With `video`, the episodes' rendered frames are recorded there
    (rltui.video). Raises CheckpointError (or VideoError).
    """
    import torch

    from rltui.checkpoint import CheckpointError, one_line
    from rltui.engine import build_agent, make_policy
    from rltui.envs import env_spec, make_env
    from rltui.presets import PresetError, preset_from_toml_text

    checkpoint = _load_for_evaluation(Path(path))
    try:
        preset = preset_from_toml_text(checkpoint.preset_text, str(checkpoint.path / "preset.toml"))
    except PresetError as exc:
        raise CheckpointError(f"{checkpoint.path}: its preset.toml is not valid ({exc})") from None
    torch.set_num_threads(preset.train.threads)
    base_seed = preset.train.seed if seed is None else seed
    torch.manual_seed(base_seed)
    device = torch.device("cpu")
    env_settings = preset.env
    if video is not None:
        from rltui.video import render_offscreen

        render_offscreen()
        env_settings = dataclasses.replace(env_settings, kwargs={**env_settings.kwargs, "render_mode": "rgb_array"})
    env = make_env(env_settings)
    recording = None
    try:
        spec = env_spec(env)
        agent = build_agent(preset, spec, device)
        normalizer = ObsNormalizer(spec.obs_dim, preset.env.normalize_obs, preset.env.clip_obs)
        try:
            agent.load_state_dict(checkpoint.agent_state)
            normalizer.load_state_dict(checkpoint.engine_state["obs_normalizer"])
        except Exception as exc:  # any misfit of the saved values (types, shapes, keys)
            raise CheckpointError(f"{checkpoint.path}: does not fit its preset ({one_line(exc)})") from None
        policy = make_policy(agent, preset.algo, spec, deterministic=deterministic)
        episodes_env: gym.Env = env
        if video is not None:
            from rltui.video import DEFAULT_FPS, FrameTap, VideoWriter

            recording = VideoWriter(video, fps=int(env.metadata.get("render_fps") or DEFAULT_FPS))
            episodes_env = FrameTap(env, recording.add)
        summary = evaluate(episodes_env, policy, normalizer, eval_seeds(base_seed, 0, episodes))
        if recording is not None:
            recording.close()
            recording = None
    finally:
        if recording is not None:
            recording.abandon()
        env.close()
    return {
        "return_mean": summary.return_mean,
        "return_std": summary.return_std,
        "episodes": episodes,
        "step": checkpoint.step,
        "length_mean": summary.length_mean,
        "checkpoint": str(checkpoint.path),
    }
