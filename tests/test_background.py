"""Runs that outlive their terminal, with real `rltui` processes: `train --detach` (a new session,
output in the run's output.log, bad input refused in the foreground) and a dashboard run in a pty
whose terminal hangs up (it goes on headless until stopped, with a final checkpoint)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from rltui.checkpoint import latest_checkpoint
from rltui.runlog import read_events

pytestmark = pytest.mark.timeout(240)
REPO = Path(__file__).resolve().parents[1]
LONG_RUN = ["--set", "train.total_steps=10000000", "--set", "eval.interval=0"]


def rltui(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "rltui", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def wait_for(condition, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met in {timeout} s")
        time.sleep(0.1)


def last_step(run_dir: Path) -> int:
    if not (run_dir / "metrics.jsonl").exists():
        return -1
    events, _ = read_events(run_dir / "metrics.jsonl")
    return events[-1].step if events else -1


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_gone(pid: int, timeout: float = 60.0) -> None:
    wait_for(lambda: not alive(pid), timeout, f"process {pid} to end")


def test_detach_starts_the_run_in_its_own_session_and_returns(tmp_path, write_preset_file):
    preset = write_preset_file("mpo")
    started = time.monotonic()
    result = rltui("train", str(preset), "--detach", "--saves", "runs", *LONG_RUN, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 60
    (run_dir,) = (tmp_path / "runs").iterdir()
    shown = f"runs/{run_dir.name}"
    first, *rest = result.stdout.splitlines()
    match = re.fullmatch(r"started in the background \(pid (\d+)\): (.+)", first)
    assert match and match[2] == shown
    pid = int(match[1])
    assert rest == [f"  output   {shown}/output.log", f"  attach   rltui attach {shown}   (q detaches, Q stops)",
                    f"  status   rltui ps {shown}",
                    f"  stop     kill {pid}   (a final checkpoint is written; resume with: rltui resume {shown})"]
    try:
        assert os.getsid(pid) == pid  # a session of its own: no terminal to lose
        wait_for(lambda: last_step(run_dir) > 0, what="training")
        log = (run_dir / "output.log").read_text()
        assert log.startswith(f"detached run, pid {pid}, started ")
        assert "step 0/10,000,000" in log
        # a child that fails after the foreground's checks: its one error line and exit status come back
        second = rltui("resume", str(run_dir), "--detach", "--set", "train.total_steps=20000000", cwd=tmp_path)
        assert second.returncode == 2
        assert second.stderr == (f"error: {run_dir}: the run is in use by process {pid} (a live `rltui train` or "
                                 "`rltui resume`); stop it first, or watch it with `rltui watch`\n")
        assert second.stdout == ""
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_gone(pid)
    events, _ = read_events(run_dir / "metrics.jsonl")
    assert events[-1].kind == "state" and events[-1].state.value == "finished"
    assert latest_checkpoint(run_dir).name == f"step-{events[-1].step}"
    assert "finished: tiny-mpo" in (run_dir / "output.log").read_text()


@pytest.mark.parametrize("args, message", [
    (["--set", "train.bogus=1"], "error: --set train.bogus: [train] bogus: unknown key"),
    (["--device", "cuda:99"], None),
])
def test_detach_refuses_bad_input_in_the_foreground(tmp_path, write_preset_file, args, message):
    preset = write_preset_file("trpo")
    result = rltui("train", str(preset), "--detach", "--saves", "runs", *args, cwd=tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line == message if message else line.startswith("error: ")
    assert result.stdout == ""
    assert not (tmp_path / "runs").exists()


class Terminal:
    """`rltui` in a pseudo-terminal of its own (it leads the session, as a login shell's job would
    after the shell passes on the hangup); what it draws is read and dropped."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO), "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
        command = [sys.executable, "-m", "rltui", *args]
        self.pid, self.master = pty.fork()
        if self.pid == 0:  # the child: straight to exec
            try:
                os.chdir(cwd)
                os.execve(command[0], command, env)
            finally:
                os._exit(127)
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.drawn = 0
        self.status: int | None = None
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            self.drawn += len(data)

    def hang_up(self) -> None:
        os.close(self.master)  # the kernel hangs up the terminal: SIGHUP to the session leader

    def exited(self) -> bool:
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
        return self.status is not None

    def kill(self) -> None:
        if not self.exited():
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)


