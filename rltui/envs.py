"""Environments for training and evaluation, and the running normalisers.

Training environments are always a `TrainingEnvs` (also for `num_envs == 1`, so the loops have one
code path) with SAME_STEP autoreset: when an episode ends, `step` already returns the
first observation of the next episode and the true last observation of the finished one is reported
separately as `StepResult.final_obs`. The loops use it to bootstrap truncated episodes; termination and
truncation are kept apart.

Observations are normalised by `ObsNormalizer` (running mean/variance, updated only on training data,
frozen during evaluation, saved in checkpoints) and TRPO rewards by `RewardNormalizer` (scaled by the
running standard deviation of the discounted return). Both are the engine's job: the environments here
return raw observations and raw rewards, so reported returns are always the true environment returns.

Evaluation runs on separate single environments whose seeds are disjoint from training:
`seed + EVAL_SEED_OFFSET + episode_index`.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import FlattenObservation

from rltui import env_state

EVAL_SEED_OFFSET = 1_000_000
REWARD_CLIP = 10.0
MUJOCO_EXTRA_HINT = "pip install 'rltui[mujoco]'"
_EPS = 1e-8


class EnvError(Exception):
    """An environment cannot be made or used. `problem` says what is wrong and `key` which [env] key
    is at fault ("id", "kwargs", "kwargs.NAME", ...; None if none in particular); str() is the one
    line "[env] key: problem"."""

    def __init__(self, problem: str, key: str | None = None) -> None:
        self.problem = problem
        self.key = key
        super().__init__(f"[env] {key}: {problem}" if key else problem)


class EnvSettings(Protocol):
    """The fields of `rltui.presets.EnvConfig` used here (read-only: that dataclass is frozen)."""

    @property
    def id(self) -> str: ...
    @property
    def kwargs(self) -> Mapping[str, Any]: ...
    @property
    def num_envs(self) -> int: ...
    @property
    def normalize_obs(self) -> bool: ...
    @property
    def normalize_reward(self) -> bool: ...
    @property
    def clip_obs(self) -> float: ...


def check_env_id(env_id: str) -> None:
    """EnvError unless `env_id` is registered with gymnasium (naming close ids); makes nothing."""
    if env_id not in gym.registry:
        close = [f'"{c}"' for c in difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)]
        if len(close) > 1:
            close = [", ".join(close[:-1]), close[-1]]
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise EnvError(f'unknown environment "{env_id}"{hint}', "id")


def make_env(config: EnvSettings) -> gym.Env:
    """One environment: `gymnasium.make(id, **kwargs)`, dict observations flattened, Box actions only.

    Every failure is an EnvError naming the [env] key at fault: an unknown id, MuJoCo missing, a
    keyword argument the environment rejects (`kwargs.NAME` when the error names it), an action
    space that is not a Box or an observation space that is not flat.
    """
    check_env_id(config.id)
    _require_backend(config.id)
    try:
        env = gym.make(config.id, **dict(config.kwargs))
    except gym.error.DependencyNotInstalled as exc:
        if "mujoco" in str(exc).lower():
            raise _mujoco_missing(config.id) from None
        raise EnvError(f'cannot make "{config.id}": {_first_line(exc)}', "id") from None
    except Exception as exc:  # noqa: BLE001 - any failure of a third-party constructor is bad input
        reason = _first_line(exc).partition(" was raised from the environment creator")[0]  # gymnasium's suffix
        raise EnvError(f'gymnasium.make("{config.id}") failed: {type(exc).__name__}: {reason}',
                       _blamed_key(exc, config.kwargs)) from None
    if isinstance(env.observation_space, gym.spaces.Dict):
        env = FlattenObservation(env)
    if not isinstance(env.action_space, gym.spaces.Box):
        env.close()
        raise EnvError(f'"{config.id}" has a {type(env.action_space).__name__} action space; '
                       "MPO and TRPO need a continuous (Box) action space", "id")
    if not isinstance(env.observation_space, gym.spaces.Box) or len(env.observation_space.shape) != 1:
        env.close()
        raise EnvError(f'"{config.id}" has the observation space {env.observation_space}; '
                       "expected a flat Box", "id")
    return env


def check_env(config: EnvSettings) -> EnvSpec:
    """Make the environment once, as training will, and return its spec (EnvError if it cannot)."""
    env = make_env(config)
    try:
        return env_spec(env)
    finally:
        env.close()


def _require_backend(env_id: str) -> None:
    entry = gym.spec(env_id).entry_point
    if isinstance(entry, str) and "mujoco" in entry and importlib.util.find_spec("mujoco") is None:
        raise _mujoco_missing(env_id)


def _mujoco_missing(env_id: str) -> EnvError:
    return EnvError(f'"{env_id}" needs MuJoCo: install the mujoco extra ({MUJOCO_EXTRA_HINT})', "id")


def _blamed_key(exc: BaseException, kwargs: Mapping[str, Any]) -> str:
    """"kwargs.NAME" when the error names exactly one of the keyword arguments (gymnasium appends
    all of them, "with kwargs ({...})", which is not a clue), else "kwargs"; "id" if there are none."""
    if not kwargs:
        return "id"
    text = re.sub(r"with kwargs \(.*", "", str(exc), flags=re.DOTALL)
    named = [name for name in kwargs if re.search(rf"""['"]{re.escape(name)}['"]""", text)]
    return f"kwargs.{named[0]}" if len(named) == 1 else "kwargs"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass(frozen=True)
