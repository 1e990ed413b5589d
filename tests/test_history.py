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
    assert status.steps_per_s == 250.0
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
