import threading

import numpy as np
import pytest

from rltui.events import (
    CheckpointSaved,
    EpisodeFinished,
    ErrorRaised,
    EvalResult,
    RunStarted,
    RunState,
    StateChanged,
    UpdateMetrics,
    WarningRaised,
)
from rltui.history import EVAL_RETURN, TRAIN_RETURN, DownsampledSeries, MetricsHistory


def test_series_keeps_fixed_size_and_full_range():
    series = DownsampledSeries(capacity=64)
    n = 100_000
    for i in range(n):
        series.add(float(i), float(i % 1000))
    snap = series.snapshot()
    assert len(snap) <= 64
    assert series.stride * 64 >= n // 2
    assert snap.x[0] < 2000 and snap.x[-1] > n - 2000
    assert snap.y_min.min() == 0.0 and snap.y_max.max() == 999.0
    assert snap.last == float((n - 1) % 1000)
    np.testing.assert_allclose(np.mean(snap.y[:-1]), 499.5, rtol=0.01)


def test_series_mean_is_exact_before_and_after_halving():
    series = DownsampledSeries(capacity=4)
    for i in range(6):  # the 4th point fills the buffer: it halves to 2 buckets of 2 points
        series.add(float(i), float(i))
    snap = series.snapshot()
    assert series.stride == 2
    np.testing.assert_allclose(snap.x, [0.5, 2.5, 4.5])
    np.testing.assert_allclose(snap.y_min, [0, 2, 4])
    np.testing.assert_allclose(snap.y_max, [1, 3, 5])
    series.add(6.0, 6.0)  # the partial bucket is shown as the last point
    assert len(series.snapshot()) == 4 and series.snapshot().y[-1] == 6.0


def test_series_ignores_non_finite_values():
    series = DownsampledSeries(capacity=4)
    series.add(0.0, float("nan"))
    series.add(1.0, float("inf"))
    assert len(series.snapshot()) == 0 and series.version == 0


def _run_events():
    t = 1000.0
    yield RunStarted(0, name="r", algo="mpo", env_id="Pendulum-v1", device="cpu",
                     total_steps=1000, run_dir="saves/r", time=t)
    yield StateChanged(0, state=RunState.RUNNING, time=t)
    yield EpisodeFinished(200, episode_return=-1200.0, episode_length=200, time=t + 1)
    yield UpdateMetrics(250, updates=50, metrics={"loss/q": 1.5, "perf/steps_per_s": 250.0}, time=t + 2)
    yield EvalResult(300, return_mean=-900.0, return_std=10.0, length_mean=200, episodes=2, time=t + 3)
    yield CheckpointSaved(300, path="saves/r/checkpoints/step-300", time=t + 3)
    yield WarningRaised(320, message="skipped a non-finite update", time=t + 3.5)
    yield ErrorRaised(330, message="boom", time=t + 4)
    yield StateChanged(330, state=RunState.FAILED, message="boom", time=t + 4)


def test_history_collects_status_series_and_log():
    history = MetricsHistory()
    for event in _run_events():
        history(event)
    status = history.status()
    assert status.info.algo == "mpo" and status.total_steps == 1000
    assert status.state is RunState.FAILED and status.message == "boom"
    assert status.step == 330 and status.updates == 50 and status.episodes == 1
    assert status.steps_per_s is None and status.eta_s is None  # the run has ended: it has no rate
    assert status.start_time == 1000.0 and status.last_time == 1004.0
    assert status.last_checkpoint.endswith("step-300")
    assert history.series(TRAIN_RETURN).last == -1200.0
    assert history.series(EVAL_RETURN).last == -900.0
    assert history.series("nope") is None
    _, latest = history.latest()
    assert latest["loss/q"] == 1.5
    levels = [e.level for e in history.log_since(0)]
    assert levels == ["info", "info", "good", "warning", "error", "error"]
    assert "checkpoint saves/r/checkpoints/step-300" in history.log_since(0)[2].text
    assert [e.index for e in history.log_since(4)] == [4, 5]