class EnvSpec:
    """What the agents need to know about an environment."""

    obs_dim: int
    act_dim: int
    action_low: np.ndarray
    action_high: np.ndarray


def env_spec(env: gym.Env) -> EnvSpec:
    """The spec of an environment made by `make_env` (so both spaces are flat Boxes)."""
    observations, actions = env.observation_space, env.action_space
    assert isinstance(observations, gym.spaces.Box) and isinstance(actions, gym.spaces.Box)
    return EnvSpec(
        obs_dim=int(observations.shape[0]),
        act_dim=int(actions.shape[0]),
        action_low=np.asarray(actions.low, dtype=np.float32),
        action_high=np.asarray(actions.high, dtype=np.float32),
    )


@dataclass
class StepResult:
    """One vector step. Shapes: n = num_envs, O = observation size.

    `obs` (n,O): what to act on next (a reset observation where an episode ended).
    `final_obs` (n,O): the true next observation s_{t+1}; differs from `obs` only where `dones`.
    `rewards` (n,) raw; `terminated`, `truncated`, `dones` (n,) bool.
    `finished`: (env index, true episode return, episode length) for each episode that ended here.
    """

    obs: np.ndarray
    final_obs: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    finished: list[tuple[int, float, int]]

    @property
    def dones(self) -> np.ndarray:
        return self.terminated | self.truncated


class TrainingEnvs:
    """`num_envs` training environments stepped together; tracks the true episode returns.

    A plain loop over the environments with SAME_STEP autoreset: where an episode ends, the env
    is reset at once, `obs` holds the new first observation and `final_obs` the true last one.
    (gymnasium's SyncVectorEnv does the same with more per-step bookkeeping, which was a visible
    share of a TRPO run on Pendulum.)
    """

    def __init__(self, config: EnvSettings, seed: int) -> None:
        if config.num_envs < 1:
            raise EnvError(f"expected an integer >= 1, got {config.num_envs}", "num_envs")
        first = make_env(config)
        self.spec = env_spec(first)
        self._envs = [first] + [make_env(config) for _ in range(config.num_envs - 1)]
        self.num_envs = config.num_envs
        self._seed = seed
        self._returns = np.zeros(self.num_envs, dtype=np.float64)
        self._lengths = np.zeros(self.num_envs, dtype=np.int64)

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Reset all envs (env i gets seed + i) and return raw observations (n,O) float32."""
        base = self._seed if seed is None else seed
        obs = np.stack([env.reset(seed=base + i)[0] for i, env in enumerate(self._envs)]).astype(np.float32)
        self._returns[:] = 0.0
        self._lengths[:] = 0
        return obs

    def step(self, actions_exec: np.ndarray) -> StepResult:
        n = self.num_envs
        obs = np.empty((n, self.spec.obs_dim), dtype=np.float32)
        rewards = np.empty(n, dtype=np.float64)
        terminated = np.zeros(n, dtype=bool)
        truncated = np.zeros(n, dtype=bool)
        final_obs = obs
        finished: list[tuple[int, float, int]] = []
        for i, env in enumerate(self._envs):
            obs[i], rewards[i], terminated[i], truncated[i], _ = env.step(actions_exec[i])
        self._returns += rewards
        self._lengths += 1
        ended = np.flatnonzero(terminated | truncated)
        if ended.size:
            final_obs = obs.copy()
            for index in ended:
                finished.append((int(index), float(self._returns[index]), int(self._lengths[index])))
                self._returns[index] = 0.0
                self._lengths[index] = 0
                obs[index] = self._envs[index].reset()[0]
        return StepResult(obs, final_obs, rewards.astype(np.float32), terminated, truncated, finished)

    def state_dict(self) -> dict[str, Any] | None:
        """Every env's state and the returns of the episodes in progress, or None when an env's
        state cannot be captured (see `rltui.env_state`). Plain Python values only."""
        states = [env_state.capture(env) for env in self._envs]
        if any(state is None for state in states):
            return None
        return {"envs": states, "returns": self._returns.tolist(), "lengths": self._lengths.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the episodes of `state_dict()`: the envs are reset (to ready their wrappers)
        and then put back into the saved states. Raises EnvStateError when it does not fit."""
        if len(state["envs"]) != self.num_envs:
            raise env_state.EnvStateError(f"saved state holds {len(state['envs'])} envs, expected {self.num_envs}")
        returns = np.asarray(state["returns"], dtype=np.float64)
        lengths = np.asarray(state["lengths"], dtype=np.int64)
        if returns.shape != (self.num_envs,) or lengths.shape != (self.num_envs,):
            raise env_state.EnvStateError("saved episode returns do not fit the envs")
        self.reset()
        for env, saved in zip(self._envs, state["envs"], strict=True):
            env_state.restore(env, saved)
        self._returns[:] = returns
        self._lengths[:] = lengths

    def close(self) -> None:
        for env in self._envs:
            env.close()


