"""Run summaries (rltui.summaries) of runs recorded by the real engine: finished, stopped, failed,
resumed, with evaluation mode, a live one in an `rltui` process and the same one killed; each
summary pinned against the run's log as its one reader (`read_events`) gives it. Then the log
growing, truncated, replaced and half-written, the on-disk cache (reused, corrupt, unwritable),
read-only runs, sweeps, groups, and the seed band against numpy."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import stat
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_preset
from test_background import LONG_RUN, wait_for
from test_control_process import connect, rltui_process, the_run_dir

from rltui import summaries
from rltui.commands import SetEvalMode, Stop
from rltui.engine import Engine
from rltui.events import EpisodeFinished, ErrorRaised, EvalResult, RunStarted, StateChanged
from rltui.rundir import create_run_dir
from rltui.runlog import read_events
from rltui.summaries import (
    EvalCurve,
    RunIndex,
    RunSummary,
    assign_groups,
    find_runs,
    mean_std,
    seed_band,
)

pytestmark = pytest.mark.timeout(180)


# ----------------------------------------------------------------------------- recorded runs


def record(saves: Path, algo: str, settings: dict | None = None, *, on_event=None, failing: bool = False) -> Path:
    preset = tiny_preset(algo, settings)
    run_dir = create_run_dir(preset, saves)
    engine = Engine(preset, run_dir)
    if on_event is not None:
        engine.subscribe(lambda event: on_event(engine, event))
    if failing:
        def broken_update(batch):
            raise RuntimeError("boom in update")

        engine.agent.update = broken_update
    engine.run()
    return run_dir


def stop_after_first_eval(engine, event):
    if isinstance(event, EvalResult):
        engine.submit(Stop(final_checkpoint=True))


def eval_mode_once(engine, event):
    """Evaluation mode on after the first interval evaluation, off after two streamed episodes."""
    if isinstance(event, EvalResult):
        streamed = engine.counters.stream_episodes
        if streamed == 0 and event.episodes > 1:
            engine.submit(SetEvalMode(True))
        elif streamed == 2:
            engine.submit(SetEvalMode(False))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> dict[str, Path]:
    saves = tmp_path_factory.mktemp("saves")
    runs = {
        "seed4": record(saves, "trpo"),
        "seed5": record(saves, "trpo", {"train": {"seed": 5}}),
        "gamma": record(saves, "trpo", {"trpo": {"gamma": 0.95}}),
        "stopped": record(saves, "trpo", {"train": {"total_steps": 1_000_000}, "eval": {"interval": 100}},
                          on_event=stop_after_first_eval),
        "failed": record(saves, "mpo", failing=True),
        "eval_mode": record(saves, "trpo", {"train": {"total_steps": 600, "seed": 6},
                                            "eval": {"interval": 200, "episodes": 2}}, on_event=eval_mode_once),
    }
    # A resumed run: stopped at step 300 without a final checkpoint (its last one is at 200), then
    # resumed to 400, so the first session's steps 201-300 (and the evaluation at 300) never happened.
    resumed_settings = {"train": {"total_steps": 1_000_000, "seed": 7}, "eval": {"interval": 100},
                        "checkpoint": {"interval": 200}}

    def stop_at_300(engine, event):
        if event.step >= 300 and isinstance(event, EvalResult):
            engine.submit(Stop(final_checkpoint=False))

    run_dir = record(saves, "trpo", resumed_settings, on_event=stop_at_300)
    preset = tiny_preset("trpo", {**resumed_settings, "train": {"total_steps": 400, "seed": 7}})
    Engine(preset, run_dir, resume=True).run()
    runs["resumed"] = run_dir
    return runs


def expected(run_dir: Path) -> dict:
    """What a summary should say of a run's log, from every event as `read_events` reads them."""
    events, _ = read_events(run_dir / "metrics.jsonl")
    evals: list[tuple[int, float, float]] = []
    episodes: list[tuple[int, float]] = []
    sessions: list[list[float]] = []
    state, message, step, total_steps = None, "", 0, 0
    for event in events:
        if isinstance(event, RunStarted):
            if event.step < step:
                evals = [e for e in evals if e[0] <= event.step]
                episodes = [e for e in episodes if e[0] <= event.step]
            sessions.append([event.time, event.time])
            state, message, total_steps = "starting", "", event.total_steps
        sessions[-1][1] = event.time
        step = event.step
        if isinstance(event, StateChanged):
            state = event.state.value
            message = event.message or message
        elif isinstance(event, ErrorRaised):
            message = event.message
        elif isinstance(event, EvalResult) and state != "evaluating":
            evals.append((event.step, event.return_mean, event.return_std))
        elif isinstance(event, EpisodeFinished):
            episodes.append((event.step, event.episode_return))
    recent = [r for _, r in episodes[-summaries.RECENT_EPISODES:]]
    return {
        "state": state, "message": message, "step": step, "total_steps": total_steps,
        "eval_curve": EvalCurve(tuple(s for s, _, _ in evals), tuple(m for _, m, _ in evals),
                                tuple(d for _, _, d in evals)),
        "last_eval": evals[-1][1] if evals else None,
        "best_eval": max(m for _, m, _ in evals) if evals else None,
        "recent_return": sum(recent) / len(recent) if recent else None,
        "started": sessions[0][0] if sessions else None,
        "wall_s": sum(max(end - start, 0.0) for start, end in sessions),
        "sessions": len(sessions),
    }


