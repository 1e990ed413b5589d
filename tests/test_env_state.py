"""Training environments saved mid-episode continue bit for bit (Pendulum, MuJoCo); others say so."""

from __future__ import annotations

import importlib.util
import pickle
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from chain_env import ENV_ID as CHAIN_ID

from rltui.env_state import EnvStateError
from rltui.envs import TrainingEnvs


@dataclass(frozen=True)
class EnvCfg:
    id: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    num_envs: int = 2
    normalize_obs: bool = False
    normalize_reward: bool = False
    clip_obs: float = 10.0


def run(envs: TrainingEnvs, actions: np.ndarray) -> list[tuple]:
    """Step through `actions` (steps, n, D); everything each step returned."""
    out = []
    for step_actions in actions:
        r = envs.step(step_actions)
        out.append((r.obs.copy(), r.final_obs.copy(), r.rewards.copy(), r.terminated.copy(), r.truncated.copy(),
                    list(r.finished)))
    return out


def assert_same_trajectory(a: list[tuple], b: list[tuple]) -> None:
    assert len(a) == len(b)
    for step, (x, y) in enumerate(zip(a, b, strict=True)):
        for left, right in zip(x[:5], y[:5], strict=True):
            np.testing.assert_array_equal(left, right, err_msg=f"step {step}")
        assert x[5] == y[5], f"step {step}: finished episodes differ"


@pytest.mark.parametrize("env_id, kwargs, steps_before, steps_after", [
    ("Pendulum-v1", {"max_episode_steps": 30}, 17, 50),  # saved mid-episode, continues across two resets
    pytest.param("HalfCheetah-v5", {"max_episode_steps": 20}, 13, 30, marks=pytest.mark.skipif(
        importlib.util.find_spec("mujoco") is None, reason="needs the mujoco extra")),
])
def test_a_restored_env_continues_exactly(env_id, kwargs, steps_before, steps_after):
    config = EnvCfg(id=env_id, kwargs=kwargs)
    original = TrainingEnvs(config, seed=5)
    original.reset()
    rng = np.random.default_rng(0)
    shape = (original.num_envs, original.spec.act_dim)
    run(original, rng.uniform(-1, 1, (steps_before, *shape)).astype(np.float32))
    state = pickle.loads(pickle.dumps(original.state_dict()))  # plain values survive a round trip
    later_actions = rng.uniform(-1, 1, (steps_after, *shape)).astype(np.float32)
    expected = run(original, later_actions)

    copy = TrainingEnvs(config, seed=99)  # another seed: everything must come from the state
    copy.load_state_dict(state)
    assert_same_trajectory(run(copy, later_actions), expected)
    assert any(result[5] for result in expected)  # an episode ended after the restore: returns carried over


def test_an_env_of_unknown_kind_has_no_state():
    envs = TrainingEnvs(EnvCfg(id=CHAIN_ID), seed=0)
    envs.reset()
    assert envs.state_dict() is None


def test_a_state_that_does_not_fit_is_refused():
    pendulum = TrainingEnvs(EnvCfg(id="Pendulum-v1"), seed=0)
    pendulum.reset()
    state = pendulum.state_dict()
    with pytest.raises(EnvStateError):
        TrainingEnvs(EnvCfg(id="Pendulum-v1", num_envs=3), seed=0).load_state_dict(state)
    bad = {**state, "envs": [{**state["envs"][0], "dynamics": {"kind": "classic_control", "state": [1.0],
                                                                  "dtype": "float64"}}] * 2}
    with pytest.raises(EnvStateError, match="does not fit"):
        TrainingEnvs(EnvCfg(id="Pendulum-v1"), seed=0).load_state_dict(bad)
    wrong_kind = {**state, "envs": [{**state["envs"][0], "dynamics": {"kind": "mujoco", "integration_state": []}}] * 2}
    with pytest.raises(EnvStateError, match="does not fit"):
        TrainingEnvs(EnvCfg(id="Pendulum-v1"), seed=0).load_state_dict(wrong_kind)