class RunningMeanStd:
    """Running mean and variance (parallel algorithm of Chan et al.), float64 for stability."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.mean = np.zeros(shape, dtype=np.float64)
        self.var = np.ones(shape, dtype=np.float64)
        self.count = 1e-4

    def update(self, batch: np.ndarray) -> None:
        """batch (n, *shape)."""
        batch = np.asarray(batch, dtype=np.float64)
        batch_mean = batch.mean(axis=0)
        batch_var = batch.var(axis=0)
        batch_count = batch.shape[0]
        delta = batch_mean - self.mean
        total = self.count + batch_count
        self.mean = self.mean + delta * batch_count / total
        m2 = self.var * self.count + batch_var * batch_count + delta**2 * self.count * batch_count / total
        self.var = m2 / total
        self.count = total

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "var": self.var.tolist(), "count": float(self.count)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mean = np.asarray(state["mean"], dtype=np.float64)
        var = np.asarray(state["var"], dtype=np.float64)
        if mean.shape != self.mean.shape or var.shape != self.var.shape:
            raise ValueError(f"normaliser shape {mean.shape} does not match {self.mean.shape}")
        self.mean, self.var, self.count = mean, var, float(state["count"])


class ObsNormalizer:
    """clip((obs - mean) / sqrt(var + eps), ±clip_obs); identity when disabled.

    `update` is called on training observations only; `normalize` never changes the statistics, so
    evaluation sees them frozen.
    """

    def __init__(self, obs_dim: int, enabled: bool, clip_obs: float) -> None:
        self.enabled = enabled
        self.clip_obs = clip_obs
        self.stats = RunningMeanStd((obs_dim,))

    def update(self, obs: np.ndarray) -> None:
        """obs (n,O) raw."""
        if self.enabled:
            self.stats.update(obs)

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        """obs (..., O) raw -> float32 of the same shape."""
        if not self.enabled:
            return np.asarray(obs, dtype=np.float32)
        scaled = (obs - self.stats.mean) / np.sqrt(self.stats.var + _EPS)
        return np.clip(scaled, -self.clip_obs, self.clip_obs).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        return self.stats.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stats.load_state_dict(state)


class RewardNormalizer:
    """Scales rewards by the running std of the discounted return (per env), clipped to ±REWARD_CLIP."""

    def __init__(self, num_envs: int, gamma: float) -> None:
        self.gamma = gamma
        self.stats = RunningMeanStd(())
        self._discounted = np.zeros(num_envs, dtype=np.float64)

    def __call__(self, rewards: np.ndarray, dones: np.ndarray) -> np.ndarray:
        """rewards, dones (n,) -> scaled rewards (n,) float32; updates the statistics."""
        self._discounted = self._discounted * self.gamma + rewards
        self.stats.update(self._discounted)
        self._discounted[dones] = 0.0
        scaled = rewards / np.sqrt(self.stats.var + _EPS)
        return np.clip(scaled, -REWARD_CLIP, REWARD_CLIP).astype(np.float32)

    def end_episodes(self) -> None:
        """Restart every env's discounted return (its episode will not be continued)."""
        self._discounted[:] = 0.0

    def state_dict(self) -> dict[str, Any]:
        return {**self.stats.state_dict(), "discounted": self._discounted.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Statistics and, where saved, each env's discounted return of the episode in progress."""
        self.stats.load_state_dict(state)
        if "discounted" in state:
            discounted = np.asarray(state["discounted"], dtype=np.float64)
            if discounted.shape != self._discounted.shape:
                raise ValueError(
                    f"saved discounted returns of shape {discounted.shape}, expected {self._discounted.shape}"
                )
            self._discounted = discounted
        else:  # saved before rltui kept them
            self.end_episodes()


Policy = Callable[[np.ndarray], np.ndarray]
"""Maps one normalised observation (O,) to the action sent to the environment (D,)."""


def run_episode(env: gym.Env, policy: Policy, normalizer: ObsNormalizer, seed: int,
                should_abort: Callable[[], bool] = lambda: False) -> tuple[float, int] | None:
    """One episode with frozen normalisation; (true return, length), or None if `should_abort()`."""
    obs, _ = env.reset(seed=seed)
    total, length = 0.0, 0
    while True:
        if should_abort():
            return None
        action = policy(normalizer.normalize(np.asarray(obs, dtype=np.float32)))
        obs, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
        length += 1
        if terminated or truncated:
            return total, length


def eval_seeds(seed: int, first_index: int, count: int) -> Sequence[int]:
    """Seeds of evaluation episodes first_index..first_index+count-1; disjoint from training seeds."""
    return [seed + EVAL_SEED_OFFSET + first_index + i for i in range(count)]
