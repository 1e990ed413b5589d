"""Replay ring buffer: wrap-around, sequences that never cross the write head, npz round trip."""

from __future__ import annotations

import numpy as np
import pytest

from rltui.replay import FIELDS, ONE_STEP_KEYS, ReplayBuffer, ReplayError, replay_bytes


def fill(buffer: ReplayBuffer, start: int, count: int) -> None:
    """Rows whose every field encodes the global step t (and env e as t + 0.1 * e)."""
    n = buffer.num_envs
    for t in range(start, start + count):
        value = t + 0.1 * np.arange(n, dtype=np.float32)
        row = {}
        for key in FIELDS:
            shape = (n, buffer.obs_dim) if key in ("obs", "next_obs") else (n, buffer.act_dim) if "actions" in key else (n,)
            row[key] = np.broadcast_to(value.reshape(n, *([1] * (len(shape) - 1))), shape)
        buffer.add(**row)


def test_ring_wraps_and_keeps_newest():
    buffer = ReplayBuffer(capacity=20, num_envs=2, obs_dim=3, act_dim=1)
    assert buffer.rows == 10
    fill(buffer, 0, 25)
    assert len(buffer) == 20
    batch = buffer.sample(500, np.random.default_rng(0))
    assert set(batch) == set(ONE_STEP_KEYS)
    assert batch["obs"].shape == (500, 3) and batch["rewards"].shape == (500,)
    steps = np.floor(batch["rewards"] + 1e-4)
    assert steps.min() == 15 and steps.max() == 24
    assert batch["obs"].dtype == np.float32


@pytest.mark.parametrize("written", [7, 10, 13, 37])
def test_sequences_are_consecutive_and_never_cross_the_head(written):
    buffer = ReplayBuffer(capacity=20, num_envs=2, obs_dim=2, act_dim=1)
    fill(buffer, 0, written)
    rng = np.random.default_rng(written)
    batch = buffer.sample_sequences(400, 4, rng)
    assert set(batch) == set(FIELDS)
    assert batch["obs"].shape == (400, 4, 2) and batch["dones"].shape == (400, 4)
    steps = np.floor(batch["rewards"] + 1e-4)
    env = np.round((batch["rewards"] - steps) * 10)
    assert (np.diff(steps, axis=1) == 1).all()  # consecutive in time: no jump over the head
    assert (env == env[:, :1]).all()  # one environment per sequence
    assert steps.min() >= max(0, written - 10) and steps.max() <= written - 1
    assert steps[:, 0].max() == written - 4  # the newest full window is reachable


def test_npz_round_trip_without_pickle(tmp_path):
    buffer = ReplayBuffer(capacity=12, num_envs=3, obs_dim=2, act_dim=2)
    fill(buffer, 0, 6)
    path = tmp_path / "replay.npz"
    buffer.save(path)
    with np.load(path, allow_pickle=False) as data:
        assert data["obs"].shape == (4, 3, 2)  # only the filled rows, oldest first
    restored = ReplayBuffer(capacity=12, num_envs=3, obs_dim=2, act_dim=2)
    restored.load(path)
    assert len(restored) == len(buffer)
    a = buffer.sample_sequences(50, 3, np.random.default_rng(1))
    b = restored.sample_sequences(50, 3, np.random.default_rng(1))
    for key in FIELDS:
        np.testing.assert_array_equal(a[key], b[key])
    fill(buffer, 6, 1)
    fill(restored, 6, 1)
    np.testing.assert_array_equal(buffer.sample_sequences(30, 4, np.random.default_rng(2))["obs"],
                                  restored.sample_sequences(30, 4, np.random.default_rng(2))["obs"])


def test_load_rejects_foreign_and_mismatched_files(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ReplayError, match="unreadable"):
        ReplayBuffer(10, 1, 2, 1).load(bad)
    good = tmp_path / "good.npz"
    buffer = ReplayBuffer(10, 1, 2, 1)
    fill(buffer, 0, 3)
    buffer.save(good)
    with pytest.raises(ReplayError, match="do not match"):
        ReplayBuffer(10, 1, 3, 1).load(good)


def test_replay_bytes_matches_the_allocated_arrays() -> None:
    buffer = ReplayBuffer(capacity=1001, num_envs=2, obs_dim=5, act_dim=3)
    assert replay_bytes(1001, 2, 5, 3) == sum(array.nbytes for array in buffer._data.values())
