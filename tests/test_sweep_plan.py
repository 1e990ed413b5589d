"""A sweep's plan and results without Ray: options from a [sweep] table and flags, the trials they
expand to, the plan file, trial presets, the results fold, and the progress table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import TINY_TRPO

from rltui.events import EvalResult, RunStarted, RunState, StateChanged, WarningRaised
from rltui.presets import PresetError
from rltui.runlog import LOG_NAME, RunLogWriter
from rltui.sweep.plan import (
    PLAN_FILE,
    Distribution,
    SweepError,
    SweepFlags,
    SweepOptions,
    apply_flags,
    build_plan,
    expand_trials,
    options_from_table,
    parse_grid_flag,
    parse_seeds,
    read_plan,
    sweep_record,
    write_plan,
)
from rltui.sweep.progress import SweepProgress
from rltui.sweep.results import Summary, fold_trial, write_results


def test_seeds_read_ranges_lists_and_arrays():
    assert parse_seeds("0-4", "--seeds") == (0, 1, 2, 3, 4)
    assert parse_seeds("0-2,10, 7", "--seeds") == (0, 1, 2, 10, 7)
    assert parse_seeds([3, 1], "f: [sweep] seeds") == (3, 1)
    with pytest.raises(SweepError, match=r"^--seeds: seeds must be in \[0, 4294967295\], got 4294967296$"):
        parse_seeds("4294967296", "--seeds")
    with pytest.raises(SweepError, match=r'^f: \[sweep\] seeds: expected an array of integers, got \[1, "2"\]$'):
        parse_seeds([1, "2"], "f: [sweep] seeds")


def test_grid_values_split_on_top_level_commas_only():
    assert parse_grid_flag("network.policy_layer_sizes=[64,64],[256, 256]") == (
        "network.policy_layer_sizes", ([64, 64], [256, 256]), "--grid network.policy_layer_sizes")
    assert parse_grid_flag("mpo.policy_lr=1e-4,3e-4")[1] == (1e-4, 3e-4)
    assert parse_grid_flag("env.id=Pendulum-v1,MountainCarContinuous-v0")[1] == (
        "Pendulum-v1", "MountainCarContinuous-v0")  # a string key takes the text as written
    assert parse_grid_flag('env.kwargs={g = 9.8, x = "a,b"},{}')[1] == ({"g": 9.8, "x": "a,b"}, {})


def test_trials_are_the_grid_product_times_seeds_named_for_humans():
    options = SweepOptions(seeds=(0, 1), grid=(("trpo.target_kl", (0.01, 0.03)), ("trpo.gamma", (0.9, 0.99))))
    trials = expand_trials(options)
    assert [t.name for t in trials] == [
        "target_kl=0.01,gamma=0.9,seed=0", "target_kl=0.01,gamma=0.9,seed=1",
        "target_kl=0.01,gamma=0.99,seed=0", "target_kl=0.01,gamma=0.99,seed=1",
        "target_kl=0.03,gamma=0.9,seed=0", "target_kl=0.03,gamma=0.9,seed=1",
        "target_kl=0.03,gamma=0.99,seed=0", "target_kl=0.03,gamma=0.99,seed=1",
    ]
    assert trials[2].setting_label == "trpo.target_kl=0.01, trpo.gamma=0.99"
    # keys that share their last part are named in full; values that are not path-safe are replaced
    clash = expand_trials(SweepOptions(grid=(("mpo.gamma", (0.9,)), ("trpo.gamma", (0.95,)),
                                             ("env.id", ("ALE/Pong-v5",)))))
    assert [t.name for t in clash] == ["mpo.gamma=0.9,trpo.gamma=0.95,id=ALE-Pong-v5,seed=0"]
    assert expand_trials(SweepOptions(seeds=(5,)))[0].name == "seed=5"


def test_random_values_are_drawn_per_sample_and_shared_by_its_seeds():
    options = SweepOptions(seeds=(0, 1, 2), samples=40, sample_seed=7, random=(
        ("mpo.kl_epsilon", Distribution("loguniform", (0.01, 0.3))),
        ("mpo.action_samples", Distribution("randint", (1, 2))),
        ("mpo.use_retrace", Distribution("choice", (True, False))),
        ("mpo.gamma", Distribution("uniform", (0.95, 0.995))),
    ))
    trials = expand_trials(options)
    assert len(trials) == 120
    by_sample: dict[int, set] = {}
    for trial in trials:
        by_sample.setdefault(trial.sample, set()).add(trial.setting)
    assert all(len(settings) == 1 for settings in by_sample.values())  # every seed of a sample alike
    values = [dict(next(iter(s))) for _, s in sorted(by_sample.items())]
    assert all(0.01 <= v["mpo.kl_epsilon"] <= 0.3 and 0.95 <= v["mpo.gamma"] <= 0.995 for v in values)
    assert {v["mpo.action_samples"] for v in values} == {1, 2}  # both ends of randint
    assert {v["mpo.use_retrace"] for v in values} == {True, False}
    logs = [math.log(v["mpo.kl_epsilon"]) for v in values]  # log-uniform: spread over the log range
    assert min(logs) < math.log(0.03) and max(logs) > math.log(0.1)
    assert expand_trials(options) == trials  # reproducible from sample_seed
    assert expand_trials(SweepOptions(**{**vars(options), "sample_seed": 8})) != trials
    assert trials[0].name.startswith("sample=0,kl_epsilon=") and trials[0].name.endswith(",seed=0")


def test_flags_override_the_file_and_a_grid_flag_replaces_a_random_key():
    table = {"seeds": "0-2", "scheduler": "asha", "samples": 4,
             "grid": {"trpo": {"target_kl": [0.01]}}, "random": {"trpo": {"gamma": {"uniform": [0.9, 0.99]}}}}
    options = options_from_table(table, "s.toml")
    assert (options.seeds, options.scheduler, options.samples) == ((0, 1, 2), "asha", 4)
    flagged = apply_flags(options, SweepFlags(seeds="7", grid=("trpo.gamma=0.9,0.95",), scheduler="fifo"))
    assert flagged.seeds == (7,) and flagged.scheduler == "fifo" and flagged.random == ()
    assert flagged.grid == (("trpo.target_kl", (0.01,)), ("trpo.gamma", (0.9, 0.95)))
    assert flagged.origins["trpo.gamma"] == "--grid trpo.gamma"
    assert flagged.origins["trpo.target_kl"] == "s.toml [sweep.grid] trpo.target_kl"


def _sweep_file(tmp_path: Path, sweep: str) -> Path:
    base = tmp_path / "_base.toml"
    base.write_text(TINY_TRPO)
    path = tmp_path / "sweep.toml"
    path.write_text('extends = "_base.toml"\nname = "kl-sweep"\n\n[train]\ntotal_steps = 600\n\n' + sweep)
    return path


def test_a_sweep_file_is_a_preset_with_a_sweep_table_and_its_plan_round_trips(tmp_path):
    path = _sweep_file(tmp_path, '[sweep]\nseeds = [3, 4]\n\n[sweep.grid]\ntrpo.target_kl = [0.01, 0.05]\n')
    plan = build_plan(str(path), ["eval.episodes=2"], SweepFlags(), "kl", check_device=True)
    assert [t.name for t in plan.trials] == ["target_kl=0.01,seed=3", "target_kl=0.01,seed=4",
                                             "target_kl=0.05,seed=3", "target_kl=0.05,seed=4"]
    preset = plan.trial_preset(plan.trials[3])
    assert preset.name == "kl-sweep" and preset.train.total_steps == 600  # the file over its base
    assert (preset.train.seed, preset.agent["target_kl"], preset.eval.episodes) == (4, 0.05, 2)
    assert preset.train.rollout_steps == 50  # from the base
    (tmp_path / "kl").mkdir()
    write_plan(tmp_path / "kl", plan)
    assert read_plan(tmp_path / "kl") == plan
    assert sweep_record(plan, plan.trials[1]) == {
        "name": "kl", "trial": "target_kl=0.01,seed=4", "setting": "trpo.target_kl=0.01", "seed": 4,
        "config": {"trpo.target_kl": 0.01, "train.seed": 4}}


def test_every_drawn_value_is_checked_by_the_preset_and_named(tmp_path):
    path = _sweep_file(tmp_path, "[sweep]\nsamples = 5\n\n[sweep.random]\ntrpo.gamma = { uniform = [0.5, 1.5] }\n")
    with pytest.raises(PresetError) as raised:
        build_plan(str(path), [], SweepFlags(), None, check_device=True)
    assert str(raised.value).startswith(f"{path} [sweep.random] trpo.gamma: [trpo] gamma: ")


def test_a_damaged_plan_file_is_named(tmp_path):
    (tmp_path / PLAN_FILE).write_text(json.dumps({"version": 1, "name": "x"}))
    with pytest.raises(SweepError, match=rf"^{tmp_path / PLAN_FILE}: not a sweep plan this rltui can read \("):
        read_plan(tmp_path)


def _trial():
    return expand_trials(SweepOptions(seeds=(0,)))[0]


def test_results_fold_drops_what_a_killed_session_logged_past_its_checkpoint():
    events = [
        RunStarted(step=0, name="p", algo="trpo", env_id="Pendulum-v1", device="cpu", total_steps=600, run_dir="r"),
        EvalResult(step=200, return_mean=-300.0, return_std=0.0, length_mean=200.0, episodes=1),
        EvalResult(step=400, return_mean=-100.0, return_std=0.0, length_mean=200.0, episodes=1),  # lost
        RunStarted(step=200, name="p", algo="trpo", env_id="Pendulum-v1", device="cpu", total_steps=600,
                   run_dir="r", resumed=True),
        EvalResult(step=400, return_mean=-250.0, return_std=0.0, length_mean=200.0, episodes=1),
        EvalResult(step=600, return_mean=-280.0, return_std=0.0, length_mean=200.0, episodes=1),
        StateChanged(step=600, state=RunState.FINISHED, message="finished 600 steps"),
    ]
    outcome = fold_trial(_trial(), events[:3] + [
        WarningRaised(step=400, message="interrupted at step 400: Ray Tune stopped the trial")] + events[3:])
    assert (outcome.state, outcome.step, outcome.sessions, outcome.note) == ("finished", 600, 2, "")
    assert (outcome.final_return, outcome.final_step) == (-280.0, 600)
    assert (outcome.best_return, outcome.best_step) == (-250.0, 400)
    stopped = fold_trial(_trial(), events[:2] + [
        StateChanged(step=300, state=RunState.FINISHED, message="stopped at step 300"),
        WarningRaised(step=300, message="stopped early at step 300 by the sweep's ASHA scheduler")])
    assert (stopped.state, stopped.final_return) == ("stopped early", -300.0)
    interrupted = fold_trial(_trial(), events[:2] + [
        StateChanged(step=300, state=RunState.FINISHED, message="stopped at step 300"),
        WarningRaised(step=300, message="interrupted at step 300: Ray Tune stopped the trial")])
    assert interrupted.state == "incomplete"
    assert fold_trial(_trial(), events[:2]).state == "incomplete"
    assert fold_trial(_trial(), []).state == "not started"


def test_summary_is_the_mean_and_sample_std_over_seeds():
    summary = Summary.of([-100.0, -120.0])
    assert summary.mean == -110.0 and summary.std == pytest.approx(math.sqrt(200.0))
    assert summary.text() == "-110.0 ± 14.1"
    assert Summary.of([-5.0]).text() == "-5.0" and Summary.of([]).text() == "-"


def test_results_read_every_trial_even_one_that_never_started(tmp_path):
    preset = tmp_path / "tiny-trpo.toml"
    preset.write_text(TINY_TRPO)
    plan = build_plan(str(preset), [], SweepFlags(seeds="0-1"), "unstarted", check_device=True)
    sweep_dir = tmp_path / "unstarted"
    sweep_dir.mkdir()
    write_plan(sweep_dir, plan)
    results, text = write_results(plan, sweep_dir)
    assert [(t.name, t.state) for t in results[0].trials] == [("seed=0", "not started"), ("seed=1", "not started")]
    assert results[0].n == 0 and results[0].final.mean is None
    assert "| preset  | 0/2 | -" in text
    assert json.loads((sweep_dir / "results.json").read_text())["settings"][0]["final_return"] == {
        "mean": None, "std": None}


class _Terminal:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return True


def test_the_live_table_shows_each_trials_setting_seed_step_eval_and_state(tmp_path):
    plan = build_plan(str(_sweep_file(tmp_path, "[sweep]\nseeds = [0, 1]\n")), [], SweepFlags(), "t",
                      check_device=True)
    run_dir = tmp_path / "t" / "seed=0"
    run_dir.mkdir(parents=True)
    log = RunLogWriter(run_dir / LOG_NAME)
    log(RunStarted(step=0, name="p", algo="trpo", env_id="Pendulum-v1", device="cpu", total_steps=600, run_dir=""))
    log(EvalResult(step=200, return_mean=-812.34, return_std=0.0, length_mean=200.0, episodes=1))
    log.close()
    terminal = _Terminal()
    progress = SweepProgress(plan, tmp_path / "t", terminal, live=True)
    progress.update({"seed=0": "RUNNING", "seed=1": "PENDING"}, force=True)
    progress.update(force=True)  # redrawn in place
    lines = progress.table(10)
    assert lines[0].startswith("sweep t: 2 trials (1 running, 1 pending) after 0:00:0")
    assert lines[1].split() == ["SETTING", "SEED", "STEP", "EVAL", "STATE"]
    assert lines[2].split() == ["preset", "0", "200/600", "-812.3", "running"]
    assert lines[3].split() == ["preset", "1", "-", "-", "pending"]
    assert terminal.text.count("\x1b[4F\x1b[J") == 1  # the second draw went back over the first
    progress.close()
