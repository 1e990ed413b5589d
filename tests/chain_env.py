"""A tiny deterministic environment that remembers every transition it made, for plumbing tests.

`RltuiChain-v0`: one action in [-1, 1]; the observation is [position, t, episode index], the
position moves by the executed action and the reward is the executed action plus t (so rewards
tell which action the environment received and when). Episodes alternate between the two ways
of ending: even-numbered episodes TERMINATE after `TERMINATE_AT` steps, odd-numbered ones are
TRUNCATED after `TRUNCATE_AT` steps (the env reports truncation itself, like a time limit).

Each instance appends one `Transition` per step to `transitions`, holding the true next
observation also where the episode ended, so a test can compare what the engine stored or fed
to an agent with what really happened.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

ENV_ID = "RltuiChain-v0"
TERMINATE_AT = 3
TRUNCATE_AT = 5


@dataclass(frozen=True)
class Transition:
    obs: np.ndarray
    action: np.ndarray  # what the environment received
    reward: float
    next_obs: np.ndarray  # the true successor (the final observation where the episode ended)
    terminated: bool
    truncated: bool


class ChainEnv(gym.Env):
    observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), dtype=np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), dtype=np.float32)

    def __init__(self) -> None:
        self.transitions: list[Transition] = []
        self._episode = -1
        self._t = 0
        self._position = 0.0

    def _obs(self) -> np.ndarray:
        return np.array([self._position, self._t, self._episode], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._episode += 1
        self._t = 0
        self._position = 0.0
        return self._obs(), {}

    def step(self, action):
        action = np.asarray(action, dtype=np.float32).reshape(1).copy()
        obs = self._obs()
        reward = float(action[0]) + self._t
        self._position += float(action[0])
        self._t += 1
        terminated = self._episode % 2 == 0 and self._t == TERMINATE_AT
        truncated = self._episode % 2 == 1 and self._t == TRUNCATE_AT
        next_obs = self._obs()
        self.transitions.append(Transition(obs, action, reward, next_obs, terminated, truncated))
        return next_obs, reward, terminated, truncated, {}


if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point=ChainEnv)
