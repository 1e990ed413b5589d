"""A one-dimensional target for sweep tests, where learning shows within a few hundred steps.

`RltuiTarget-v0`: episodes of `LENGTH` steps; the observation is [t / LENGTH]; one action in
[-1, 1], rewarded -(action - TARGET)^2. A policy that does not change keeps its initial return,
one that learns moves its mean action towards TARGET within a few TRPO updates.

Ray's worker processes register it through `register` (a `worker_process_setup_hook`), the test
process by importing this module.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

ENV_ID = "RltuiTarget-v0"
LENGTH = 5
TARGET = 0.6


class TargetEnv(gym.Env):
    observation_space = gym.spaces.Box(0.0, 1.0, (1,), dtype=np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), dtype=np.float32)

    def __init__(self) -> None:
        self._t = 0

    def _obs(self) -> np.ndarray:
        return np.array([self._t / LENGTH], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._t = 0
        return self._obs(), {}

    def step(self, action):
        reward = -float((np.asarray(action, dtype=np.float64).reshape(1)[0] - TARGET) ** 2)
        self._t += 1
        return self._obs(), reward, False, self._t >= LENGTH, {}


def register() -> None:
    if ENV_ID not in gym.registry:
        gym.register(ENV_ID, entry_point=TargetEnv)


register()
