"""What the engine feeds the agents, checked against what the environment really did.

The runs use `RltuiChain-v0` (tests/chain_env.py): deterministic, two environments, episodes that
alternately terminate and truncate, and a log of every true transition in each environment. The
tests compare the replay rows, the MPO batches (1-step and Retrace windows), the TRPO GAE inputs
and update batches with that log and with independent computations (torch.distributions for
log-probabilities, the value network called directly, moment sums for the reward normaliser).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from chain_env import ENV_ID, Transition
from conftest import tiny_preset
from torch.distributions import Normal

import agents.trpo
from rltui.engine import Engine
from rltui.events import RunState
from rltui.rundir import create_run_dir

pytestmark = pytest.mark.timeout(120)

NUM_ENVS = 2


def chain_engine(tmp_path: Path, algo: str, **overrides: dict) -> Engine:
    sections: dict[str, dict] = {
        "env": {"id": ENV_ID, "num_envs": NUM_ENVS, "normalize_obs": False},
        "eval": {"interval": 0},
        "checkpoint": {"interval": 0},
    }
    for section, values in overrides.items():
        sections[section] = {**sections.get(section, {}), **values}
    if algo == "trpo":
        sections["env"].setdefault("normalize_reward", False)
    preset = tiny_preset(algo, sections)
    return Engine(preset, create_run_dir(preset, tmp_path))


def env_logs(engine: Engine) -> list[list[Transition]]:
    """The true transitions of each training environment, in order."""
    return [env.unwrapped.transitions for env in engine._envs._envs]


def stacked(log: list[Transition]) -> dict[str, np.ndarray]:
    return {
        "obs": np.stack([t.obs for t in log]),
        "actions_exec": np.stack([t.action for t in log]),
        "rewards": np.array([t.reward for t in log], dtype=np.float32),
        "next_obs": np.stack([t.next_obs for t in log]),
        "terminated": np.array([t.terminated for t in log], dtype=np.float32),
        "dones": np.array([t.terminated or t.truncated for t in log], dtype=np.float32),
        "truncated": np.array([t.truncated for t in log], dtype=bool),
    }


def policy_log_prob(policy: torch.nn.Module, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """log pi(a|s) summed over action dims, from the policy's (mean, log_std) through torch.distributions."""
    with torch.no_grad():
        mean, log_std = policy(torch.as_tensor(obs, dtype=torch.float32))
        return Normal(mean, log_std.exp()).log_prob(torch.as_tensor(actions)).sum(-1).numpy()


def normalise(obs: np.ndarray, mean: np.ndarray, var: np.ndarray, clip: float) -> np.ndarray:
    return np.clip((obs - mean) / np.sqrt(var + 1e-8), -clip, clip).astype(np.float32)


# ------------------------------------------------------------------------------------------ MPO


def test_mpo_replay_rows_are_the_true_transitions(tmp_path):
    engine = chain_engine(tmp_path, "mpo", train={"total_steps": 60, "update_after": 1000, "replay_size": 5000})
    engine.run()
    assert engine.state == RunState.FINISHED and engine.counters.updates == 0  # the policy never changed
    data = {key: values[:30] for key, values in engine.loop.replay._data.items()}
    assert len(engine.loop.replay) == 60
    for column, log in enumerate(env_logs(engine)):
        assert len(log) == 30
        true = stacked(log)
        assert true["terminated"].any() and true["truncated"].any()  # both ways of ending happened
        for key in ("obs", "actions_exec", "rewards", "next_obs", "terminated", "dones"):
            np.testing.assert_array_equal(data[key][:, column].reshape(true[key].shape), true[key], err_msg=key)

    raw, executed = data["actions_raw"], data["actions_exec"]
    np.testing.assert_array_equal(np.clip(raw, -1.0, 1.0), executed)
    assert (np.abs(raw) > 1.0).any(), "no sample left the bounds: the raw/executed check would be empty"
    expected = policy_log_prob(engine.agent.policy, data["obs"].reshape(-1, 3), raw.reshape(-1, 1))
    np.testing.assert_allclose(data["behaviour_log_probs"].reshape(-1), expected, rtol=1e-5, atol=1e-5)


def _record_batches(engine: Engine) -> list[tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]]:
    """Wrap agent.update: each call's batch and the observation statistics it was normalised with."""
    calls = []
    real_update = engine.agent.update

    def update(batch):
        stats = engine.obs_normalizer.stats
        calls.append(({k: np.array(v, copy=True) for k, v in batch.items()}, stats.mean.copy(), stats.var.copy()))
        return real_update(batch)

    engine.agent.update = update
    return calls


