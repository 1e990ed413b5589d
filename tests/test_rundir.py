"""One owner per run directory (a lock, taken over from a killed owner), and a run log that cannot be
written fails the run visibly. Real processes: `rltui train/resume` in subprocesses, SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import tiny_preset

from rltui import checkpoint as ckpt
from rltui.engine import Engine
from rltui.events import ErrorRaised, Event, RunState
from rltui.rundir import RunLock, RunLockedError, create_run_dir

pytestmark = pytest.mark.timeout(180)
REPO = Path(__file__).resolve().parents[1]


def rltui_process(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "rltui", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def rltui(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "rltui", *args], cwd=cwd, env=env, text=True, capture_output=True,
                          timeout=120)


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


def test_a_second_writer_is_refused_and_a_killed_owner_is_taken_over(tmp_path, write_preset_file):
    preset = write_preset_file("mpo")
    owner = rltui_process("train", str(preset), "--headless", "--saves", "runs", "--set", "train.total_steps=10000000",
                          "--set", "checkpoint.interval=100", "--set", "eval.interval=0", cwd=tmp_path)
    try:
        wait_for(lambda: (tmp_path / "runs").is_dir() and any((tmp_path / "runs").iterdir()))
        (run_dir,) = (tmp_path / "runs").iterdir()
        wait_for(lambda: ckpt.latest_checkpoint(run_dir) is not None)
        preset_before = (run_dir / "preset.toml").read_bytes()

        second = rltui("resume", str(run_dir), "--headless", "--set", "train.total_steps=20000000", cwd=tmp_path)
        assert second.returncode == 2
        assert second.stderr.strip() == (f"error: {run_dir}: the run is in use by process {owner.pid} (a live "
                                         "`rltui train` or `rltui resume`); stop it first, or watch it with `rltui watch`")
        assert (run_dir / "preset.toml").read_bytes() == preset_before
        with pytest.raises(RunLockedError, match=f"process {owner.pid}"):
            Engine(tiny_preset("mpo"), run_dir, resume=True)
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.communicate(timeout=30)
    # The kill left the lock file behind, but not the lock.
    step = ckpt.load_checkpoint(ckpt.latest_checkpoint(run_dir)).step
    resumed = rltui("resume", str(run_dir), "--headless", "--set", f"train.total_steps={step + 50}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert ckpt.latest_checkpoint(run_dir).name == f"step-{step + 50}"


def test_the_lock_is_held_for_the_run_and_released_after(tmp_path, make_preset):
    preset = make_preset("trpo", {"train": {"total_steps": 200}})
    engine = Engine(preset, create_run_dir(preset, tmp_path))
    run_dir = engine.run_dir
    with pytest.raises(RunLockedError, match=f"in use by process {os.getpid()}"):
        RunLock(run_dir)
    engine.run()
    RunLock(run_dir).release()  # free again once the run ended
    never_run = Engine(make_preset("trpo", {"train": {"total_steps": 400}}), run_dir, resume=True)
    never_run.close()
    RunLock(run_dir).release()


def test_an_unwritable_run_log_fails_the_run_with_one_error(tmp_path, make_preset):
    preset = make_preset("mpo", {"train": {"total_steps": 200}})
    engine = Engine(preset, create_run_dir(preset, tmp_path))
    (engine.run_dir / "metrics.jsonl").symlink_to("/dev/full")  # every write fails: no space left on device
    events: list[Event] = []
    engine.subscribe(events.append)
    engine.run()  # never raises
    assert engine.state == RunState.FAILED
    errors = [e for e in events if isinstance(e, ErrorRaised)]
    assert len(errors) == 1
    assert errors[0].message == f"cannot write the run log {engine.run_dir / 'metrics.jsonl'}: No space left on device"
    RunLock(engine.run_dir).release()


def test_an_unwritable_run_log_exits_1_without_a_traceback(tmp_path, write_preset_file):
    preset = write_preset_file("trpo")
    assert rltui("train", str(preset), "--headless", "--saves", "runs", "--set", "train.total_steps=200",
                 cwd=tmp_path).returncode == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    log = run_dir / "metrics.jsonl"
    log.unlink()
    log.symlink_to("/dev/full")
    result = rltui("resume", str(run_dir), "--headless", "--set", "train.total_steps=400", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: cannot write the run log {log}: No space left on device"]
    assert any(line.startswith("FAILED:") for line in result.stderr.splitlines())
