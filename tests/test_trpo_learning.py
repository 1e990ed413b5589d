"""TRPO learns Pendulum-v1: a minimal on-policy rollout loop of its own (the engine may replace it).

Settings follow rl-zoo's TRPO Pendulum-v1 choices (2 envs x 1024 steps, gamma 0.9, GAE 0.95,
target KL 0.01, several value epochs at lr 1e-3). Pendulum episodes always end by time-limit
truncation, so this also exercises bootstrapping from V(final observation).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.trpo import TRPOAgent, compute_gae

NUM_ENVS = 2
ROLLOUT_STEPS = 1024  # per env: 2048 samples per update
TOTAL_STEPS = 60_000
EPISODES_COMPARED = 10


def train_pendulum(seed: int, total_steps: int = TOTAL_STEPS) -> list[float]:
    """Train TRPO on Pendulum-v1 for `total_steps` env steps; the returns of finished episodes."""
    torch.manual_seed(seed)
    envs = [gym.make("Pendulum-v1") for _ in range(NUM_ENVS)]
    obs_dim = envs[0].observation_space.shape[0]
    act_dim = envs[0].action_space.shape[0]
    agent = TRPOAgent(
        obs_dim,
        act_dim,
        envs[0].action_space.low,
        envs[0].action_space.high,
        torch.device("cpu"),
        policy_layer_sizes=(64, 64),
        critic_layer_sizes=(64, 64),
        gamma=0.9,
        gae_lambda=0.95,
        target_kl=0.01,
        value_lr=1e-3,
        value_epochs=10,
        value_minibatch_size=256,
    )
    obs = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]).astype(np.float32)
    episode_return = np.zeros(NUM_ENVS)
    finished_returns: list[float] = []

    shape = (ROLLOUT_STEPS, NUM_ENVS)
    for _ in range(total_steps // (ROLLOUT_STEPS * NUM_ENVS)):
        buf_obs = np.zeros((*shape, obs_dim), np.float32)
        buf_actions = np.zeros((*shape, act_dim), np.float32)
        buf_log_probs = np.zeros(shape, np.float32)
        buf_values = np.zeros(shape, np.float32)
        buf_rewards = np.zeros(shape, np.float32)
        buf_terminated = np.zeros(shape, np.float32)
        buf_dones = np.zeros(shape, np.float32)
        final_values: dict[tuple[int, int], float] = {}  # (t, env) -> V(final obs) where episodes ended
        for t in range(ROLLOUT_STEPS):
            actions, log_probs, values = agent.act(torch.from_numpy(obs))
            buf_obs[t], buf_actions[t] = obs, actions.numpy()
            buf_log_probs[t], buf_values[t] = log_probs.squeeze(-1).numpy(), values.squeeze(-1).numpy()
            env_actions = agent.env_action(actions)
            for i, env in enumerate(envs):
                next_obs, reward, terminated, truncated, _ = env.step(env_actions[i])
                buf_rewards[t, i], buf_terminated[t, i] = reward, float(terminated)
                episode_return[i] += reward
                if terminated or truncated:
                    buf_dones[t, i] = 1.0
                    final_values[t, i] = agent.act(torch.from_numpy(next_obs.astype(np.float32)))[2].item()
                    finished_returns.append(float(episode_return[i]))
                    episode_return[i] = 0.0
                    next_obs, _ = env.reset()
                obs[i] = next_obs
        # next_values[t] = V(s_{t+1}): the next stored value, the last one from the current obs,
        # and V(final observation) wherever an episode ended.
        buf_next_values = np.empty(shape, np.float32)
        buf_next_values[:-1] = buf_values[1:]
        buf_next_values[-1] = agent.act(torch.from_numpy(obs))[2].squeeze(-1).numpy()
        for (t, i), value in final_values.items():
            buf_next_values[t, i] = value
        advantages, returns = compute_gae(
            buf_rewards, buf_values, buf_next_values, buf_terminated, buf_dones, agent.gamma, agent.gae_lambda
        )
        agent.update(
            {
                "obs": buf_obs.reshape(-1, obs_dim),
                "actions": buf_actions.reshape(-1, act_dim),
                "log_probs": buf_log_probs.reshape(-1),
                "returns": returns.reshape(-1),
                "advantages": advantages.reshape(-1),
            }
        )
    return finished_returns


@pytest.mark.timeout(300)
def test_trpo_improves_pendulum_return_by_300_within_60k_steps() -> None:
    torch.set_num_threads(1)
    returns = train_pendulum(seed=0)
    assert len(returns) >= 2 * EPISODES_COMPARED
    early = float(np.mean(returns[:EPISODES_COMPARED]))
    late = float(np.mean(returns[-EPISODES_COMPARED:]))
    assert late - early >= 300.0, f"mean return went from {early:.0f} to {late:.0f}"
