"""Resume means what it says: exact continuation, overrides that apply or are refused, finished runs.

A run stopped at any step (mid-episode, mid-rollout, between two updates of one env step) and
resumed ends with bitwise the same weights, optimiser moments, duals, normalisers and replay as a run
that never stopped. Overrides on resume reach the restored optimisers or are refused with nothing
in the run directory changed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from chain_env import ENV_ID as CHAIN_ID
from conftest import tiny_preset

from rltui import checkpoint as ckpt
from rltui.commands import Stop
from rltui.engine import Engine
from rltui.events import Event, RunState, WarningRaised
from rltui.presets import apply_overrides
from rltui.resume import ResumeError
from rltui.rundir import create_run_dir

pytestmark = pytest.mark.timeout(180)


def assert_same(a, b, where: str = "") -> None:
    """Bitwise equality of nested state (tensors, arrays, containers, numbers)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and np.array_equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def final_state(engine: Engine) -> dict:
    state = {
        "agent": engine.agent.state_dict(),
        "counters": vars(engine.counters),
        "obs_normalizer": engine.obs_normalizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
    }
    replay = getattr(engine.loop, "replay", None)
    if replay is not None:
        state["replay"] = {key: values[: replay._filled].copy() for key, values in replay._data.items()}
    state["loop"] = engine.loop.state_dict()  # TRPO: the rollout and the reward normaliser
    return state


def run_to(preset, run_dir: Path | None, saves: Path, total: int, resume: bool = False) -> Engine:
    preset = apply_overrides(preset, [f"train.total_steps={total}"])
    engine = Engine(preset, run_dir if resume else create_run_dir(preset, saves), resume=resume)
    engine.run()
    assert engine.state == RunState.FINISHED, engine.state
    return engine


def record(engine: Engine) -> list[Event]:
    events: list[Event] = []
    engine.subscribe(events.append)
    return events


def warnings_in(events: list[Event]) -> list[str]:
    return [e.message for e in events if isinstance(e, WarningRaised)]


# ----------------------------------------------------------------------------- exact continuation


@pytest.mark.parametrize("algo, first_leg, total", [
    ("mpo", 250, 500),    # Pendulum episodes are 200 steps: stopped mid-episode, resumed across episodes
    ("trpo", 250, 600),   # 2 envs x 50-step rollouts: stopped half-way through the third rollout
])
def test_stopped_and_resumed_equals_uninterrupted(tmp_path, algo, first_leg, total):
    preset = tiny_preset(algo)
    straight = final_state(run_to(preset, None, tmp_path / "a", total))

    first = run_to(preset, None, tmp_path / "b", first_leg)
    if algo == "trpo":
        assert 0 < first.loop.rollout.length < first.loop.rollout.horizon  # the partial rollout is in the checkpoint
    resumed = Engine(apply_overrides(preset, [f"train.total_steps={total}"]), first.run_dir, resume=True)
    events = record(resumed)
    resumed.run()
    assert resumed.state == RunState.FINISHED and warnings_in(events) == []
    assert_same(final_state(resumed), straight)


def test_stop_between_the_updates_of_one_env_step_resumes_exactly(tmp_path):
    preset = tiny_preset("mpo", {"train": {"updates_per_step": 2.0, "update_after": 150}})
    straight = final_state(run_to(preset, None, tmp_path / "a", 300))

    engine = Engine(apply_overrides(preset, ["train.total_steps=300"]), create_run_dir(preset, tmp_path / "b"))
    real_update = engine.agent.update

    def update_then_stop(batch):
        metrics = real_update(batch)
        if engine.agent.num_updates == 37:  # odd: the first of the two updates of an env step
            engine.submit(Stop())
        return metrics

    engine.agent.update = update_then_stop
    engine.run()
    assert engine.counters.updates == 37 and engine.counters.update_credit == 1.0
    resumed = Engine(apply_overrides(preset, ["train.total_steps=300"]), engine.run_dir, resume=True)
    resumed.run()
    assert_same(final_state(resumed), straight)


# ----------------------------------------------------------------------------- envs that cannot be saved


def test_unsaveable_envs_end_their_episodes_at_the_saved_step(tmp_path):
    preset = tiny_preset("mpo", {"env": {"id": CHAIN_ID, "num_envs": 2, "normalize_obs": False},
                                 "mpo": {"use_retrace": True, "retrace_steps": 3}, "eval": {"interval": 0}})
    first = run_to(preset, None, tmp_path, 100)  # 50 steps per env: mid-episode in both (episodes of 3 and 5)
    dones_before = first.loop.replay._data["dones"][: first.loop.replay._filled].copy()
    assert not dones_before[-1].any()

    resumed = Engine(apply_overrides(preset, ["train.total_steps=160"]), first.run_dir, resume=True)
    last = resumed.loop.replay._filled - 1
    np.testing.assert_array_equal(resumed.loop.replay._data["dones"][last], [1.0, 1.0])  # no window joins it to what follows
    np.testing.assert_array_equal(resumed.loop.replay._data["dones"][:last], dones_before[:-1])
    events = record(resumed)
    resumed.run()
    notes = warnings_in(events)
    assert len(notes) == 1 and "holds no state of the RltuiChain-v0 environments" in notes[0]
    first_new = [env.unwrapped.transitions[0] for env in resumed._envs._envs]
    assert all(t.obs[1] == 0 for t in first_new)  # new episodes started