def assert_matches_log(summary: RunSummary, run_dir: Path) -> None:
    want = expected(run_dir)
    assert summary.step == want["step"] and summary.total_steps == want["total_steps"]
    assert repr(summary.eval_curve) == repr(want["eval_curve"])  # (NaN as written: null, equal to itself)
    assert (summary.last_eval, summary.best_eval) == (want["last_eval"], want["best_eval"])
    assert summary.recent_return == pytest.approx(want["recent_return"], rel=1e-12)
    assert summary.started == want["started"] and summary.sessions == want["sessions"]
    assert summary.wall_s == pytest.approx(want["wall_s"], abs=1e-6)
    assert summary.message == want["message"]


def index_of(*roots: Path, cache: Path | None = None) -> RunIndex:
    return RunIndex(list(roots), cache=cache, use_cache=cache is not None)


def by_name(runs: list[RunSummary]) -> dict[str, RunSummary]:
    return {s.name: s for s in runs}


def test_recorded_runs_are_summarised_as_their_logs_say(recorded):
    runs = by_name(index_of(recorded["seed4"].parent).refresh())
    assert set(runs) == {p.name for p in recorded.values()}
    for key, run_dir in recorded.items():
        summary = runs[run_dir.name]
        assert summary.run_dir == run_dir
        assert_matches_log(summary, run_dir)
        assert summary.pid is None and summary.live_state is None, key
    want_state = {"seed4": "finished", "seed5": "finished", "gamma": "finished", "stopped": "stopped",
                  "failed": "failed", "eval_mode": "finished", "resumed": "finished"}
    assert {k: runs[p.name].state for k, p in recorded.items()} == want_state
    assert runs[recorded["failed"].name].message == "RuntimeError: boom in update"
    seed5 = runs[recorded["seed5"].name]
    assert (seed5.algo, seed5.env_id, seed5.preset, seed5.seed, seed5.sweep) == ("trpo", "Pendulum-v1", "tiny-trpo",
                                                                                 5, None)
    assert seed5.eval_curve.steps == (200, 400) and seed5.total_steps == 400 and seed5.progress == 1.0
    assert seed5.setting("trpo.gamma") == 0.9 and seed5.setting("network.policy_layer_sizes") == (16, 16)


