"""TRPO learns Pendulum-v1 through the shipped Engine and the shipped pendulum-trpo preset.

The preset follows rl-zoo's SB3-contrib TRPO settings (2 envs x 1024 steps, gamma 0.9, GAE 0.95,
target KL 0.01, value lr 1e-3); here 60k of its 100k steps. Pendulum episodes always end by
time-limit truncation, so this also exercises bootstrapping from V(final observation).
"""

from __future__ import annotations

import numpy as np
import pytest

from rltui.engine import Engine
from rltui.events import EpisodeFinished, EvalResult, Event, RunState
from rltui.presets import load_preset
from rltui.rundir import create_run_dir

EPISODES_COMPARED = 10


@pytest.mark.timeout(300)
def test_trpo_improves_pendulum_return_by_300_within_60k_steps(tmp_path) -> None:
    preset = load_preset("pendulum-trpo", ["train.total_steps=60000", "train.seed=0", "train.device=\"cpu\"",
                                           "train.threads=1", "eval.interval=60000", "eval.episodes=5",
                                           "checkpoint.interval=0"])
    engine = Engine(preset, create_run_dir(preset, tmp_path))
    events: list[Event] = []
    engine.subscribe(events.append)
    engine.run()
    assert engine.state == RunState.FINISHED
    returns = [e.episode_return for e in events if isinstance(e, EpisodeFinished)]
    assert len(returns) >= 2 * EPISODES_COMPARED
    early = float(np.mean(returns[:EPISODES_COMPARED]))
    late = float(np.mean(returns[-EPISODES_COMPARED:]))
    assert late - early >= 300.0, f"mean return went from {early:.0f} to {late:.0f}"
    final = [e for e in events if isinstance(e, EvalResult)]
    assert final and final[-1].return_mean > early + 300.0  # the deterministic policy is better too