def test_record_failure_marks_failed_once():
    history = MetricsHistory()
    history.record_failure("engine crashed")
    history.record_failure("engine crashed")
    assert history.status().state is RunState.FAILED
    assert len(history.log_since(0)) == 1


@pytest.mark.timeout(30)
def test_concurrent_writer_and_reader():
    history = MetricsHistory(capacity=128)
    stop = threading.Event()

    def writer():
        step = 0
        while not stop.is_set() and step < 200_000:
            step += 1
            history(UpdateMetrics(step, updates=step, metrics={"a": float(step)}, time=0.0))

    thread = threading.Thread(target=writer)
    thread.start()
    for _ in range(200):
        snap = history.series("a")
        if snap is not None:
            assert len(snap.x) == len(snap.y) <= 129
            assert np.all(np.diff(snap.x) >= 0)
    stop.set()
    thread.join()


def _started(step: int, t: float, resumed: bool = False, **settings) -> RunStarted:
    return RunStarted(step, name="r", algo="mpo", env_id="Pendulum-v1", device="cpu", total_steps=1000,
                      run_dir="saves/r", resumed=resumed, agent_settings=settings, time=t)


def test_history_keeps_what_the_views_show_besides_the_series():
    history = MetricsHistory()
    history.extend(list(_run_events()))
    status = history.status()
    assert status.last_eval.return_mean == -900.0 and status.last_eval.step == 300
    assert status.error == "boom"
    history(_started(330, 2000.0, resumed=True, kl_epsilon=0.1))
    info = history.status().info
    assert info.resumed and dict(info.agent_settings) == {"kl_epsilon": 0.1}
    for i in range(40):
        history(EpisodeFinished(400 + i, episode_return=float(i), episode_length=1, time=2001.0))
    assert history.recent(TRAIN_RETURN, 3) == [37.0, 38.0, 39.0]
    assert len(history.recent(TRAIN_RETURN, 100)) == 32 and history.recent("nope") == []


def test_elapsed_time_adds_up_the_sessions_not_the_pause_between():
    history = MetricsHistory()
    history(_started(0, 1000.0))
    history(EpisodeFinished(200, episode_return=-1.0, episode_length=200, time=1100.0))  # 100 s of session 1
    assert history.status().elapsed() == 100.0
    history(_started(200, 50_000.0, resumed=True))  # resumed much later
    status = history.status()
    assert status.start_time == 1000.0 and status.elapsed(now=50_030.0) == 130.0


def test_a_resume_from_an_earlier_checkpoint_drops_the_steps_after_it():
    history = MetricsHistory(capacity=8)
    history(_started(0, 0.0))
    for step in range(100, 1001, 100):
        history(UpdateMetrics(step, updates=1, metrics={"loss/q": float(step)}, time=step / 100))
    version = history.series_version("loss/q")
    history(_started(500, 20.0, resumed=True))  # killed at 1000, last checkpoint at 500
    snap = history.series("loss/q")
    assert snap.x.max() <= 500 and snap.last == 500.0 and history.series_version("loss/q") > version
    assert history.status().step == 500
    assert "steps 500-1,000 of the previous session were not checkpointed" in history.log_since(0)[-2].text
    history(UpdateMetrics(600, updates=1, metrics={"loss/q": -1.0}, time=21.0))
    assert history.series("loss/q").last == -1.0 and np.all(np.diff(history.series("loss/q").x) > 0)


def test_load_folds_a_whole_log_and_follow_goes_on_from_there(tmp_path):
    from rltui.runlog import MetricsFollower, RunLogWriter

    path = tmp_path / "metrics.jsonl"
    writer = RunLogWriter(path)
    events = list(_run_events())
    for event in events[:5]:
        writer(event)
    history = MetricsHistory()
    history.load(path)
    assert history.status().step == 300 and history.status().last_eval is not None
    follower = MetricsFollower(path)
    follower.read()
    for event in events[5:]:
        writer(event)
    writer.close()
    assert history.follow(follower)
    assert history.status().state is RunState.FAILED and len(history.log_since(0)) == 6
    history.load(tmp_path / "missing.jsonl")  # nothing to read: nothing changes, no error
    assert history.status().state is RunState.FAILED