def test_a_dashboard_run_goes_on_headless_when_its_terminal_hangs_up(tmp_path, write_preset_file):
    preset = write_preset_file("mpo")
    terminal = Terminal(["train", str(preset), "--saves", "runs", *LONG_RUN], tmp_path)
    try:
        wait_for(lambda: (tmp_path / "runs").is_dir() and any((tmp_path / "runs").iterdir()), what="the run dir")
        (run_dir,) = (tmp_path / "runs").iterdir()
        wait_for(lambda: last_step(run_dir) > 150 and terminal.drawn > 1000, what="the dashboard to train")
        terminal.hang_up()
        wait_for(lambda: "goes on headless" in _read(run_dir / "output.log"), 30, "the hangup note")
        step = last_step(run_dir)
        wait_for(lambda: last_step(run_dir) > step + 20, 60, "training after the hangup")
        assert not terminal.exited()
        log = _read(run_dir / "output.log")
        assert re.match(r"terminal gone \(SIGHUP\) at [-0-9: ]+, step [0-9,]+: the dashboard closed, the run goes on "
                        rf"headless \(pid {terminal.pid}\)\n", log), log
        os.kill(terminal.pid, signal.SIGTERM)
        wait_for(terminal.exited, 60, "the run to stop")
    finally:
        terminal.kill()
    assert terminal.status == 0
    events, _ = read_events(run_dir / "metrics.jsonl")
    assert events[-1].kind == "state" and events[-1].state.value == "finished"
    assert latest_checkpoint(run_dir).name == f"step-{events[-1].step}"
    log = _read(run_dir / "output.log")
    assert "stopping (SIGTERM): saving a final checkpoint" in log and "finished: tiny-mpo" in log
    assert "\x1b[" not in log  # nothing of the dashboard


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


WEDGED_DASHBOARD = """
import os, signal, sys, threading, time
from pathlib import Path
from types import SimpleNamespace

from rltui import background
from rltui.events import RunState


class Engine:  # what the headless ending reads of an engine
    def __init__(self, run_dir):
        self.run_dir, self.step, self.total_steps, self.algo = run_dir, 0, 60, "mpo"
        self.state = RunState.RUNNING
        self.preset = SimpleNamespace(name="fake", env=SimpleNamespace(id="Pendulum-v1"))

    def subscribe(self, callback):
        pass

    def start(self):
        def run():
            while self.step < self.total_steps:
                time.sleep(0.02)
                self.step += 1
            self.state = RunState.FINISHED
        thread = threading.Thread(target=run)
        thread.start()
        return thread


def wedged_dashboard(engine, show_in):  # starts the run, then never returns: an app stuck on a dead terminal
    threading.Thread(target=engine.run, daemon=True).start()
    os.kill(os.getpid(), signal.SIGHUP)
    threading.Event().wait()


background.APP_EXIT_GRACE_S = 0.3
sys.exit(background.run_dashboard_through_hangup(Engine(Path(sys.argv[1])), wedged_dashboard))
"""


def test_a_dashboard_that_never_closes_after_a_hangup_does_not_keep_the_process(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", WEDGED_DASHBOARD, str(tmp_path)], capture_output=True, text=True,
                            timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    log = (tmp_path / "output.log").read_text()
    assert "the dashboard did not close, the run goes on headless" in log
    assert "finished: fake (mpo, Pendulum-v1) at step 60" in log


def test_a_headless_run_in_a_terminal_goes_on_when_the_terminal_hangs_up(tmp_path, write_preset_file):
    preset = write_preset_file("trpo")
    terminal = Terminal(["train", str(preset), "--headless", "--saves", "runs", *LONG_RUN], tmp_path)
    try:
        wait_for(lambda: (tmp_path / "runs").is_dir() and any((tmp_path / "runs").iterdir()), what="the run dir")
        (run_dir,) = (tmp_path / "runs").iterdir()
        wait_for(lambda: last_step(run_dir) > 100, what="training")
        terminal.hang_up()
        wait_for(lambda: "terminal gone (SIGHUP)" in _read(run_dir / "output.log"), 30, "the hangup note")
        step = last_step(run_dir)
        wait_for(lambda: last_step(run_dir) > step + 100, 60, "training after the hangup")
        assert not terminal.exited()
        os.kill(terminal.pid, signal.SIGTERM)
        wait_for(terminal.exited, 60, "the run to stop")
    finally:
        terminal.kill()
    assert terminal.status == 0
    assert latest_checkpoint(run_dir).name == f"step-{last_step(run_dir)}"
    assert "finished: tiny-trpo" in _read(run_dir / "output.log")