def _all_transitions(engine: Engine) -> dict[str, np.ndarray]:
    logs = [stacked(log) for log in env_logs(engine)]
    return {key: np.concatenate([log[key] for log in logs]) for key in logs[0]}


def test_mpo_one_step_batches_pair_each_observation_with_its_own_transition(tmp_path):
    engine = chain_engine(
        tmp_path, "mpo", env={"normalize_obs": True},
        train={"total_steps": 120, "update_after": 32, "batch_size": 32, "updates_per_step": 0.5},
    )
    calls = _record_batches(engine)
    engine.run()
    assert len(calls) == engine.counters.updates > 20
    true = _all_transitions(engine)
    clip = engine.preset.env.clip_obs
    for batch, mean, var in calls[:3] + calls[-3:]:
        assert set(batch) >= {"obs", "actions_exec", "rewards", "next_obs", "terminated"}
        candidates_obs = normalise(true["obs"], mean, var, clip)
        candidates_next = normalise(true["next_obs"], mean, var, clip)
        for row in range(batch["obs"].shape[0]):
            match = (
                np.all(np.isclose(candidates_obs, batch["obs"][row], atol=1e-6), axis=1)
                & np.all(np.isclose(candidates_next, batch["next_obs"][row], atol=1e-6), axis=1)
                & np.all(true["actions_exec"] == batch["actions_exec"][row], axis=1)
                & (true["rewards"] == batch["rewards"][row])
                & (true["terminated"] == batch["terminated"][row])
            )
            assert match.any(), f"batch row {row} is no true transition: { {k: v[row] for k, v in batch.items()} }"


def test_mpo_retrace_windows_are_consecutive_steps_of_one_environment(tmp_path):
    engine = chain_engine(
        tmp_path, "mpo",
        train={"total_steps": 120, "update_after": 32, "batch_size": 32, "updates_per_step": 0.5},
        mpo={"use_retrace": True, "retrace_steps": 3},
    )
    calls = _record_batches(engine)
    engine.run()
    assert calls
    logs = [stacked(log) for log in env_logs(engine)]
    windows_crossing_an_end = 0
    for batch, _, _ in calls[:3] + calls[-3:]:
        assert batch["obs"].shape == (32, 3, 3) and batch["dones"].shape == (32, 3)
        for w in range(32):
            window = {key: batch[key][w] for key in ("obs", "actions_exec", "rewards", "next_obs", "terminated", "dones")}
            found = False
            for log in logs:
                for start in np.flatnonzero(np.all(log["obs"] == window["obs"][0], axis=1)):
                    rows = slice(start, start + 3)
                    if start + 3 <= len(log["obs"]) and all(
                        np.array_equal(log[key][rows].reshape(window[key].shape), window[key]) for key in window
                    ):
                        found = True
            assert found, f"window {w} is not 3 consecutive true steps of one environment: {window}"
            windows_crossing_an_end += bool(window["dones"][:-1].any())
    assert windows_crossing_an_end > 0  # the dones inside windows were checked too


# ------------------------------------------------------------------------------------------ TRPO


