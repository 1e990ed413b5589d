"""TRPO's rollout buffer: the batch it assembles (GAE inputs by hand), cutting episodes on a resume
that cannot continue them, and its checkpoint round trip with every malformed field refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rltui.rollout import RolloutBuffer, RolloutError

GAMMA, LAMBDA = 0.9, 0.8


def filled(steps: int = 3, horizon: int = 3) -> RolloutBuffer:
    """2 envs, obs (2,), actions (1,); every value tells its step t and env i.

    env 0 is truncated at t=1 (V(final obs) = 50), env 1 terminates at t=0.
    """
    buffer = RolloutBuffer(horizon, num_envs=2, obs_dim=2, act_dim=1)
    for t in range(steps):
        ids = np.array([10.0 * t, 10.0 * t + 1])
        buffer.add(obs=np.stack([ids, -ids], axis=1), actions=(ids + 0.5)[:, None], log_probs=-ids,
                   values=ids / 100 + 1, rewards=ids / 10, terminated=np.array([False, t == 0]),
                   truncated=np.array([t == 1, False]), final_values=np.array([50.0, 0.0]) if t == 1 else None)
    return buffer


def gae_by_hand(rewards, values, next_values, terminated, dones) -> tuple[np.ndarray, np.ndarray]:
    """Per env, backwards: A_t = delta_t + gamma lambda (1 - done_t) A_{t+1}."""
    steps, envs = rewards.shape
    advantages = np.zeros((steps, envs))
    for i in range(envs):
        following = 0.0
        for t in reversed(range(steps)):
            delta = rewards[t, i] + GAMMA * (1 - terminated[t, i]) * next_values[t, i] - values[t, i]
            following = delta + GAMMA * LAMBDA * (1 - dones[t, i]) * following
            advantages[t, i] = following
    return advantages, advantages + values


def test_the_batch_bootstraps_from_next_values_final_values_and_the_last_observation():
    buffer = filled()
    batch = buffer.batch(last_values=np.array([7.0, 8.0]), gamma=GAMMA, gae_lambda=LAMBDA)
    values = np.array([[1.0, 1.01], [1.1, 1.11], [1.2, 1.21]])
    rewards = np.array([[0.0, 0.1], [1.0, 1.1], [2.0, 2.1]])
    terminated = np.array([[0, 1], [0, 0], [0, 0]])
    dones = np.array([[0, 1], [1, 0], [0, 0]])
    next_values = np.array([[1.1, 1.11],   # the next step's value
                            [50.0, 1.21],  # env 0: V(final observation) at its truncation
                            [7.0, 8.0]])   # the last step: V(the observations after it)
    advantages, returns = gae_by_hand(rewards, values, next_values, terminated, dones)
    np.testing.assert_allclose(batch["advantages"], advantages.reshape(-1), rtol=1e-6)
    np.testing.assert_allclose(batch["returns"], returns.reshape(-1), rtol=1e-6)
    # Rows in (step, env) order, raw actions and log-probs as stored.
    np.testing.assert_array_equal(batch["obs"][:, 0], [0, 1, 10, 11, 20, 21])
    np.testing.assert_array_equal(batch["obs"][:, 1], [0, -1, -10, -11, -20, -21])
    np.testing.assert_array_equal(batch["actions"][:, 0], [0.5, 1.5, 10.5, 11.5, 20.5, 21.5])
    np.testing.assert_array_equal(batch["log_probs"], [0, -1, -10, -11, -20, -21])
    assert {key: value.dtype for key, value in batch.items()} == dict.fromkeys(batch, np.float32)


def test_full_and_clear():
    buffer = filled(steps=2)
    assert buffer.length == 2 and not buffer.full
    buffer.add(obs=np.zeros((2, 2)), actions=np.zeros((2, 1)), log_probs=np.zeros(2), values=np.zeros(2),
               rewards=np.zeros(2), terminated=np.zeros(2, bool), truncated=np.zeros(2, bool), final_values=None)
    assert buffer.full
    buffer.clear()
    assert buffer.length == 0 and not buffer.full


def test_end_episodes_truncates_the_running_envs_at_the_last_step():
    buffer = filled(steps=1)  # env 1 terminated at t=0, env 0 still running
    buffer.end_episodes(np.array([33.0, 44.0]))
    state = buffer.state_dict()
    np.testing.assert_array_equal(state["truncated"][0].numpy(), [True, False])
    np.testing.assert_array_equal(state["terminated"][0].numpy(), [False, True])
    np.testing.assert_array_equal(state["final_values"][0].numpy(), [33.0, 0.0])
    batch = buffer.batch(last_values=np.array([1000.0, 1000.0]), gamma=GAMMA, gae_lambda=LAMBDA)
    # env 0 bootstraps from 33 (not from the 1000 of a new episode); env 1 from nothing
    np.testing.assert_allclose(batch["advantages"], [0.0 + GAMMA * 33.0 - 1.0, 0.1 - 1.01], rtol=1e-6)
    truncated_before = filled(steps=2)  # env 0 was already truncated at t=1: it stays so, with its value
    truncated_before.end_episodes(np.array([33.0, 44.0]))
    state = truncated_before.state_dict()
    np.testing.assert_array_equal(state["truncated"].numpy(), [[False, False], [True, True]])  # only the last step
    np.testing.assert_array_equal(state["final_values"][1].numpy(), [50.0, 44.0])
    empty = RolloutBuffer(3, 2, 2, 1)
    empty.end_episodes(np.zeros(2))
    assert empty.length == 0


def test_state_round_trip_and_a_longer_saved_rollout_is_kept_whole():
    saved = filled(steps=3, horizon=4).state_dict()
    assert saved["obs"].shape == (3, 2, 2) and saved["truncated"].dtype == torch.bool
    same = RolloutBuffer(4, 2, 2, 1)
    same.load_state_dict(saved)
    assert same.length == 3 and not same.full
    for key, value in same.state_dict().items():
        assert torch.equal(value, saved[key]), key
    same.add(obs=np.zeros((2, 2)), actions=np.zeros((2, 1)), log_probs=np.zeros(2), values=np.zeros(2),
             rewards=np.zeros(2), terminated=np.zeros(2, bool), truncated=np.zeros(2, bool), final_values=None)
    assert same.full  # room for the whole horizon
    shorter = RolloutBuffer(2, 2, 2, 1)  # the horizon was lowered on resume
    shorter.load_state_dict(saved)
    assert shorter.length == 3 and shorter.full
    np.testing.assert_array_equal(shorter.batch(np.zeros(2), GAMMA, LAMBDA)["log_probs"],
                                  filled(steps=3).batch(np.zeros(2), GAMMA, LAMBDA)["log_probs"])


@pytest.mark.parametrize("damage, message", [
    (lambda s: s.pop("values"), "saved rollout has fields"),
    (lambda s: s.update(extra=torch.zeros(3)), "saved rollout has fields"),
    (lambda s: s.update(values=[1.0, 2.0]), "field values is not an array"),
    (lambda s: s.update(values=torch.tensor(1.0)), "field values is not an array"),
    (lambda s: s.update(values=torch.zeros(3, 2, dtype=torch.float64)), "field values is float64"),
    (lambda s: s.update(values=torch.zeros(4, 2)), r"field values is float32 \(4, 2\), expected float32 \(3, 2\)"),
    (lambda s: s.update(obs=torch.zeros(3, 2, 5)), r"field obs is float32 \(3, 2, 5\)"),
    (lambda s: s.update(truncated=torch.zeros(3, 2)), "field truncated is float32"),
])
def test_a_saved_rollout_that_does_not_fit_is_refused(damage, message):
    state = filled().state_dict()
    damage(state)
    buffer = RolloutBuffer(3, 2, 2, 1)
    with pytest.raises(RolloutError, match=message):
        buffer.load_state_dict(state)
    assert buffer.length == 0


def test_actions_of_several_dimensions_stay_rows_of_the_batch():
    buffer = RolloutBuffer(2, num_envs=3, obs_dim=4, act_dim=2)
    for t in range(2):
        buffer.add(obs=np.full((3, 4), t), actions=np.arange(6.0).reshape(3, 2) + 10 * t, log_probs=np.zeros(3),
                   values=np.zeros(3), rewards=np.zeros(3), terminated=np.zeros(3, bool),
                   truncated=np.zeros(3, bool), final_values=None)
    batch = buffer.batch(np.zeros(3), GAMMA, LAMBDA)
    assert batch["obs"].shape == (6, 4) and batch["actions"].shape == (6, 2)
    np.testing.assert_array_equal(batch["actions"][5], [14.0, 15.0])  # step 1, env 2
