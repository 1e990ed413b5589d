"""`rltui ps`: the live runs under a directory, found by their control sockets (stand-in engines
serve them here; tests/test_control_process.py lists real runs)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from control_fake import start_fake, stop_fake, wait_for_a_rate

from rltui.commands import Pause
from rltui.control import socket_path

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parents[1]


def rltui(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "rltui", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env=env)


def test_ps_lists_the_live_runs_and_not_a_stale_socket(tmp_path):
    saves = tmp_path / "saves"
    live = [start_fake(saves / "run-a"), start_fake(saves / "deeper" / "run-b")]
    (saves / "run-c").mkdir()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(socket_path(saves / "run-c")))
    stale.close()  # a killed run's socket: the file, nobody listening
    (saves / "run-a" / "checkpoints").mkdir()
    try:
        for run in ("run-a", "deeper/run-b"):
            wait_for_a_rate(saves / run)
        result = rltui("ps", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        header, *rows = result.stdout.splitlines()
        assert header.split() == ["PID", "STATE", "STEP", "STEPS/S", "ALGO", "ENV", "RUN", "DIR"]
        assert len(rows) == 2
        for row, run_dir in zip(rows, ["saves/deeper/run-b", "saves/run-a"], strict=True):
            pid, state, step, rate, algo, env, shown_dir = row.split()
            assert (pid, state, algo, env, shown_dir) == (str(os.getpid()), "running", "mpo", "Pendulum-v1", run_dir)
            assert float(rate.replace(",", "")) > 0  # measured over the last seconds of the run
            assert step.endswith(f"/{10**9:,}")
        assert result.stderr == "note: saves/run-c/control.sock: stale (its run was killed; resuming the run " \
                                "replaces it)\n"

        as_json = rltui("ps", str(saves / "run-a"), "--json", cwd=tmp_path)
        (status,) = json.loads(as_json.stdout)
        assert status["run_dir"] == str(saves / "run-a") and status["pid"] == os.getpid()
    finally:
        for engine, thread in live:
            stop_fake(engine, thread)
    after = rltui("ps", "saves", cwd=tmp_path)
    assert after.returncode == 0 and after.stdout == "no live runs under saves\n"


def test_ps_without_runs_and_with_a_bad_directory(tmp_path):
    none = rltui("ps", cwd=tmp_path)  # ./saves does not exist
    assert none.returncode == 2 and none.stderr == "error: saves: not a directory (expected a directory of runs, " \
                                                   "e.g. ./saves)\n"
    (tmp_path / "empty").mkdir()
    empty = rltui("ps", "empty", cwd=tmp_path)
    assert (empty.returncode, empty.stdout, empty.stderr) == (0, "no live runs under empty\n", "")
    assert rltui("ps", "empty", "--json", cwd=tmp_path).stdout == "[]\n"


def test_a_paused_run_shows_no_rate(tmp_path):
    engine, thread = start_fake(tmp_path / "saves" / "run")
    try:
        assert engine.submit(Pause()).result(5).ok
        (row,) = rltui("ps", cwd=tmp_path).stdout.splitlines()[1:]
        assert row.split()[1:4:2] == ["paused", "-"]
    finally:
        stop_fake(engine, thread)
