"""TRPO's rollout storage: `horizon` vector steps, filled one step at a time, kept across checkpoints.

Layout: every array is (steps, num_envs, ...). Per step the engine adds the normalised observation
it acted on, the RAW action (the environment got its clipped copy), log pi_old(a|s), V(s), the
(possibly scaled) reward, and how the step ended. Where an episode was truncated, V(final
observation) is stored with the step so GAE can bootstrap through the time limit.

A rollout cut short by a checkpoint is saved as it is (`state_dict`) and filled up after a resume,
so a stopped and resumed run learns from the same batches as one that never stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

import agents.trpo

FLOAT_FIELDS = ("obs", "actions", "log_probs", "values", "rewards", "final_values")
BOOL_FIELDS = ("terminated", "truncated")


def rollout_bytes(horizon: int, num_envs: int, obs_dim: int, act_dim: int,
                  policy_layer_sizes: Sequence[int], value_epochs: int) -> int:
    """About the most bytes a rollout of `horizon` steps of `num_envs` environments takes: its
    buffer, plus the larger of the update's two phases per sample. The policy step keeps about four
    floats per hidden unit for the Fisher-vector products' double backward; the value regression
    shuffles every epoch's copy of the observations and returns at once. (The update's measured peak
    growth per sample, T = 131,072, 15 value epochs: 2,205 bytes for Pendulum with (64, 64) layers
    and 8,371 with (256, 256); 15,948 for 376 observations and 17 actions with 10 value epochs. This
    counts 2,080, 8,224 and 16,668, and the buffer on top: 34 bytes for Pendulum, 1,590 for those.)"""
    samples = horizon * num_envs
    floats = np.dtype(np.float32).itemsize
    buffer = (obs_dim + act_dim + len(FLOAT_FIELDS) - 2) * floats + len(BOOL_FIELDS)
    batch = obs_dim + act_dim + 4  # the update's own copy: obs, actions, log-probs, returns, two advantages
    policy_step = 4 * sum(policy_layer_sizes) + batch
    value_regression = value_epochs * (obs_dim + 1) + batch
    return samples * (buffer + floats * max(policy_step, value_regression))


class RolloutError(ValueError):
    """A saved rollout that does not fit this buffer."""


class RolloutBuffer:
    def __init__(self, horizon: int, num_envs: int, obs_dim: int, act_dim: int) -> None:
        self.horizon = horizon
        self.num_envs = num_envs
        self._shapes = {
            "obs": (obs_dim,), "actions": (act_dim,), "log_probs": (), "values": (), "rewards": (),
            "final_values": (), "terminated": (), "truncated": (),
        }
        self._data = self._allocate(horizon)
        self.length = 0

    def _allocate(self, steps: int) -> dict[str, np.ndarray]:
        return {
            key: np.zeros((steps, self.num_envs, *shape), dtype=bool if key in BOOL_FIELDS else np.float32)
            for key, shape in self._shapes.items()
        }

    @property
    def full(self) -> bool:
        return self.length >= self.horizon

    def add(self, *, obs: np.ndarray, actions: np.ndarray, log_probs: np.ndarray, values: np.ndarray,
            rewards: np.ndarray, terminated: np.ndarray, truncated: np.ndarray,
            final_values: np.ndarray | None) -> None:
        """One vector step; `truncated` excludes terminated envs; `final_values` (n,) V(final obs)
        where truncated (None when no env was)."""
        t = self.length
        row = self._data
        row["obs"][t], row["actions"][t], row["log_probs"][t] = obs, actions, log_probs
        row["values"][t], row["rewards"][t] = values, rewards
        row["terminated"][t], row["truncated"][t] = terminated, truncated
        row["final_values"][t] = 0.0 if final_values is None else final_values
        self.length += 1

    def end_episodes(self, final_values: np.ndarray) -> None:
        """Cut every episode still running at the last stored step as if truncated there, with
        `final_values` (n,) the values of the true next observations. Used when a resumed run
        cannot continue the saved episodes."""
        if self.length == 0:
            return
        t = self.length - 1
        running = ~(self._data["terminated"][t] | self._data["truncated"][t])
        self._data["truncated"][t] |= running
        self._data["final_values"][t] = np.where(running, final_values, self._data["final_values"][t])

    def batch(self, last_values: np.ndarray, gamma: float, gae_lambda: float) -> dict[str, np.ndarray]:
        """The update batch, (steps * n, ...) float32: obs, actions, log_probs, returns, advantages.

        `last_values` (n,) are V(s) of the observations after the last stored step; GAE bootstraps
        from them, from the next step's values inside the rollout, and from V(final observation)
        where an episode was truncated; only termination stops the bootstrap.
        """
        steps, data = self.length, self._data
        values = data["values"][:steps]
        truncated, terminated = data["truncated"][:steps], data["terminated"][:steps]
        next_values = np.empty_like(values)
        next_values[:-1] = values[1:]
        next_values[-1] = last_values
        next_values[truncated] = data["final_values"][:steps][truncated]
        advantages, returns = agents.trpo.compute_gae(
            data["rewards"][:steps], values, next_values, terminated, terminated | truncated, gamma, gae_lambda
        )
        return {
            "obs": data["obs"][:steps].reshape(steps * self.num_envs, -1),
            "actions": data["actions"][:steps].reshape(steps * self.num_envs, -1),
            "log_probs": data["log_probs"][:steps].reshape(-1),
            "returns": returns.reshape(-1),
            "advantages": advantages.reshape(-1),
        }

    def clear(self) -> None:
        self.length = 0

    def state_dict(self) -> dict[str, Any]:
        """The stored steps as tensors (checkpoint-safe)."""
        return {key: torch.from_numpy(values[: self.length].copy()) for key, values in self._data.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the contents with a saved rollout; one longer than the horizon is kept whole
        (the next update then uses it as it is). Raises RolloutError when it does not fit."""
        if set(state) != set(self._shapes):
            raise RolloutError(f"saved rollout has fields {sorted(state)}, expected {sorted(self._shapes)}")
        arrays = {}
        for key in self._shapes:
            value = state[key]
            if not isinstance(value, torch.Tensor) or value.ndim == 0:
                raise RolloutError(f"saved rollout field {key} is not an array")
            arrays[key] = value.numpy()
        steps = arrays["obs"].shape[0]
        for key, shape in self._shapes.items():
            expected_shape = (steps, self.num_envs, *shape)
            expected_dtype = np.dtype(bool if key in BOOL_FIELDS else np.float32)
            if arrays[key].shape != expected_shape or arrays[key].dtype != expected_dtype:
                raise RolloutError(f"saved rollout field {key} is {arrays[key].dtype} {arrays[key].shape}, "
                                   f"expected {expected_dtype} {expected_shape}")
        if steps > self._data["obs"].shape[0]:
            self._data = self._allocate(steps)
        for key, array in arrays.items():
            self._data[key][:steps] = array
        self.length = steps
