"""Wall time to a working Pendulum policy: our MPO against SB3's SAC, in the same run.

For each seed, both learners train on Pendulum-v1 and are evaluated every 500 env steps on the
same 10 deterministic episodes (the run's evaluation seeds); each stops at the first evaluation
whose mean return reaches the target (-200). Printed per seed: env steps and wall seconds to get
there (evaluation time included for both), then the median ratio ours/SAC of the wall times
(milestone: parity, <= 1; goal: <= 0.5). One torch thread each, CPU.

SAC uses rl-baselines3-zoo's Pendulum-v1 settings (hyperparams/sac.yml: learning_rate 1e-3, the
rest SB3's defaults: 256x256, batch 256, one update per step, learning after 100 steps).

    pip install -e '.[bench]'
    python bench/time_to_solve.py [--seeds 0 1 2] [--max-steps 20000] [--preset pendulum-mpo] \
        [--set network.policy_layer_sizes=[64,64] ...] [--to-the-end]

With --to-the-end both train on to --max-steps after solving (their wall times to solve are the
same) and their final policies' mean returns over the same 100 fixed episodes are printed: the
preset's other bar, >= -150 at 20k steps.
"""

from __future__ import annotations

import argparse
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

from rltui.commands import Stop
from rltui.engine import Engine, make_policy
from rltui.envs import EVAL_SEED_OFFSET, eval_seeds
from rltui.evaluation import evaluate
from rltui.events import EvalResult, Event
from rltui.presets import load_preset
from rltui.rundir import create_run_dir

TARGET = -200.0
EVAL_EVERY = 500
EPISODES = 10
# The final policy's return is measured on the same 100 episodes for every seed: a near-optimal
# policy scores from about 0 (starting upright) to about -360 (hanging still) per episode, so ten
# episodes' mean moves by tens with the starts drawn (-143, -166, -178 for seeds 0, 1, 2's sets).
FINAL_EPISODES = 100

Solved = tuple[int, float] | None  # (env steps, wall seconds) at the first evaluation >= TARGET


def run_ours(preset_name: str, overrides: list[str], seed: int, max_steps: int,
             to_the_end: bool) -> tuple[Solved, float | None]:
    """(when solved, None or with `to_the_end` the policy's mean return over FINAL_EPISODES after
    training on to max_steps)."""
    preset = load_preset(preset_name, [*overrides, f"train.total_steps={max_steps}", f"train.seed={seed}",
                                       f"eval.interval={EVAL_EVERY}", f"eval.episodes={EPISODES}",
                                       "checkpoint.interval=0", "train.device=cpu", "train.threads=1"])
    solved: list[tuple[int, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        engine = Engine(preset, create_run_dir(preset, Path(tmp)))

        def watch(event: Event) -> None:
            if not isinstance(event, EvalResult) or event.source != "scheduled":
                return
            if not solved and event.return_mean >= TARGET:
                solved.append((event.step, time.perf_counter() - start))
                if not to_the_end:
                    engine.submit(Stop(final_checkpoint=False))

        engine.subscribe(watch)
        engine.run()
    if not to_the_end:
        return (solved[0] if solved else None), None
    policy = make_policy(engine.agent, "mpo", engine.spec, deterministic=True)
    env = gym.make("Pendulum-v1")
    final = evaluate(env, policy, engine.obs_normalizer, [EVAL_SEED_OFFSET + i for i in range(FINAL_EPISODES)])
    env.close()
    return (solved[0] if solved else None), final.return_mean


def _evaluate(predict, seeds: list[int]) -> float:
    env = gym.make("Pendulum-v1")
    returns = []
    for episode_seed in seeds:
        obs, _ = env.reset(seed=episode_seed)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(predict(obs))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return float(np.mean(returns))


def run_sac(seed: int, max_steps: int, to_the_end: bool) -> tuple[Solved, float | None]:
    """Like `run_ours`, for SAC."""
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    seeds = list(eval_seeds(seed, 0, EPISODES))
    solved: list[tuple[int, float]] = []
    start = time.perf_counter()

    class EvaluateEvery(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % EVAL_EVERY or solved:
                return True
            mean = _evaluate(lambda obs: self.model.predict(obs, deterministic=True)[0], seeds)
            if mean >= TARGET:
                solved.append((self.num_timesteps, time.perf_counter() - start))
                return to_the_end
            return True

    model = SAC("MlpPolicy", gym.make("Pendulum-v1"), learning_rate=1e-3, seed=seed, device="cpu", verbose=0)
    model.learn(total_timesteps=max_steps, callback=EvaluateEvery())
    final = None
    if to_the_end:
        final_seeds = [EVAL_SEED_OFFSET + i for i in range(FINAL_EPISODES)]
        final = _evaluate(lambda obs: model.predict(obs, deterministic=True)[0], final_seeds)
    return (solved[0] if solved else None), final


def _shown(result: Solved) -> str:
    return f"{result[0]:>6,} steps {result[1]:7.1f} s" if result else "   not solved      "


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-steps", type=int, default=20_000)
    parser.add_argument("--preset", default="pendulum-mpo")
    parser.add_argument("--to-the-end", action="store_true",
                        help="train both on to --max-steps after solving and print their returns then, over "
                             "100 fixed episodes (the preset's bar: >= -150 at 20k steps)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="an override of our preset (repeatable), e.g. network.policy_layer_sizes=[64,64]")
    args = parser.parse_args()
    torch.set_num_threads(1)
    variant = " ".join(args.overrides) or "as shipped"
    print(f"Pendulum-v1 to an evaluation mean >= {TARGET:g} ({EPISODES} deterministic episodes every {EVAL_EVERY} "
          f"steps, at most {args.max_steps:,} steps); ours: {args.preset} ({variant}); SAC: rl-zoo settings")
    ratios, finals, sac_finals = [], [], []
    for seed in args.seeds:
        ours, final = run_ours(args.preset, args.overrides, seed, args.max_steps, args.to_the_end)
        sac, sac_final = run_sac(seed, args.max_steps, args.to_the_end)
        ratio = ours[1] / sac[1] if ours and sac else None
        if ratio is not None:
            ratios.append(ratio)
        ending = ""
        if final is not None and sac_final is not None:
            finals.append(final)
            sac_finals.append(sac_final)
            ending = (f" | at {args.max_steps:,} steps ({FINAL_EPISODES} episodes): "
                      f"ours {final:.1f}, SAC {sac_final:.1f}")
        print(f"seed {seed}: ours {_shown(ours)} | SAC {_shown(sac)} | wall ratio "
              f"{f'{ratio:.2f}' if ratio is not None else '-'}{ending}", flush=True)
    if ratios:
        print(f"median wall ratio ours/SAC: {statistics.median(ratios):.2f} over {len(ratios)} seed(s) "
              "(milestone <= 1, goal <= 0.5)")
    if finals:
        print(f"at {args.max_steps:,} steps, mean over the seeds: ours {statistics.fmean(finals):.1f} "
              f"(the preset's bar: >= -150 at 20k), SAC {statistics.fmean(sac_finals):.1f}")


if __name__ == "__main__":
    main()