# ---- honest rates -------------------------------------------------------------------------------


def _rates_run(history: MetricsHistory, total_steps: int = 100_000) -> None:
    history(RunStarted(0, name="r", algo="mpo", env_id="Pendulum-v1", device="cpu",
                       total_steps=total_steps, run_dir="saves/r", time=0.0))
    history(StateChanged(0, state=RunState.RUNNING, time=0.0))


def _rates(history: MetricsHistory) -> tuple:
    status = history.status()
    return status.steps_per_s, status.updates_per_s, status.eta_s


def test_rates_are_measured_over_a_sliding_window_and_warm_up_gives_no_eta():
    from rltui.history import RATE_WINDOW_S

    history = MetricsHistory()
    _rates_run(history)
    history(UpdateMetrics(500, updates=0, metrics={}, time=0.5))
    assert _rates(history) == (None, None, None)  # one sample: nothing measured yet
    history(UpdateMetrics(1000, updates=0, metrics={}, time=1.0))
    history(UpdateMetrics(2000, updates=0, metrics={}, time=2.0))  # warm-up: 1000 steps/s, nothing learns
    assert _rates(history) == (1000.0, 0.0, None)
    history(UpdateMetrics(2030, updates=30, metrics={}, time=3.0))  # learning starts: the window starts again
    assert _rates(history) == (None, None, None)
    for i in range(1, 31):  # then 40 steps/s, 40 updates/s, for 30 s
        history(UpdateMetrics(2030 + 40 * i, updates=40, metrics={}, time=3.0 + i))
    steps_per_s, updates_per_s, eta = _rates(history)
    assert (steps_per_s, updates_per_s) == (40.0, 40.0)
    assert eta == (100_000 - (2030 + 40 * 30)) / 40.0
    # the window has a fixed length: a slower last 10 s shows at once, whatever came before
    for i in range(1, 11):
        history(UpdateMetrics(3230 + 20 * i, updates=20, metrics={}, time=33.0 + i))
    assert _rates(history)[:2] == (20.0, 20.0)
    assert RATE_WINDOW_S == 10.0


def test_rates_are_zero_while_paused_and_start_again_after_it():
    history = MetricsHistory()
    _rates_run(history)
    for i in range(6):
        history(UpdateMetrics(100 * i, updates=10 * i and 10, metrics={}, time=float(i)))
    history(StateChanged(500, state=RunState.PAUSED, time=5.5))
    assert _rates(history) == (0.0, 0.0, None)
    history(StateChanged(500, state=RunState.RUNNING, time=100.0))  # an hour of pause is not training time
    history(UpdateMetrics(550, updates=5, metrics={}, time=100.5))
    assert _rates(history) == (None, None, None)
    history(UpdateMetrics(700, updates=15, metrics={}, time=101.5))
    steps_per_s, updates_per_s, eta = _rates(history)
    assert (steps_per_s, updates_per_s) == (150.0, 15.0) and eta == (100_000 - 700) / 150.0
    history(StateChanged(700, state=RunState.EVALUATING, time=102.0))
    assert _rates(history) == (0.0, 0.0, None)
    history(StateChanged(700, state=RunState.FINISHED, time=103.0))
    assert _rates(history) == (None, None, None)


def test_updates_farther_apart_than_the_window_are_unknown_not_zero():
    history = MetricsHistory()
    _rates_run(history)
    history(UpdateMetrics(2048, updates=1, metrics={}, time=1.0))  # TRPO: one update per rollout
    history(UpdateMetrics(2548, updates=0, metrics={}, time=2.0))
    history(UpdateMetrics(3048, updates=0, metrics={}, time=3.0))
    steps_per_s, updates_per_s, _ = _rates(history)
    assert steps_per_s == 500.0 and updates_per_s is None
    history(UpdateMetrics(4096, updates=1, metrics={}, time=5.0))
    assert _rates(history)[1] == 0.25