class _GaeSpy:
    """Stands in for agents.trpo.compute_gae: records its inputs and V(s) of the logged transitions."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.calls: list[dict] = []
        self._real = agents.trpo.compute_gae

    def __call__(self, rewards, values, next_values, terminated, dones, gamma, gae_lambda):
        self.calls.append({
            "rewards": np.array(rewards), "values": np.array(values), "next_values": np.array(next_values),
            "terminated": np.array(terminated), "dones": np.array(dones), "gamma": gamma, "gae_lambda": gae_lambda,
            "value_net": {k: v.clone() for k, v in self.engine.agent.value.state_dict().items()},
        })
        return self._real(rewards, values, next_values, terminated, dones, gamma, gae_lambda)


def _value_of(engine: Engine, state: dict, obs: np.ndarray) -> np.ndarray:
    """V(obs) with the value network as it was (state), computed by torch, not the rollout snapshot."""
    current = {k: v.clone() for k, v in engine.agent.value.state_dict().items()}
    engine.agent.value.load_state_dict(state)
    try:
        with torch.no_grad():
            return engine.agent.value(torch.as_tensor(obs)).squeeze(-1).numpy()
    finally:
        engine.agent.value.load_state_dict(current)


def test_trpo_gae_inputs_bootstrap_from_the_true_next_observation(tmp_path, monkeypatch):
    horizon = 7
    engine = chain_engine(tmp_path, "trpo", train={"total_steps": NUM_ENVS * horizon * 3, "rollout_steps": horizon},
                          trpo={"gamma": 0.9, "gae_lambda": 0.8})
    spy = _GaeSpy(engine)
    monkeypatch.setattr(agents.trpo, "compute_gae", spy)
    updates = []
    real_update = engine.agent.update

    def update(batch):
        numpy_batch = {k: v.cpu().numpy().copy() for k, v in batch.items()}
        numpy_batch["expected_log_probs"] = policy_log_prob(engine.agent.policy, numpy_batch["obs"], numpy_batch["actions"])
        updates.append(numpy_batch)
        return real_update(batch)

    engine.agent.update = update
    engine.run()
    assert len(spy.calls) == len(updates) == 3
    logs = [stacked(log) for log in env_logs(engine)]
    assert any(log["truncated"].any() for log in logs) and any(log["terminated"].any() for log in logs)
    for k, (call, batch) in enumerate(zip(spy.calls, updates, strict=True)):
        assert (call["gamma"], call["gae_lambda"]) == (0.9, 0.8)
        rows = slice(k * horizon, (k + 1) * horizon)
        for i, log in enumerate(logs):
            np.testing.assert_array_equal(call["rewards"][:, i], log["rewards"][rows])
            np.testing.assert_array_equal(call["terminated"][:, i], log["terminated"][rows])
            np.testing.assert_array_equal(call["dones"][:, i], log["dones"][rows])
            np.testing.assert_allclose(call["values"][:, i], _value_of(engine, call["value_net"], log["obs"][rows]),
                                       rtol=1e-5, atol=1e-5)
            # Every step that did not terminate bootstraps from V(true next observation): the next step's
            # value inside an episode, V(final observation) at a truncation, V(current obs) at the end.
            live = log["terminated"][rows] == 0
            expected_next = _value_of(engine, call["value_net"], log["next_obs"][rows])
            np.testing.assert_allclose(call["next_values"][live, i], expected_next[live], rtol=1e-5, atol=1e-5)
        # The update batch: raw actions (the env got their clipped copy) with their own log-probs.
        executed = np.stack([log["actions_exec"][rows] for log in logs], axis=1).reshape(-1, 1)
        np.testing.assert_array_equal(np.clip(batch["actions"], -1.0, 1.0), executed)
        np.testing.assert_array_equal(batch["obs"], np.stack([log["obs"][rows] for log in logs], axis=1).reshape(-1, 3))
        np.testing.assert_allclose(batch["log_probs"], batch["expected_log_probs"], rtol=1e-5, atol=1e-5)
    assert any((np.abs(batch["actions"]) > 1.0).any() for batch in updates)


def test_trpo_rewards_are_scaled_by_the_discounted_return_that_restarts_each_episode(tmp_path, monkeypatch):
    horizon, gamma = 7, 0.9
    engine = chain_engine(tmp_path, "trpo", env={"normalize_reward": True},
                          train={"total_steps": NUM_ENVS * horizon * 4, "rollout_steps": horizon},
                          trpo={"gamma": gamma})
    spy = _GaeSpy(engine)
    monkeypatch.setattr(agents.trpo, "compute_gae", spy)
    engine.run()
    logs = [stacked(log) for log in env_logs(engine)]
    rewards = np.stack([log["rewards"] for log in logs], axis=1)  # (steps, envs)
    dones = np.stack([log["dones"] for log in logs], axis=1).astype(bool)

    # Independent: discounted returns per env, restarted after each episode end; the scale is the
    # standard deviation of every return so far, pooled with the normaliser's prior (mean 0, var 1,
    # weight 1e-4).
    returns_so_far: list[float] = []
    running = np.zeros(NUM_ENVS)
    expected = np.empty_like(rewards)
    for t in range(rewards.shape[0]):
        running = running * gamma + rewards[t]
        returns_so_far.extend(running)
        values = np.array(returns_so_far)
        count = 1e-4 + values.size
        mean = values.sum() / count
        var = (1e-4 + np.square(values).sum()) / count - mean**2
        expected[t] = np.clip(rewards[t] / np.sqrt(var + 1e-8), -10.0, 10.0)
        running[dones[t]] = 0.0
    fed = np.concatenate([call["rewards"] for call in spy.calls])
    np.testing.assert_allclose(fed, expected, rtol=1e-4, atol=1e-6)
