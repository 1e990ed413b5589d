"""Save and restore one gymnasium environment mid-episode, where we know how.

A checkpoint that holds its training environments' state lets a resumed run continue the very
episodes that were in progress, so it ends with the same weights as a run that never stopped.
What is saved (plain Python values, so checkpoints stay loadable with `weights_only=True`):

- the dynamics: `state` of gymnasium's classic-control environments (Pendulum,
  MountainCarContinuous, ...), MuJoCo's full integration state (`mj_getState` with
  `mjSTATE_INTEGRATION`: time, qpos, qvel, act, warm start, controls, applied forces, mocap);
- the environment's random generator (`np_random`), used by its resets;
- each `TimeLimit` wrapper's elapsed steps.

Anything else (Box2D worlds, third-party environments) is unknown: `capture` returns None and the
engine falls back to re-seeded environments (and says so once in the run log). MuJoCo tasks whose
rewards or observations read derived quantities of the previous step (contact forces, centres of
mass: Ant, Humanoid) continue from the same integration state but not bit for bit.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import TimeLimit

CLASSIC_CONTROL_MODULE = "gymnasium.envs.classic_control"


class EnvStateError(ValueError):
    """A saved environment state that does not fit this environment."""


def capture(env: gym.Env) -> dict[str, Any] | None:
    """The state of `env` (reset at least once) as plain Python values, or None if unknown."""
    base: Any = env.unwrapped
    dynamics = _capture_dynamics(base)
    if dynamics is None:
        return None
    return {
        "dynamics": dynamics,
        "np_random": base.np_random.bit_generator.state,
        "elapsed_steps": [wrapper._elapsed_steps for wrapper in _time_limits(env)],
    }


def restore(env: gym.Env, state: dict[str, Any]) -> None:
    """Put `env` (reset at least once, so its wrappers are ready) back into a captured state."""
    base: Any = env.unwrapped
    try:
        _restore_dynamics(base, state["dynamics"])
        base.np_random.bit_generator.state = state["np_random"]
        limits = _time_limits(env)
        elapsed = [int(steps) for steps in state["elapsed_steps"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise EnvStateError(f"environment state does not fit {_env_name(env)}: {exc}") from None
    if len(elapsed) != len(limits):
        raise EnvStateError(f"environment state has {len(elapsed)} time limits, {_env_name(env)} has {len(limits)}")
    for wrapper, steps in zip(limits, elapsed, strict=True):
        wrapper._elapsed_steps = steps


def _env_name(env: gym.Env) -> str:
    return env.spec.id if env.spec is not None else type(env.unwrapped).__name__


def _time_limits(env: gym.Env) -> list[Any]:
    """The TimeLimit wrappers around `env`, outermost first (typed Any: their step counter is private)."""
    found: list[Any] = []
    while isinstance(env, gym.Wrapper):
        if isinstance(env, TimeLimit):
            found.append(env)
        env = env.env
    return found


def _mujoco_env_class() -> type[Any] | None:
    try:
        from gymnasium.envs.mujoco.mujoco_env import MujocoEnv
    except ImportError:  # the mujoco extra is not installed
        return None
    return MujocoEnv


def _capture_dynamics(base: Any) -> dict[str, Any] | None:
    classic_control = type(base).__module__.startswith(CLASSIC_CONTROL_MODULE)
    if classic_control and isinstance(getattr(base, "state", None), np.ndarray):
        return {"kind": "classic_control", "state": base.state.tolist(), "dtype": str(base.state.dtype)}
    mujoco_env = _mujoco_env_class()
    if mujoco_env is not None and isinstance(base, mujoco_env):
        import mujoco

        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        values = np.empty(mujoco.mj_stateSize(base.model, spec), dtype=np.float64)
        mujoco.mj_getState(base.model, base.data, values, spec)
        return {"kind": "mujoco", "integration_state": values.tolist()}
    return None


def _restore_dynamics(base: Any, dynamics: dict[str, Any]) -> None:
    kind = dynamics["kind"]
    if kind == "classic_control":
        dtype = np.dtype(dynamics["dtype"])
        if dtype.kind != "f":
            raise ValueError(f"classic-control state of dtype {dtype} is not a float array")
        state = np.array(dynamics["state"], dtype=dtype)
        current = getattr(base, "state", None)
        if not isinstance(current, np.ndarray) or current.shape != state.shape:
            raise ValueError(f"classic-control state of shape {state.shape} does not fit")
        base.state = state
        return
    mujoco_env = _mujoco_env_class()
    if kind == "mujoco" and mujoco_env is not None and isinstance(base, mujoco_env):
        import mujoco

        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        values = np.array(dynamics["integration_state"], dtype=np.float64)
        if values.shape != (mujoco.mj_stateSize(base.model, spec),):
            raise ValueError(f"MuJoCo state of {values.size} values does not fit")
        mujoco.mj_setState(base.model, base.data, values, spec)
        return
    raise ValueError(f"a saved {kind!r} state does not fit this environment")
