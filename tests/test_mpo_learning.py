"""MPO learns Pendulum-v1 through the shipped Engine and the shipped pendulum-mpo preset.

Smaller networks (64x64) and faster learning rates than the preset (Acme's dual learning rate
1e-2, network learning rates 1e-3) keep the test short; everything else (the loop, replay,
batches, evaluation) is what `rltui train pendulum-mpo` runs.
"""

from __future__ import annotations

import pytest

from rltui.commands import Stop
from rltui.engine import Engine
from rltui.events import EvalResult, Event, RunState
from rltui.presets import load_preset
from rltui.rundir import create_run_dir

TARGET_RETURN = -400.0
OVERRIDES = [
    "train.total_steps=8000", "train.seed=0", "train.device=\"cpu\"", "train.threads=1",
    "network.policy_layer_sizes=[64, 64]", "network.critic_layer_sizes=[64, 64]",
    "mpo.q_lr=1e-3", "mpo.policy_lr=1e-3", "mpo.temperature_lr=1e-2", "mpo.lambda_lr=1e-2",
    "eval.interval=1000", "eval.episodes=5", "checkpoint.interval=0",
]


@pytest.mark.timeout(300)
def test_mpo_solves_pendulum_within_8k_steps(tmp_path) -> None:
    preset = load_preset("pendulum-mpo", OVERRIDES)
    engine = Engine(preset, create_run_dir(preset, tmp_path))
    evaluations: list[EvalResult] = []

    def stop_once_solved(event: Event) -> None:
        if isinstance(event, EvalResult):
            evaluations.append(event)
            if event.step >= 4000 and event.return_mean >= TARGET_RETURN:
                engine.submit(Stop(final_checkpoint=False))

    engine.subscribe(stop_once_solved)
    engine.run()
    assert engine.state == RunState.FINISHED
    curve = [(e.step, round(e.return_mean)) for e in evaluations]
    assert max(e.return_mean for e in evaluations) >= TARGET_RETURN, curve
    assert evaluations[0].return_mean < -900, curve  # it did learn: the policy at 1k steps is poor
