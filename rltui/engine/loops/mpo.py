"""MPO's loop: act, store the transition in replay, then `updates_per_step` updates per env step.

Once `update_after` env steps are done, every vector step adds `updates_per_step * num_envs` to
an update credit and each whole unit of credit is one update on a batch sampled from replay
(sequences of `retrace_steps` when `use_retrace`), normalised with the current observation
statistics. Pending updates run before the next env step, so a run stopped between two updates
of one step resumes exactly where it was.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rltui.checkpoint import Checkpoint
from rltui.engine.loops.base import Loop, LoopContext
from rltui.envs import EnvSpec, Policy
from rltui.replay import ReplayBuffer


class MPOLoop(Loop):
    algo = "mpo"

    def __init__(self, ctx: LoopContext) -> None:
        super().__init__(ctx)
        train = ctx.preset.train
        self.replay = ReplayBuffer(train.replay_size, ctx.envs.num_envs, ctx.spec.obs_dim, ctx.spec.act_dim)

    @staticmethod
    def agent_class() -> type:
        from agents.mpo import MPOAgent

        return MPOAgent

    @staticmethod
    def make_policy(agent: Any, spec: EnvSpec, deterministic: bool) -> Policy:
        def policy(obs: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                action = agent.act(obs, deterministic=deterministic)
            return np.asarray(action, dtype=np.float32).reshape(spec.act_dim)

        return policy

    def train(self, total_steps: int) -> None:
        ctx, counters = self.ctx, self.ctx.counters
        train, agent_settings = ctx.preset.train, ctx.preset.agent
        use_retrace, retrace_steps = bool(agent_settings["use_retrace"]), int(agent_settings["retrace_steps"])
        n, act_dim = ctx.envs.num_envs, ctx.spec.act_dim
        while True:
            while counters.update_credit >= 1.0:
                ctx.service()
                if use_retrace:
                    batch = self.replay.sample_sequences(train.batch_size, retrace_steps, ctx.sampler)
                else:
                    batch = self.replay.sample(train.batch_size, ctx.sampler)
                batch["obs"] = ctx.obs_normalizer.normalize(batch["obs"])
                batch["next_obs"] = ctx.obs_normalizer.normalize(batch["next_obs"])
                ctx.record_update(ctx.agent.update(batch))
                counters.update_credit -= 1.0
            if ctx.step >= total_steps:
                return
            ctx.service()
            obs = self.obs
            a_exec, a_raw, log_prob = ctx.agent.act_with_logp(ctx.obs_normalizer.normalize(obs), deterministic=False)
            a_exec = np.asarray(a_exec, dtype=np.float32).reshape(n, act_dim)
            result = ctx.envs.step(a_exec)
            self.replay.add(
                obs=obs,
                actions_exec=a_exec,
                actions_raw=np.asarray(a_raw, dtype=np.float32).reshape(n, act_dim),
                rewards=result.rewards,
                next_obs=result.final_obs,
                terminated=result.terminated,
                dones=result.dones,
                behaviour_log_probs=np.asarray(log_prob, dtype=np.float32).reshape(n),
            )
            self.observe(result.obs)
            ctx.env_stepped(result.finished)
            learning = ctx.step >= max(train.update_after, counters.warmup_until)
            if learning and (not use_retrace or self.replay.can_sample_sequences(retrace_steps)):
                counters.update_credit += train.updates_per_step * n

    # ---- checkpoints ------------------------------------------------------------------------
    def replay_to_save(self) -> ReplayBuffer | None:
        return self.replay if self.ctx.preset.checkpoint.save_replay else None

    def load_state_dict(self, state: dict[str, Any], checkpoint: Checkpoint) -> list[str]:
        if checkpoint.replay_path is not None:
            self.replay.load(checkpoint.replay_path)
            return []
        update_after = self.ctx.preset.train.update_after
        self.ctx.counters.warmup_until = self.ctx.step + update_after
        return [f"checkpoint {checkpoint.path.name} holds no replay buffer: refilling {update_after} "
                "steps before updating again"]

    def end_episodes(self, saved_obs: np.ndarray) -> None:
        self.replay.end_episodes()
