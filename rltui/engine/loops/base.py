"""What a training loop is given and what it provides; the engine shell knows nothing more of it.

A loop owns one algorithm's way of collecting data and learning: its storage (a replay buffer, a
rollout), its batch assembly and the current observation of the training environments. The shell
owns everything else (controls, evaluations, checkpoints, events) and reaches the loop only through
`Loop`'s methods. Adding an algorithm means one module with a `Loop` subclass and a line in the
registry (`rltui.engine.loops.LOOPS`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from rltui.checkpoint import Checkpoint
from rltui.envs import EnvSpec, ObsNormalizer, Policy, TrainingEnvs
from rltui.presets import Preset
from rltui.replay import ReplayBuffer


@dataclass
class Counters:
    """Loop counters saved in every checkpoint."""

    env_steps: int = 0
    episodes: int = 0
    updates: int = 0
    skipped_updates: int = 0
    update_credit: float = 0.0
    stream_episodes: int = 0
    warmup_until: int = 0  # no updates before this env step (set when resuming without replay)


@dataclass
class LoopContext:
    """The shell's objects a loop works with, and the shell's hooks it calls while it trains."""

    preset: Preset
    envs: TrainingEnvs
    spec: EnvSpec
    agent: Any
    obs_normalizer: ObsNormalizer
    sampler: np.random.Generator  # the loop's own random numbers (replay sampling, rollout noise)
    counters: Counters
    # Between two chunks of work (an env step, an update): applies controls, runs evaluations and
    # checkpoints, waits while paused; raises to unwind the loop on stop.
    service: Callable[[], None]
    # After each vector env step: finished episodes as (env index, true return, length).
    env_stepped: Callable[[list[tuple[int, float, int]]], None]
    # After each update: its metrics, or None when the agent skipped it (non-finite values).
    record_update: Callable[[dict[str, float] | None], None]

    @property
    def step(self) -> int:
        return self.counters.env_steps


class Loop(ABC):
    """One algorithm's training loop. `obs` (num_envs, O) raw is where the training envs are."""

    algo: ClassVar[str]

    def __init__(self, ctx: LoopContext) -> None:
        self.ctx = ctx
        self.obs = np.zeros((ctx.envs.num_envs, ctx.spec.obs_dim), dtype=np.float32)

    @staticmethod
    @abstractmethod
    def agent_class() -> type:
        """The agent class (imported on demand: agents import torch)."""

    @staticmethod
    @abstractmethod
    def make_policy(agent: Any, spec: EnvSpec, deterministic: bool) -> Policy:
        """Normalised observation (O,) -> the action sent to the environment (D,), within its bounds."""

    @abstractmethod
    def train(self, total_steps: int) -> None:
        """Train until `total_steps` env steps, calling the context's hooks; resumes where a
        restored loop left off."""

    def observe(self, obs: np.ndarray) -> None:
        """The envs are now at `obs` (raw): a reset, or the next observation of a step."""
        self.obs = obs
        self.ctx.obs_normalizer.update(obs)

    # ---- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The loop's part of state.pt (tensors and plain values), merged into the engine state
        under keys of its own."""
        return {}

    def load_state_dict(self, state: dict[str, Any], checkpoint: Checkpoint) -> list[str]:
        """Restore from the engine state of `checkpoint` (and the files beside it); returns notes
        for the run log. Raises on a misfit."""
        return []

    def replay_to_save(self) -> ReplayBuffer | None:
        """A replay buffer to write as the checkpoint's replay.npz, if any."""
        return None

    @abstractmethod
    def end_episodes(self, saved_obs: np.ndarray) -> None:
        """A resume cannot continue the saved episodes: end them at the saved step in the loop's
        storage (`saved_obs` are the observations after it)."""
