"""System metrics: what the sampler measures against the kernel's own figures, its silence where
a library or a GPU is missing, and the engine putting them in the run log at most once a second."""

from __future__ import annotations

import os
import sys

from conftest import tiny_preset

from rltui.engine import Engine
from rltui.events import UpdateMetrics
from rltui.rundir import create_run_dir
from rltui.runlog import LOG_NAME, read_events
from rltui.system import CPU_PERCENT, GPU_MEM_MB, GPU_PERCENT, RSS_MB, SystemSampler
from rltui.widgets.status_bar import format_system


def _resident_mib() -> float:
    """This process's resident set from /proc/self/statm (pages), independent of psutil."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_the_sampler_measures_this_process():
    sampler = SystemSampler("cpu", interval_s=0.0)
    sum(i * i for i in range(2_000_000))  # some CPU time to measure
    sample = sampler.sample()
    assert set(sample) == {CPU_PERCENT, RSS_MB}  # a CPU run: no GPU fields
    assert 0.0 < sample[CPU_PERCENT] <= 100.0 * os.cpu_count()
    assert abs(sample[RSS_MB] - _resident_mib()) < 0.05 * _resident_mib()


def test_missing_libraries_and_gpus_hide_the_fields(monkeypatch):
    monkeypatch.setitem(sys.modules, "psutil", None)  # `import psutil` raises ImportError
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert SystemSampler("cuda:0").sample() == {}
    monkeypatch.undo()
    assert GPU_PERCENT not in SystemSampler("cuda").sample()  # no NVIDIA driver on this machine, or no such GPU


def test_the_sampler_waits_its_interval():
    sampler = SystemSampler("cpu", interval_s=3600.0)
    assert sampler.due()
    sampler.sample()
    assert not sampler.due()


def test_the_run_log_holds_system_metrics_at_most_once_a_second(tmp_path):
    preset = tiny_preset("trpo", {"train": {"total_steps": 15_000}, "eval": {"interval": 0}})
    engine = Engine(preset, create_run_dir(preset, tmp_path))
    engine.run()
    sampled = [e for e in read_events(engine.run_dir / LOG_NAME)[0]
               if isinstance(e, UpdateMetrics) and CPU_PERCENT in e.metrics]
    assert len(sampled) >= 2, "fewer than two samples of system metrics in the run log"
    assert all(e.metrics[RSS_MB] > 10 for e in sampled)  # torch alone is more than that
    times = [e.time for e in sampled]
    assert all(b - a >= 0.99 for a, b in zip(times, times[1:], strict=False))


def test_the_status_bar_text():
    assert format_system({CPU_PERCENT: 98.4, RSS_MB: 1300.0}) == "CPU 98%  RAM 1.3G"
    assert format_system({CPU_PERCENT: 3.0, RSS_MB: 412.0, GPU_PERCENT: 45.0, GPU_MEM_MB: 3174.4}) == \
        "CPU 3%  RAM 412M  GPU 45% 3.1G"
    assert format_system({}) == ""
