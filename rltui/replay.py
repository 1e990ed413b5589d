"""Preallocated ring buffer of MPO transitions, with 1-step and sequence (Retrace) sampling.

Layout: every array has shape (rows, num_envs, ...): one row per vector step, one column per training
environment, so a column read in row order is one environment's stream of transitions. Sequences of
length L are L consecutive rows of one column, taken in write order (oldest to newest), so they never
cross the write head. They may cross episode boundaries; `dones` marks where an episode ended (by
termination or truncation) so the learner ignores what follows.

Observations are stored raw; the engine normalises sampled batches with the current statistics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

FIELDS = ("obs", "actions_exec", "actions_raw", "rewards", "next_obs", "terminated", "dones", "behaviour_log_probs")
ONE_STEP_KEYS = ("obs", "actions_exec", "actions_raw", "rewards", "next_obs", "terminated")
_FORMAT = "rltui-replay-1"


class ReplayError(Exception):
    """A replay file that cannot be used; str() is a one-line message."""


def replay_bytes(capacity: int, num_envs: int, obs_dim: int, act_dim: int) -> int:
    """Bytes the arrays of a `ReplayBuffer(capacity, num_envs, obs_dim, act_dim)` occupy."""
    rows = max(1, capacity // num_envs)
    values_per_transition = 2 * obs_dim + 2 * act_dim + 4  # obs, next_obs, two actions, 4 scalars
    return rows * num_envs * values_per_transition * np.dtype(np.float32).itemsize


class ReplayBuffer:
    def __init__(self, capacity: int, num_envs: int, obs_dim: int, act_dim: int) -> None:
        """`capacity` transitions in total, i.e. capacity // num_envs rows."""
        self.rows = max(1, capacity // num_envs)
        self.num_envs = num_envs
        self.obs_dim = obs_dim
        self.act_dim = act_dim
        shapes = {
            "obs": (obs_dim,), "next_obs": (obs_dim,), "actions_exec": (act_dim,), "actions_raw": (act_dim,),
            "rewards": (), "terminated": (), "dones": (), "behaviour_log_probs": (),
        }
        self._data = {k: np.zeros((self.rows, num_envs, *shapes[k]), dtype=np.float32) for k in FIELDS}
        self._head = 0  # next row to write
        self._filled = 0  # rows holding data

    def __len__(self) -> int:
        """Number of stored transitions."""
        return self._filled * self.num_envs

    def add(self, **row: np.ndarray) -> None:
        """Store one vector step: each field (num_envs, ...) as named in FIELDS."""
        for key in FIELDS:
            self._data[key][self._head] = row[key]
        self._head = (self._head + 1) % self.rows
        self._filled = min(self._filled + 1, self.rows)

    def _oldest_row(self) -> int:
        return self._head if self._filled == self.rows else 0

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """1-step batch: ONE_STEP_KEYS, each (B, ...) float32."""
        if self._filled == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        rows = rng.integers(0, self._filled, size=batch_size)
        cols = rng.integers(0, self.num_envs, size=batch_size)
        return {k: self._data[k][rows, cols] for k in ONE_STEP_KEYS}

    def can_sample_sequences(self, length: int) -> bool:
        return self._filled >= length

    def sample_sequences(self, batch_size: int, length: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Sequence batch: every field (B, L, ...) float32, L consecutive steps of one env, never across the head."""
        if not self.can_sample_sequences(length):
            raise ValueError(f"need {length} stored steps per env to sample sequences, have {self._filled}")
        starts = rng.integers(0, self._filled - length + 1, size=batch_size)  # logical, oldest = 0
        rows = (self._oldest_row() + starts[:, None] + np.arange(length)[None, :]) % self.rows  # (B, L)
        cols = np.broadcast_to(rng.integers(0, self.num_envs, size=batch_size)[:, None], rows.shape)
        return {k: self._data[k][rows, cols] for k in FIELDS}

    def save(self, path: Path) -> None:
        """Write the filled rows in logical order to an .npz (no pickled objects)."""
        order = (self._oldest_row() + np.arange(self._filled)) % self.rows
        meta = np.array([self.rows, self.num_envs, self.obs_dim, self.act_dim, self._filled], dtype=np.int64)
        arrays: dict[str, Any] = {"format": np.array(_FORMAT), "meta": meta}
        arrays.update((k, self._data[k][order]) for k in FIELDS)
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)

    def end_episodes(self) -> None:
        """Mark the newest row of every env as an episode end (`dones`), so no sequence joins it to
        what is added next. For a resume that cannot continue the saved episodes: the stored
        next_obs stay the true successors, so 1-step samples of those rows are still right."""
        if self._filled:
            self._data["dones"][(self._head - 1) % self.rows] = 1.0

    def load(self, path: Path) -> None:
        """Replace the contents with a file written by `save` for the same shapes. Raises ReplayError."""
        try:
            with np.load(path, allow_pickle=False) as data:
                if "format" not in data.files or str(data["format"]) != _FORMAT:
                    raise ReplayError(f"{path}: not an rltui replay file")
                meta = data["meta"]
                if meta.shape != (5,) or meta.dtype != np.int64:
                    raise ReplayError(f"{path}: bad meta record")
                rows, num_envs, obs_dim, act_dim, filled = (int(v) for v in meta)
                if (num_envs, obs_dim, act_dim) != (self.num_envs, self.obs_dim, self.act_dim):
                    raise ReplayError(
                        f"{path}: replay shapes (envs {num_envs}, obs {obs_dim}, act {act_dim}) do not match "
                        f"(envs {self.num_envs}, obs {self.obs_dim}, act {self.act_dim})"
                    )
                if not 0 <= filled <= rows:
                    raise ReplayError(f"{path}: {filled} filled rows do not fit {rows} rows")
                keep = min(filled, self.rows)  # a smaller buffer keeps the newest rows
                arrays = {}
                for key in FIELDS:
                    array = data[key]
                    expected = (filled, *self._data[key].shape[1:])
                    if array.shape != expected or array.dtype != np.float32:
                        raise ReplayError(
                            f"{path}: field {key} is {array.dtype} {array.shape}, expected float32 {expected}"
                        )
                    arrays[key] = array[filled - keep:]
        except ReplayError:
            raise
        except Exception as exc:  # zip/npy format errors, missing keys, truncation
            raise ReplayError(f"{path}: unreadable replay file ({type(exc).__name__}: {exc})") from None
        for key in FIELDS:
            self._data[key][:keep] = arrays[key]
        self._filled = keep
        self._head = keep % self.rows
