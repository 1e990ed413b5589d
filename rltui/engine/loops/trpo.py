"""TRPO's loop: fill a rollout of `rollout_steps` per env, then one update on it.

Actions come from a numpy snapshot of the networks (`agents.trpo.RolloutActor`, taken once per
rollout); the raw sample is stored, the environment gets its clipped copy. Rewards are scaled by
the running std of the discounted return when `[env] normalize_reward`. The rollout survives
checkpoints (`rltui.rollout`), so a resumed run fills up the very rollout that was interrupted;
a run that reaches its total mid-rollout keeps that rollout for a resume instead of learning from it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rltui.checkpoint import Checkpoint
from rltui.engine.loops.base import Loop, LoopContext
from rltui.envs import EnvSpec, Policy, RewardNormalizer
from rltui.rollout import RolloutBuffer


class TRPOLoop(Loop):
    algo = "trpo"

    def __init__(self, ctx: LoopContext) -> None:
        super().__init__(ctx)
        n, spec = ctx.envs.num_envs, ctx.spec
        self.rollout = RolloutBuffer(ctx.preset.train.rollout_steps, n, spec.obs_dim, spec.act_dim)
        self.reward_normalizer = (
            RewardNormalizer(n, ctx.preset.agent["gamma"]) if ctx.preset.env.normalize_reward else None
        )

    @staticmethod
    def agent_class() -> type:
        from agents.trpo import TRPOAgent

        return TRPOAgent

    @staticmethod
    def make_policy(agent: Any, spec: EnvSpec, deterministic: bool) -> Policy:
        def policy(obs: np.ndarray) -> np.ndarray:
            action, _, _ = agent.act(obs[None], deterministic=deterministic)
            return np.clip(action[0].cpu().numpy(), spec.action_low, spec.action_high)

        return policy

    def train(self, total_steps: int) -> None:
        from agents.trpo import RolloutActor

        ctx, rollout, normalize = self.ctx, self.rollout, self.ctx.obs_normalizer.normalize
        gamma, gae_lambda = ctx.preset.agent["gamma"], ctx.preset.agent["gae_lambda"]
        low, high = ctx.spec.action_low, ctx.spec.action_high
        while True:
            actor = RolloutActor(ctx.agent, ctx.sampler)  # the policy is fixed until the next update
            while not rollout.full:
                if ctx.step >= total_steps:
                    return
                ctx.service()
                obs_norm = normalize(self.obs)
                action, log_prob, value = actor.act(obs_norm)
                result = ctx.envs.step(np.clip(action, low, high))
                rewards = result.rewards
                if self.reward_normalizer is not None:
                    rewards = self.reward_normalizer(rewards, result.dones)
                truncated = result.truncated & ~result.terminated
                final_values = None
                if truncated.any():  # V(final observation): GAE bootstraps through the time limit
                    final_values = actor.values(normalize(result.final_obs))
                rollout.add(obs=obs_norm, actions=action, log_probs=log_prob, values=value, rewards=rewards,
                            terminated=result.terminated, truncated=truncated, final_values=final_values)
                self.observe(result.obs)
                ctx.env_stepped(result.finished)
            ctx.service()
            batch = rollout.batch(actor.values(normalize(self.obs)), gamma, gae_lambda)
            rollout.clear()
            device = ctx.agent.device
            ctx.record_update(ctx.agent.update({k: torch.from_numpy(v).to(device) for k, v in batch.items()}))

    # ---- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "rollout": self.rollout.state_dict(),
            "reward_normalizer": None if self.reward_normalizer is None else self.reward_normalizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any], checkpoint: Checkpoint) -> list[str]:
        if state.get("rollout") is not None:  # (checkpoints written before rollouts were kept have none)
            self.rollout.load_state_dict(state["rollout"])
        if self.reward_normalizer is not None and state.get("reward_normalizer") is not None:
            self.reward_normalizer.load_state_dict(state["reward_normalizer"])
        return []

    def end_episodes(self, saved_obs: np.ndarray) -> None:
        from agents.trpo import RolloutActor

        if self.reward_normalizer is not None:
            self.reward_normalizer.end_episodes()
        actor = RolloutActor(self.ctx.agent, self.ctx.sampler)
        self.rollout.end_episodes(actor.values(self.ctx.obs_normalizer.normalize(saved_obs)))