def test_a_resumed_run_drops_what_its_killed_session_did_after_the_checkpoint(recorded):
    (summary,) = index_of(recorded["resumed"]).refresh()
    assert summary.sessions == 2 and summary.step == 400
    assert summary.eval_curve.steps == (100, 200, 300, 400)  # the first session's 300 is gone, the second's is kept
    events, _ = read_events(recorded["resumed"] / "metrics.jsonl")
    first_300 = next(e for e in events if isinstance(e, EvalResult) and e.step == 300)
    second_300 = [e for e in events if isinstance(e, EvalResult) and e.step == 300][-1]
    assert first_300 is not second_300 and summary.eval_curve.returns[2] == second_300.return_mean


def test_evaluation_mode_episodes_are_not_points_of_the_curve(recorded):
    (summary,) = index_of(recorded["eval_mode"]).refresh()
    events, _ = read_events(recorded["eval_mode"] / "metrics.jsonl")
    streamed = [e for e in events if isinstance(e, EvalResult) and e.episodes == 1]
    assert len(streamed) >= 2  # the run did stream episodes
    assert summary.eval_curve.steps == (200, 400, 600)


def test_groups_are_the_preset_and_the_settings_that_differ(recorded):
    keys = ("seed4", "seed5", "gamma", "stopped", "failed")
    runs = by_name(index_of(*(recorded[k] for k in keys)).refresh())
    group = {k: runs[recorded[k].name].group for k in keys}
    assert group == {
        "seed4": "tiny-trpo eval.interval=200 train.total_steps=400 trpo.gamma=0.9",
        "seed5": "tiny-trpo eval.interval=200 train.total_steps=400 trpo.gamma=0.9",
        "gamma": "tiny-trpo eval.interval=200 train.total_steps=400 trpo.gamma=0.95",
        "stopped": "tiny-trpo eval.interval=100 train.total_steps=1000000 trpo.gamma=0.9",
        "failed": "tiny-mpo",
    }
    # alone, the seed runs have nothing that differs: the preset's name
    assert {s.group for s in index_of(recorded["seed4"], recorded["seed5"]).refresh()} == {"tiny-trpo"}


# ------------------------------------------------------------------------ the log as it changes


def copy_run(run_dir: Path, dest: Path) -> Path:
    target = dest / run_dir.name
    shutil.copytree(run_dir, target, ignore=shutil.ignore_patterns("checkpoints"))
    return target


class FoldSpy:
    """Counts the bytes of log lines folded (the real fold runs)."""

    def __init__(self, monkeypatch):
        self.bytes = 0
        real = summaries._Fold.add_lines

        def add_lines(fold, data):
            self.bytes += len(data)
            return real(fold, data)

        monkeypatch.setattr(summaries._Fold, "add_lines", add_lines)