def test_status_updates_count_every_update_of_the_run():
    history = MetricsHistory()
    _rates_run(history)
    for i in range(1, 5):
        history(UpdateMetrics(100 * i, updates=7, metrics={}, time=float(i)))
    assert history.status().updates == 28


def test_update_rates_below_one_a_second_read_as_seconds_per_update():
    from rltui.widgets.status_bar import format_update_rate

    assert format_update_rate(None) == "– upd/s"
    assert format_update_rate(0.25) == "4.0 s/upd"
    assert format_update_rate(0.0) == "0 upd/s"
    assert format_update_rate(40.0) == "40 upd/s"


def test_a_running_run_silent_for_long_shows_no_rates():
    from rltui.widgets.status_bar import SILENT_S, StatusBar

    history = MetricsHistory()
    _rates_run(history)
    history(UpdateMetrics(100, updates=1, metrics={}, time=1.0))
    history(UpdateMetrics(200, updates=1, metrics={}, time=3.0))
    status = history.status()
    assert status.steps_per_s == 50.0
    assert not StatusBar(clock=lambda: 3.0 + SILENT_S)._silent(status)
    assert StatusBar(clock=lambda: 3.1 + SILENT_S)._silent(status)  # e.g. a watched run that was killed
    assert not StatusBar(clock=None)._silent(status)


# ---- evaluation mode: its own record -------------------------------------------------------------


def test_evaluation_mode_episodes_are_their_own_series_and_one_log_line_per_session():
    from rltui.history import MANUAL_RETURN

    history = MetricsHistory()
    _rates_run(history)
    scheduled = EvalResult(1000, return_mean=-900.0, return_std=5.0, length_mean=200, episodes=10, time=1.0)
    history(scheduled)
    history(StateChanged(1200, state=RunState.EVALUATING, time=2.0))
    manual = [-150.0, -130.0, -170.0, -149.0]
    for i, ret in enumerate(manual):
        history(EvalResult(1200, return_mean=ret, return_std=0.0, length_mean=200, episodes=1, returns=(ret,),
                           source="manual", time=3.0 + i))
    assert history.status().last_eval == scheduled  # the run's evaluation is still the scheduled one
    assert history.series(EVAL_RETURN).y.tolist() == [-900.0]  # no bar through the curve at step 1,200
    assert history.series(MANUAL_RETURN).y.tolist() == manual
    lines_before = [e.text for e in history.log_since(0)]
    assert not any("-150.0" in line for line in lines_before)  # no line per episode
    history(StateChanged(1200, state=RunState.PAUSED, time=8.0))  # evaluation mode off
    history(StateChanged(1200, state=RunState.EVALUATING, time=9.0))  # and on again, with no episode
    history(StateChanged(1200, state=RunState.RUNNING, time=10.0))
    summaries = [e.text for e in history.log_since(0) if e.text.startswith("evaluation mode")]
    mean, std = np.mean(manual), np.std(manual)
    assert summaries == [f"evaluation mode: 4 episodes, {mean:.1f} ± {std:.1f} (deterministic, at step 1,200)"]
    history(EvalResult(1500, return_mean=-800.0, return_std=1.0, length_mean=200, episodes=2,
                       source="requested", time=11.0))
    assert history.status().last_eval.step == 1500
    assert [e.text for e in history.log_since(0)][-1] == "eval (requested, deterministic, 2 ep): -800.0 ± 1.0"


def test_an_eval_event_of_an_older_log_without_a_source_is_scheduled():
    from rltui.events import Event as AnyEvent

    event = AnyEvent.from_json({"event": "eval", "step": 5, "time": 1.0, "return_mean": -1.0, "return_std": 0.0,
                                "length_mean": 200.0, "episodes": 1})
    assert isinstance(event, EvalResult) and event.source == "scheduled"
