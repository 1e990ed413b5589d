"""Environments: flattening, truncation bookkeeping, true returns, frozen normalisation, seeds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from rltui import envs
from rltui.envs import EnvError, ObsNormalizer, RewardNormalizer, TrainingEnvs, make_env, run_episode


@dataclass(frozen=True)
class EnvCfg:
    id: str = "Pendulum-v1"
    kwargs: dict[str, Any] = field(default_factory=dict)
    num_envs: int = 1
    normalize_obs: bool = True
    normalize_reward: bool = False
    clip_obs: float = 10.0


class DictObsEnv(gym.Env):
    observation_space = gym.spaces.Dict({"a": gym.spaces.Box(-1, 1, (2,)), "b": gym.spaces.Box(-1, 1, (3,))})
    action_space = gym.spaces.Box(-1, 1, (1,))

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 1.0, False, False, {}


def test_dict_observations_are_flattened():
    gym.register("RltuiDictObs-v0", entry_point=DictObsEnv, max_episode_steps=3)
    env = make_env(EnvCfg(id="RltuiDictObs-v0"))
    assert env.observation_space.shape == (5,)


def test_unknown_id_and_missing_mujoco_are_one_line_errors(monkeypatch):
    with pytest.raises(EnvError) as bad:
        make_env(EnvCfg(id="Pendulumm-v1"))
    assert "Pendulumm-v1" in str(bad.value) and "\n" not in str(bad.value)
    real = envs.importlib.util.find_spec
    monkeypatch.setattr(envs.importlib.util, "find_spec", lambda name: None if name == "mujoco" else real(name))
    with pytest.raises(EnvError, match=r"mujoco extra"):
        make_env(EnvCfg(id="HalfCheetah-v5"))


def test_truncation_reports_final_obs_and_true_returns():
    cfg = EnvCfg(kwargs={"max_episode_steps": 5}, num_envs=2)
    vec = TrainingEnvs(cfg, seed=3)
    reference = gym.make("Pendulum-v1", max_episode_steps=5)
    ref_obs, _ = reference.reset(seed=3)
    obs = vec.reset()
    np.testing.assert_allclose(obs[0], ref_obs)
    actions = np.full((2, 1), 0.5, dtype=np.float32)
    ref_return = 0.0
    for _ in range(5):
        result = vec.step(actions)
        ref_obs, ref_reward, ref_term, ref_trunc, _ = reference.step(actions[0])
        ref_return += ref_reward
        np.testing.assert_allclose(result.final_obs[0], ref_obs, rtol=1e-6)
    assert result.truncated.all() and not result.terminated.any()
    assert not np.allclose(result.obs[0], result.final_obs[0])  # obs is already the next reset
    assert [f[0] for f in result.finished] == [0, 1]
    assert result.finished[0][1] == pytest.approx(ref_return, rel=1e-5)
    assert result.finished[0][2] == 5
    vec.close()


def test_obs_normalizer_updates_on_training_only_and_round_trips():
    norm = ObsNormalizer(3, enabled=True, clip_obs=5.0)
    rng = np.random.default_rng(0)
    norm.update(rng.normal(3.0, 2.0, size=(1000, 3)))
    before = norm.state_dict()
    env = make_env(EnvCfg(kwargs={"max_episode_steps": 20}))
    result = run_episode(env, lambda o: np.zeros(1, dtype=np.float32), norm, seed=envs.eval_seeds(0, 0, 1)[0])
    assert result is not None and result[1] == 20
    assert norm.state_dict() == before  # frozen for evaluation
    np.testing.assert_allclose(norm.stats.mean, [2.797, 3.057, 2.942], atol=1e-3)
    assert np.abs(norm.normalize(np.full(3, 1e6))).max() == 5.0
    other = ObsNormalizer(3, enabled=True, clip_obs=5.0)
    other.load_state_dict(before)
    np.testing.assert_allclose(other.normalize(np.ones(3)), norm.normalize(np.ones(3)))
    assert ObsNormalizer(3, enabled=False, clip_obs=5.0).normalize(np.full(3, 7.0)).tolist() == [7.0] * 3


def test_reward_normalizer_scales_by_discounted_return_std():
    rng = np.random.default_rng(1)
    norm = RewardNormalizer(num_envs=2, gamma=0.9)
    rewards = rng.normal(0.0, 10.0, size=(3000, 2))
    for r in rewards:
        scaled = norm(r, np.array([False, False]))
    # the discounted return of iid N(0, 10^2) rewards has std 10 / sqrt(1 - 0.9^2) ~ 22.9
    assert np.sqrt(norm.stats.var) == pytest.approx(22.9, rel=0.15)
    np.testing.assert_allclose(scaled, rewards[-1] / np.sqrt(norm.stats.var + 1e-8), rtol=1e-5)


def test_eval_seeds_disjoint_from_training():
    assert min(envs.eval_seeds(7, 0, 10)) >= 7 + envs.EVAL_SEED_OFFSET