def test_unsaveable_envs_cut_a_partial_rollout_as_truncated(tmp_path):
    preset = tiny_preset("trpo", {"env": {"id": CHAIN_ID, "num_envs": 2, "normalize_obs": False,
                                          "normalize_reward": True},
                                  "train": {"rollout_steps": 10}, "eval": {"interval": 0}})
    first = run_to(preset, None, tmp_path, 30)  # 15 steps per env: half-way through the second rollout
    saved_obs = first.loop.obs.copy()
    resumed = Engine(apply_overrides(preset, ["train.total_steps=60"]), first.run_dir, resume=True)
    rollout = resumed.loop.rollout.state_dict()
    last = rollout["truncated"].shape[0] - 1
    running = ~rollout["terminated"][last].numpy()
    assert rollout["truncated"][last].numpy()[running].all()
    with torch.no_grad():
        expected = resumed.agent.value(torch.as_tensor(saved_obs)).squeeze(-1).numpy()
    np.testing.assert_allclose(rollout["final_values"][last].numpy()[running], expected[running], rtol=1e-5, atol=1e-6)
    assert np.all(resumed.loop.reward_normalizer._discounted == 0.0)
    resumed.run()
    assert resumed.state == RunState.FINISHED


# ----------------------------------------------------------------------------- overrides on resume


def test_learning_rates_set_on_resume_reach_the_restored_optimisers(tmp_path):
    mpo = run_to(tiny_preset("mpo"), None, tmp_path / "m", 150)
    raised = apply_overrides(mpo.preset, ["train.total_steps=300", "mpo.q_lr=0.0123", "mpo.policy_lr=0.004",
                                          "mpo.m_steps=2", "mpo.temperature_lr=0.05", "mpo.lambda_lr=0.06"])
    resumed = Engine(raised, mpo.run_dir, resume=True)
    assert [g["lr"] for g in resumed.agent.q_optimizer.param_groups] == [0.0123]
    assert [g["lr"] for g in resumed.agent.policy_optimizer.param_groups] == [0.002]
    assert [g["lr"] for g in resumed.agent.dual_optimizer.param_groups] == [0.05, 0.06]
    assert resumed.agent.q_optimizer.state  # the moments came from the checkpoint
    resumed.close()

    trpo = run_to(tiny_preset("trpo"), None, tmp_path / "t", 200)
    resumed = Engine(apply_overrides(trpo.preset, ["train.total_steps=400", "trpo.value_lr=0.0077"]), trpo.run_dir,
                     resume=True)
    assert [g["lr"] for g in resumed.agent.value_optimizer.param_groups] == [0.0077]
    resumed.close()


def snapshot(directory: Path) -> dict[str, str]:
    """Every file under `directory` with a digest of its contents."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("override, message", [
    ("mpo.optimizer_type=\"sgd\"", r'\[mpo\] optimizer_type cannot change when resuming \(the run has "adam", '
                                   r'asked for "sgd"\)'),
    ("env.num_envs=2", r"\[env\] num_envs cannot change"),
    ("env.normalize_obs=false", r"\[env\] normalize_obs cannot change"),
    ("network.critic_layer_sizes=[32]", r"\[network\] critic_layer_sizes cannot change"),
    ("train.seed=9", r"\[train\] seed cannot change"),
    ("env.id=\"MountainCarContinuous-v0\"", r"\[env\] id cannot change"),
    ("mpo.temperature_init=3.0", r"\[mpo\] temperature_init only sets a starting value"),
    ("mpo.epsilon_penalty=0.0", r"\[mpo\] epsilon_penalty cannot switch the action penalty off"),
    ("train.total_steps=150", r"the run is finished \(150 of 150 steps\); to train on, raise the total, "
                              r"e.g. --set train.total_steps=300"),
])
def test_a_resume_that_cannot_apply_is_refused_before_anything_changes(tmp_path, override, message):
    engine = run_to(tiny_preset("mpo"), None, tmp_path, 150)
    before = snapshot(engine.run_dir)
    overrides = [override] if override.startswith("train.total_steps") else ["train.total_steps=300", override]
    with pytest.raises(ResumeError, match=message):
        Engine(apply_overrides(engine.preset, overrides), engine.run_dir, resume=True)
    assert snapshot(engine.run_dir) == before
    resumed = Engine(apply_overrides(engine.preset, ["train.total_steps=200"]), engine.run_dir, resume=True)
    resumed.run()  # the run is intact: a sensible resume still works
    assert resumed.state == RunState.FINISHED and resumed.step == 200


def test_a_checkpoint_at_total_steps_is_finished_also_when_the_preset_file_says_more(tmp_path):
    engine = run_to(tiny_preset("mpo"), None, tmp_path, 150)
    with pytest.raises(ResumeError, match="the run is finished"):
        Engine(engine.preset, engine.run_dir, resume=True)
    assert ckpt.latest_checkpoint(engine.run_dir).name == "step-150"


@pytest.mark.parametrize("new_horizon", [10, 40])
def test_a_changed_rollout_length_applies_from_the_saved_partial_rollout(tmp_path, new_horizon):
    first = run_to(tiny_preset("trpo"), None, tmp_path, 250)  # 25 of 50 steps per env in the rollout
    assert first.loop.rollout.length == 25
    resumed = Engine(apply_overrides(first.preset, ["train.total_steps=400", f"train.rollout_steps={new_horizon}"]),
                     first.run_dir, resume=True)
    lengths = []
    real_update = resumed.agent.update

    def update(batch):
        lengths.append(batch["obs"].shape[0] // 2)
        return real_update(batch)

    resumed.agent.update = update
    resumed.run()
    # A saved rollout longer than the new horizon is learnt from as it is; a shorter one is filled up.
    first_update = 25 if new_horizon < 25 else new_horizon
    assert lengths[0] == first_update and set(lengths[1:]) <= {new_horizon}
    assert resumed.step == 400
