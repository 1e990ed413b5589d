"""Run directories with a deterministic, recorded history (fixed times, smooth curves), for the
compare view and the runs browser: preset.toml as `rltui train` writes it, and a metrics.jsonl
written through the run log's own writer.

Returns rise like a learning curve whose height and noise depend on the seed, so runs of one
preset differing only by their seed look alike but not the same.
"""

from __future__ import annotations

import math
from pathlib import Path

from conftest import tiny_preset

from rltui.events import EpisodeFinished, EvalResult, Event, RunStarted, RunState, StateChanged, UpdateMetrics
from rltui.rundir import write_preset
from rltui.runlog import RunLogWriter

T0 = 1_700_000_000.0
STEPS_PER_S = {"mpo": 50.0, "trpo": 200.0}  # MPO is the slower one per step, as in life


def _metrics(algo: str, step: int, seed: int) -> dict[str, float]:
    u = step / 1000.0
    if algo == "mpo":
        return {
            "loss/q": 40.0 * math.exp(-u / (2 + seed)) + 1.0,
            "kl/nonparametric": 0.08 + 0.01 * math.sin(u + seed),
            "kl/mean": 0.004 * (1 + 0.5 * math.sin(u)),
            "kl/std": 0.0005 * (1 + 0.5 * math.cos(u)),
            "dual/temperature": 5.0 * math.exp(-u / 2) + 0.1 * seed + 0.05,
            "dual/alpha_mean": 1.0 + u,
            "dual/alpha_std": 50.0 * math.exp(-u) + 1.0,
            "perf/steps_per_s": STEPS_PER_S[algo],
        }
    return {
        "policy/kl": 0.008 + 0.002 * math.sin(u + seed),
        "policy/line_search_frac": 1.0,
        "policy/step_norm": 0.3 + 0.05 * seed,
        "loss/value": 300.0 * math.exp(-u / 2) + 5.0,
        "value/explained_variance": 1.0 - math.exp(-u / (1 + seed)),
        "perf/steps_per_s": STEPS_PER_S[algo],
    }


def curve(algo: str, step: int, seed: int) -> float:
    """The evaluation return of a recorded run at `step` (the episodes' returns wobble around it)."""
    ceiling = -150.0 - 40.0 * seed if algo == "mpo" else -600.0 - 60.0 * seed
    return -1400.0 + (1400.0 + ceiling) * (1 - math.exp(-step / 1500.0))


def recorded_events(run_dir: Path, algo: str, seed: int, steps: int, total_steps: int,
                    end: RunState | None, name: str) -> list[Event]:
    rate = STEPS_PER_S[algo]

    def t(step: int) -> float:
        return T0 + 1000.0 * seed + step / rate

    events: list[Event] = [
        RunStarted(0, name=name, algo=algo, env_id="Pendulum-v1", device="cpu", total_steps=total_steps,
                   run_dir=str(run_dir), agent_settings={"kl_epsilon": 0.1} if algo == "mpo" else {"target_kl": 0.01},
                   time=t(0)),
        StateChanged(0, state=RunState.RUNNING, time=t(0)),
    ]
    for step in range(100, steps + 1, 100):
        if step % 200 == 0:
            noise = 60.0 * math.sin(step * 0.37 + seed)
            events.append(EpisodeFinished(step, episode_return=curve(algo, step, seed) + noise, episode_length=200,
                                          time=t(step)))
        events.append(UpdateMetrics(step, updates=step // 4, metrics=_metrics(algo, step, seed), time=t(step)))
        if step % 1000 == 0:
            events.append(EvalResult(step, return_mean=curve(algo, step, seed), return_std=15.0 + seed,
                                     length_mean=200.0, episodes=5, returns=(curve(algo, step, seed),) * 5,
                                     time=t(step)))
    if end is not None:
        message = "training failed: ValueError: boom" if end is RunState.FAILED else ""
        events.append(StateChanged(steps, state=end, message=message, time=t(steps)))
    return events


def record_run(saves: Path, dir_name: str, algo: str = "mpo", seed: int = 0, steps: int = 4000,
               total_steps: int = 4000, end: RunState | None = RunState.FINISHED) -> Path:
    """saves/dir_name with preset.toml (the tiny preset of `algo` with `seed`) and a recorded log;
    `end` None leaves the log as a killed run leaves it (its last state RUNNING)."""
    run_dir = saves / dir_name
    run_dir.mkdir(parents=True)
    preset = tiny_preset(algo, {"train": {"seed": seed, "total_steps": total_steps}})
    write_preset(run_dir, preset)
    writer = RunLogWriter(run_dir / "metrics.jsonl")
    try:
        for event in recorded_events(run_dir, algo, seed, steps, total_steps, end, preset.name):
            writer(event)
    finally:
        writer.close()
    return run_dir
