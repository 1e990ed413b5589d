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


def test_end_episodes_marks_only_the_newest_row_of_every_env():
    buffer = ReplayBuffer(capacity=8, num_envs=2, obs_dim=1, act_dim=1)
    buffer.end_episodes()  # empty: nothing to mark
    assert not buffer._data["dones"].any()
    fill(buffer, 0, 5)  # wraps: the newest row is row 0
    buffer._data["dones"][...] = 0.0  # no episode ended so far
    buffer.end_episodes()
    np.testing.assert_array_equal(buffer._data["dones"][0], [1.0, 1.0])
    assert buffer._data["dones"][1:].sum() == 0
    sequences = buffer.sample_sequences(200, 2, np.random.default_rng(0))
    newest = sequences["rewards"][:, 1] >= 4  # windows that end in the marked row
    assert newest.any() and (sequences["dones"][newest, 1] == 1).all()


def test_sample_keeps_each_row_together_and_draws_from_every_env():
    buffer = ReplayBuffer(capacity=20, num_envs=2, obs_dim=2, act_dim=2)
    fill(buffer, 0, 10)
    batch = buffer.sample(400, np.random.default_rng(3))
    for key in ONE_STEP_KEYS:
        values = batch[key].reshape(400, -1)
        assert (values == batch["rewards"][:, None]).all(), key  # every field from the same (row, env)
    assert set(np.round((batch["rewards"] % 1) * 10)) == {0.0, 1.0}
    assert set(np.floor(batch["rewards"] + 1e-4)) == set(range(10))


def _saved(tmp_path, change) -> object:
    buffer = ReplayBuffer(10, 1, 2, 1)
    fill(buffer, 0, 3)
    path = tmp_path / "replay.npz"
    buffer.save(path)
    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files}
    change(arrays)
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("change, message", [
    (lambda a: a.update(format=np.array("something-else")), "not an rltui replay file"),
    (lambda a: a.pop("format"), "not an rltui replay file"),
    (lambda a: a.update(meta=np.array([10, 1, 2, 1], dtype=np.int64)), "bad meta record"),
    (lambda a: a.update(meta=np.array([10.0, 1, 2, 1, 3])), "bad meta record"),
    (lambda a: a.update(meta=np.array([10, 1, 2, 1, 11], dtype=np.int64)), "11 filled rows do not fit 10 rows"),
    (lambda a: a.update(meta=np.array([10, 1, 2, 1, -1], dtype=np.int64)), "-1 filled rows"),
    (lambda a: a.update(obs=a["obs"][:2]), r"field obs is float32 \(2, 1, 2\), expected float32 \(3, 1, 2\)"),
    (lambda a: a.update(dones=a["dones"].astype(np.float64)), "field dones is float64"),
    (lambda a: a.pop("rewards"), "unreadable replay file"),
])
def test_load_refuses_malformed_contents_and_keeps_the_buffer(tmp_path, change, message):
    path = _saved(tmp_path, change)
    buffer = ReplayBuffer(10, 1, 2, 1)
    with pytest.raises(ReplayError, match=message):
        buffer.load(path)
    assert len(buffer) == 0


def test_a_smaller_buffer_keeps_the_newest_rows(tmp_path):
    big = ReplayBuffer(10, 1, 2, 1)
    fill(big, 0, 7)
    big.save(tmp_path / "replay.npz")
    small = ReplayBuffer(4, 1, 2, 1)
    small.load(tmp_path / "replay.npz")
    assert len(small) == 4
    np.testing.assert_array_equal(np.sort(small._data["rewards"][:, 0]), [3, 4, 5, 6])
    assert small.sample_sequences(50, 4, np.random.default_rng(0))["rewards"][0].tolist() == [3, 4, 5, 6]


def test_tiny_and_empty_buffers():
    single = ReplayBuffer(capacity=1, num_envs=2, obs_dim=1, act_dim=1)  # fewer transitions than envs: one row
    assert single.rows == 1 and replay_bytes(1, 2, 1, 1) == sum(a.nbytes for a in single._data.values())
    with pytest.raises(ValueError, match="^cannot sample from an empty replay buffer$"):
        single.sample(4, np.random.default_rng(0))
    with pytest.raises(ValueError, match="need 2 stored steps per env to sample sequences, have 0"):
        single.sample_sequences(4, 2, np.random.default_rng(0))
    fill(single, 0, 1)
    assert single.sample(4, np.random.default_rng(0))["rewards"].shape == (4,)  # one row is enough


def test_an_empty_buffer_saves_and_loads(tmp_path):
    ReplayBuffer(10, 1, 2, 1).save(tmp_path / "replay.npz")
    restored = ReplayBuffer(10, 1, 2, 1)
    restored.load(tmp_path / "replay.npz")
    assert len(restored) == 0


class _Marker:
    """Unpickling this touches a file: proof that pickled code ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        from pathlib import Path

        return (Path.touch, (Path(self.path),))


def test_load_never_unpickles(tmp_path):
    path = _saved(tmp_path, lambda a: a.update(obs=np.array([_Marker(str(tmp_path / "ran"))], dtype=object)))
    with pytest.raises(ReplayError, match=r"unreadable replay file \(ValueError: Object arrays cannot be loaded"):
        ReplayBuffer(10, 1, 2, 1).load(path)
    assert not (tmp_path / "ran").exists()
