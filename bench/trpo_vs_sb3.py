"""Our TRPO against SB3-contrib's on Pendulum-v1 with matched settings, side by side.

Both learners: 2 envs x 1024 steps, gamma 0.9, gae_lambda 0.95, target_kl 0.01, 15 CG
iterations, damping 0.1, line search 0.8 x 10, 15 critic epochs at lr 1e-3 over minibatches
of 128, (64, 64) tanh networks, plain Gaussian noise (no gSDE: ours has none), one torch
thread, CPU. Both take the same number of environment steps and updates: --steps rounded up to
whole rollouts of 2048, which is what SB3-contrib's learn(--steps) does (ours would otherwise
stop mid-rollout and learn from one rollout fewer).

Per seed: both wall times and deterministic mean returns over the same evaluation episodes (the
first --episodes evaluation seeds, the same for every training seed: ten episodes' mean moves by
tens with the starts drawn); then the median wall-clock ratio ours / SB3-contrib (goal <= 0.4)
and each learner's mean return over the seeds with its standard error (goal >= -175). The return
varies by about 4 from one training seed to the next, so eight seeds are the default.

    pip install -e '.[bench]'
    python bench/trpo_vs_sb3.py [--steps 100000] [--seeds 0 1 2 3 4 5 6 7] [--episodes 100]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

# Run as a script, bench/ is first on sys.path and bench/agents.py would shadow the agents package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rltui.engine import Engine, make_policy
from rltui.envs import EVAL_SEED_OFFSET
from rltui.presets import load_preset
from rltui.rundir import create_run_dir


def evaluate(policy, seeds: list[int], normalize=lambda obs: obs) -> tuple[float, float]:
    env = gym.make("Pendulum-v1")
    returns = []
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy(normalize(obs)))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return float(np.mean(returns)), float(np.std(returns))


ROLLOUT = 2 * 1024  # pendulum-trpo's num_envs * rollout_steps, and the n_envs * n_steps given to SB3-contrib


def run_ours(steps: int, seed: int, seeds: list[int]) -> tuple[float, float, float]:
    preset = load_preset("pendulum-trpo", [f"train.total_steps={steps}", f"train.seed={seed}",
                                           "eval.interval=0", "checkpoint.interval=0", "train.device=cpu"])
    assert preset.env.num_envs * preset.train.rollout_steps == ROLLOUT
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        engine = Engine(preset, create_run_dir(preset, Path(tmp)))
        engine.run()
        wall = time.perf_counter() - start
    policy = make_policy(engine.agent, "trpo", engine.spec, deterministic=True)
    mean, std = evaluate(policy, seeds, engine.obs_normalizer.normalize)
    return wall, mean, std


def run_sb3(steps: int, seed: int, seeds: list[int]) -> tuple[float, float, float]:
    from sb3_contrib import TRPO
    from stable_baselines3.common.env_util import make_vec_env

    start = time.perf_counter()
    env = make_vec_env("Pendulum-v1", n_envs=2, seed=seed)
    model = TRPO(
        "MlpPolicy", env, n_steps=1024, batch_size=128, gamma=0.9, gae_lambda=0.95, target_kl=0.01,
        cg_max_steps=15, cg_damping=0.1, line_search_shrinking_factor=0.8, line_search_max_iter=10,
        n_critic_updates=15, learning_rate=1e-3, use_sde=False, seed=seed, device="cpu", verbose=0,
    )
    model.learn(total_timesteps=steps)
    wall = time.perf_counter() - start
    mean, std = evaluate(lambda obs: model.predict(obs, deterministic=True)[0], seeds)
    return wall, mean, std


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    parser.add_argument("--episodes", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = [EVAL_SEED_OFFSET + i for i in range(args.episodes)]
    steps = math.ceil(args.steps / ROLLOUT) * ROLLOUT
    print(f"Pendulum-v1, {steps:,} steps ({steps // ROLLOUT} updates) each; returns: the mean of the same "
          f"{args.episodes} deterministic episodes")
    print(f"{'seed':<5} {'ours s':>7} {'SB3 s':>7} {'ratio':>6} {'ours return':>18} {'SB3 return':>18}")
    ratios, returns, their_returns = [], [], []
    for seed in args.seeds:
        ours = run_ours(steps, seed, seeds)
        theirs = run_sb3(steps, seed, seeds)
        ratios.append(ours[0] / theirs[0])
        returns.append(ours[1])
        their_returns.append(theirs[1])
        print(f"{seed:<5} {ours[0]:>7.1f} {theirs[0]:>7.1f} {ratios[-1]:>6.2f} "
              f"{ours[1]:>9.1f} +- {ours[2]:<6.1f} {theirs[1]:>9.1f} +- {theirs[2]:<6.1f}", flush=True)
    print(f"median wall-clock ratio (ours / SB3-contrib): {statistics.median(ratios):.2f}  (goal <= 0.4)")
    print(f"mean return over the seeds: ours {mean_and_error(returns)} (goal >= -175), "
          f"SB3-contrib {mean_and_error(their_returns)}")


def mean_and_error(values: list[float]) -> str:
    """'mean +- standard error of the mean' over the seeds."""
    error = np.std(values, ddof=1) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return f"{np.mean(values):.1f} +- {error:.1f}"


if __name__ == "__main__":
    main()