def test_a_growing_log_is_read_from_where_it_stopped(recorded, tmp_path, monkeypatch):
    source = (recorded["resumed"] / "metrics.jsonl").read_bytes()
    run_dir = copy_run(recorded["resumed"], tmp_path / "saves")
    log = run_dir / "metrics.jsonl"
    spy = FoldSpy(monkeypatch)
    index = index_of(tmp_path / "saves")
    cut = source.index(b'"event":"eval"', len(source) // 3) + 5  # in the middle of an evaluation's line
    for end in (cut, len(source) * 2 // 3, len(source)):
        log.write_bytes(source[:end])
        (summary,) = index.refresh()
        complete = source[: source[:end].rfind(b"\n") + 1]
        assert spy.bytes == len(complete)  # each byte folded once; a half line waits for its end
        want = expected_of_log(complete, tmp_path / "scratch")
        assert repr((summary.step, summary.eval_curve, summary.sessions)) == repr((want["step"], want["eval_curve"],
                                                                                   want["sessions"]))
    assert_matches_log(summary, run_dir)
    assert summary.state == "finished"


def expected_of_log(content: bytes, scratch: Path) -> dict:
    scratch.mkdir(exist_ok=True)
    (scratch / "metrics.jsonl").write_bytes(content)
    return expected(scratch)


def test_a_truncated_or_replaced_or_rewritten_log_is_read_again(recorded, tmp_path):
    source = (recorded["seed4"] / "metrics.jsonl").read_bytes()
    lines = source.splitlines(keepends=True)
    run_dir = copy_run(recorded["seed4"], tmp_path)
    log = run_dir / "metrics.jsonl"
    index = index_of(tmp_path)
    assert index.refresh()[0].state == "finished"

    with open(log, "r+b") as handle:  # truncated in place
        handle.truncate(len(b"".join(lines[:2])))
    (summary,) = index.refresh()
    assert_matches_log(summary, run_dir)
    assert summary.state == "killed" and summary.eval_curve == EvalCurve()

    other = (recorded["seed5"] / "metrics.jsonl").read_bytes()  # another file takes the name
    (run_dir / "new.jsonl").write_bytes(other)
    os.replace(run_dir / "new.jsonl", log)
    (summary,) = index.refresh()
    assert_matches_log(summary, run_dir)
    assert summary.state == "finished"

    # rewritten in place at once, its size unchanged (its modification time may be too): the start differs
    digit = other.index(b".", other.index(b'"time":')) + 1  # the first event's tenths of a second
    rewritten = other[:digit] + str((int(other[digit:digit + 1]) + 1) % 10).encode() + other[digit + 1:]
    log.write_bytes(rewritten)
    (summary,) = index.refresh()
    assert_matches_log(summary, run_dir)
    assert summary.started == read_events(log)[0][0].time != read_events(recorded["seed5"] / "metrics.jsonl")[0][0].time


def test_garbage_lines_and_a_final_partial_line_are_skipped(recorded, tmp_path):
    source = (recorded["gamma"] / "metrics.jsonl").read_bytes()
    run_dir = copy_run(recorded["gamma"], tmp_path)
    log = run_dir / "metrics.jsonl"
    lines = source.splitlines(keepends=True)
    good_eval = {"event": "eval", "step": 250, "time": 1.5, "return_mean": -1.0, "return_std": None, "length_mean": 2,
                 "episodes": 1, "returns": [-1.0]}
    bad_evals = [{**good_eval, "step": "x"}, {**good_eval, "returns": ["x"]}, {**good_eval, "episodes": -1},
                 {**good_eval, "deterministic": "yes"}, {**good_eval, "return_mean": True}, {**good_eval, "step": 2**64},
                 {**good_eval, "length_mean": 10**400}, {k: v for k, v in good_eval.items() if k != "length_mean"}]
    garbage = [b"not json\n", b"\xff\xfe\n", b'{"event":"future_kind","step":1}\n', b'{"event":"eval"}\n',
               b'{"event":"eval","step":1,"event":"state","state":"paused"}\n', json.dumps(good_eval).encode() + b"\n",
               *(json.dumps(e, separators=(",", ":")).encode() + b"\n" for e in bad_evals)]
    log.write_bytes(b"".join(lines[:3] + garbage + lines[3:]) + b'{"event":"eval","step":999')
    (summary,) = index_of(tmp_path).refresh()
    assert_matches_log(summary, run_dir)
    assert 999 not in summary.eval_curve.steps and 250 in summary.eval_curve.steps


# ------------------------------------------------------------------------------------ the cache


def test_the_cache_serves_a_new_index_without_reading_the_logs(recorded, tmp_path, monkeypatch):
    saves = tmp_path / "saves"
    for key in ("seed4", "failed", "resumed"):
        copy_run(recorded[key], saves)
    growing = copy_run(recorded["stopped"], saves)
    lines = (growing / "metrics.jsonl").read_bytes().splitlines(keepends=True)
    (growing / "metrics.jsonl").write_bytes(b"".join(lines[:5]))
    cache = tmp_path / "cache"
    first = index_of(saves, cache=cache).refresh()
    assert list(cache.glob("runs/*.json"))
    spy = FoldSpy(monkeypatch)
    second = index_of(saves, cache=cache).refresh()
    assert repr(second) == repr(first) and spy.bytes == 0

    with open(growing / "metrics.jsonl", "ab") as handle:
        handle.write(b"".join(lines[5:]))
    third = by_name(index_of(saves, cache=cache).refresh())
    assert spy.bytes == len(b"".join(lines[5:]))  # only what was appended
    assert_matches_log(third[growing.name], growing)
    assert third[growing.name].state == "stopped"


@pytest.mark.parametrize("content", [b"garbage", b"[]", b'{"version": 1}', None])
def test_a_corrupt_cache_is_ignored(recorded, tmp_path, content):
    saves = tmp_path / "saves"
    copy_run(recorded["seed4"], saves)
    copy_run(recorded["failed"], saves)
    cache = tmp_path / "cache"
    want = index_of(saves, cache=cache).refresh()
    (cache_file,) = cache.glob("runs/*.json")
    if content is None:  # right shape, wrong types in one entry
        data = json.loads(cache_file.read_bytes())
        entry = next(iter(data["runs"].values()))
        entry["fold"]["evals"] = [["x", 1, 2]]
        entry["offset"] = "many"
        content = json.dumps(data).encode()
    cache_file.write_bytes(content)
    assert repr(index_of(saves, cache=cache).refresh()) == repr(want)


def test_an_unwritable_cache_and_a_read_only_run_directory_work(recorded, tmp_path):
    saves = tmp_path / "saves"
    run_dir = copy_run(recorded["seed4"], saves)
    cache = tmp_path / "cache-is-a-file"
    cache.write_text("")
    for path in (run_dir / "metrics.jsonl", run_dir / "preset.toml"):
        path.chmod(stat.S_IRUSR | stat.S_IRGRP)
    run_dir.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        before = sorted((p.name, p.stat().st_mtime_ns) for p in run_dir.iterdir())
        (summary,) = index_of(saves, cache=cache).refresh()
        assert_matches_log(summary, run_dir)
        assert sorted((p.name, p.stat().st_mtime_ns) for p in run_dir.iterdir()) == before
    finally:
        run_dir.chmod(0o755)


# ----------------------------------------------------------------------------- live and killed


def test_a_live_run_is_asked_for_its_state_and_reads_killed_once_killed(tmp_path, write_preset_file):
    preset = write_preset_file("trpo")
    process = rltui_process("train", str(preset), "--headless", "--saves", "runs", *LONG_RUN, cwd=tmp_path)
    try:
        run_dir = the_run_dir(tmp_path / "runs")
        client = connect(run_dir)
        index = index_of(tmp_path / "runs")
        (summary,) = index.refresh()
        assert (summary.state, summary.live_state, summary.pid) == ("live", "running", process.pid)
        assert summary.step > 0 and summary.total_steps == 10_000_000
        client.request("pause", timeout=10)
        (summary,) = index.refresh()
        assert (summary.state, summary.live_state) == ("live", "paused")
        assert summary.step == client.status()["step"]
        client.close()
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        wait_for(lambda: index.refresh()[0].state == "killed", timeout=10, what="killed")
        (summary,) = index.refresh()
        assert (run_dir / "control.sock").exists()  # stale: nobody answers
        assert summary.pid is None and summary.live_state is None
        assert_matches_log(summary, run_dir)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


# ------------------------------------------------------------------------------ finding, sweeps


def test_find_runs_searches_below_roots_but_not_inside_runs(recorded, tmp_path):
    saves = tmp_path / "saves"
    plain = copy_run(recorded["seed4"], saves)
    shutil.copytree(recorded["seed5"], saves / "sweep-a" / "trial-0")  # with its checkpoints/
    (saves / "sweep-a" / "trial-0" / "checkpoints" / "nested").mkdir()
    (saves / "sweep-a" / "trial-0" / "checkpoints" / "nested" / "metrics.jsonl").write_text("")
    (saves / ".hidden" / "run").mkdir(parents=True)
    (saves / ".hidden" / "run" / "preset.toml").write_text("")
    (saves / "empty").mkdir()
    (saves / "link").symlink_to(plain)
    assert find_runs([saves]) == [saves / "sweep-a" / "trial-0", saves / plain.name]
    assert find_runs([plain, saves]) == [plain, saves / "sweep-a" / "trial-0"]  # each once
    assert find_runs([tmp_path / "missing"]) == []


def test_sweep_trials_are_named_by_run_json_and_grouped_by_the_sweep(recorded, tmp_path):
    saves = tmp_path / "saves"
    trials = []
    for i, key in enumerate(("seed4", "seed5", "gamma")):
        trial = saves / "gamma-sweep" / f"trial-{i}"
        shutil.copytree(recorded[key], trial, ignore=shutil.ignore_patterns("checkpoints"))
        config = {"trpo.gamma": 0.95 if key == "gamma" else 0.9, "train.seed": 5 if key == "seed5" else 4}
        (trial / "run.json").write_text(json.dumps({"sweep": {"name": "gamma-sweep", "trial": i, "config": config}}))
        trials.append(trial)
    broken = copy_run(recorded["failed"], saves)
    (broken / "run.json").write_text("{not json")
    runs = by_name(index_of(saves).refresh())
    assert [(runs[t.name].sweep, runs[t.name].trial) for t in trials] == [("gamma-sweep", str(i)) for i in range(3)]
    assert [runs[t.name].group for t in trials] == ["gamma-sweep trpo.gamma=0.9", "gamma-sweep trpo.gamma=0.9",
                                                    "gamma-sweep trpo.gamma=0.95"]
    assert runs[broken.name].sweep is None and runs[broken.name].group == "tiny-mpo"


def test_assign_groups_shows_a_setting_missing_from_some_runs(recorded):
    (run,) = index_of(recorded["seed4"]).refresh()
    without = RunSummary(**{**run.__dict__, "config": tuple((k, v) for k, v in run.config if k != "trpo.gamma")})
    assert [s.group for s in assign_groups([run, without])] == ["tiny-trpo trpo.gamma=0.9", "tiny-trpo trpo.gamma=-"]


# ------------------------------------------------------------------------------- seed statistics


def test_seed_band_is_the_interpolated_mean_min_and_max():
    curves = [EvalCurve((0, 100, 200, 300), (1.0, 3.0, 5.0, 7.0), (0, 0, 0, 0)),
              EvalCurve((0, 150, 250), (2.0, math.nan, 6.0), (0, 0, 0)),  # a NaN point is dropped
              EvalCurve((), (), ())]
    band = seed_band(curves)
    grid = np.array([0, 100, 200, 250])  # both curves' steps up to the last step both reach
    a = np.interp(grid, [0, 100, 200, 300], [1.0, 3.0, 5.0, 7.0])
    b = np.interp(grid, [0, 250], [2.0, 6.0])
    assert band.runs == 2 and band.steps == tuple(float(x) for x in grid)
    np.testing.assert_allclose(band.mean, (a + b) / 2, rtol=1e-12)
    np.testing.assert_allclose(band.low, np.minimum(a, b), rtol=1e-12)
    np.testing.assert_allclose(band.high, np.maximum(a, b), rtol=1e-12)
    assert seed_band([EvalCurve()]).runs == 0


def test_mean_std_is_the_sample_std():
    values = [-150.5, -170.25, -133.0, -161.75]
    mean, std = mean_std(values)
    assert mean == pytest.approx(np.mean(values), rel=1e-12) and std == pytest.approx(np.std(values, ddof=1), rel=1e-12)
    assert mean_std([4.0]) == (4.0, None)


def test_every_state_is_documented():
    assert set(summaries.STATES) == {"live", "finished", "stopped", "failed", "killed"}
    for state in summaries.STATES:
        assert f'"{state}"' in summaries.__doc__
