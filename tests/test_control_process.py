"""The control socket of real `rltui` processes: a headless run steered command by command (each
acknowledged within a second and visible in metrics.jsonl), hostile and concurrent clients while it
trains, `rltui ps`, a killed run's stale socket replaced by its resume, a 200-character run
directory with `--detach`, and a dashboard run whose terminal hung up."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_background import LONG_RUN, Terminal, alive, rltui, wait_for, wait_gone

from rltui.checkpoint import latest_checkpoint
from rltui.control import MAX_LINE_BYTES, ControlClient, NotLiveError, socket_path
from rltui.events import CheckpointSaved, EvalResult, Event, StateChanged
from rltui.runlog import read_events

pytestmark = pytest.mark.timeout(300)
REPO = Path(__file__).resolve().parents[1]


def rltui_process(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "rltui", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def events(run_dir: Path) -> list[Event]:
    return read_events(run_dir / "metrics.jsonl")[0] if (run_dir / "metrics.jsonl").exists() else []


def the_run_dir(saves: Path) -> Path:
    wait_for(lambda: saves.is_dir() and any(saves.iterdir()), what="the run directory")
    (run_dir,) = saves.iterdir()
    return run_dir


def connect(run_dir: Path) -> ControlClient:
    """A client of the run's socket, once it answers with the run training."""
    client: list[ControlClient] = []

    def ready() -> bool:
        try:
            client.append(ControlClient(socket_path(run_dir)))
        except NotLiveError:
            return False
        return True

    wait_for(ready, what="the control socket")
    wait_for(lambda: client[0].status()["step"] > 0, what="training")
    return client[0]


def timed(client: ControlClient, command: str, **fields) -> tuple[dict, float]:
    started = time.monotonic()
    reply = client.request(command, timeout=10, **fields)
    return reply, time.monotonic() - started


def test_a_headless_run_is_steered_through_its_socket(tmp_path, write_preset_file):
    preset = write_preset_file("mpo")
    process = rltui_process("train", str(preset), "--headless", "--saves", "runs", *LONG_RUN, cwd=tmp_path)
    try:
        run_dir = the_run_dir(tmp_path / "runs")
        client = connect(run_dir)
        status = client.status()
        assert (status["pid"], status["algo"], status["env_id"], status["state"]) == (process.pid, "mpo",
                                                                                      "Pendulum-v1", "running")
        assert status["run_dir"] == str(run_dir) and status["total_steps"] == 10_000_000

        listed = rltui("ps", "runs", cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr
        (row,) = listed.stdout.splitlines()[1:]
        assert row.split()[:2] == [str(process.pid), "running"] and row.split()[4:] == ["mpo", "Pendulum-v1",
                                                                                         f"runs/{run_dir.name}"]

        def logged(kind: type, **fields) -> None:  # the command is in the run log, after its reply
            found = [e for e in events(run_dir) if isinstance(e, kind)
                     and all(getattr(e, k) == v for k, v in fields.items())]
            assert found, f"no {kind.__name__} {fields} in metrics.jsonl"

        reply, took = timed(client, "pause")
        assert reply["ok"] and not reply.get("pending") and took < 1.0, (reply, took)
        logged(StateChanged, state="paused")
        step = client.status()["step"]
        time.sleep(0.5)
        assert client.status()["step"] == step and client.status()["state"] == "paused"

        reply, took = timed(client, "resume")
        assert reply["ok"] and took < 1.0, (reply, took)
        wait_for(lambda: client.status()["step"] > step, what="training again")

        reply, took = timed(client, "checkpoint")
        assert reply["ok"] and took < 1.0, (reply, took)
        logged(CheckpointSaved, path=reply["data"]["path"], step=reply["data"]["step"])  # absolute, as in the log
        assert Path(reply["data"]["path"]).is_dir()
        assert client.status()["last_checkpoint"] == reply["data"]

        reply, took = timed(client, "evaluate", episodes=1)
        assert reply["ok"] and reply["data"]["episodes"] == 1 and took < 5.0, (reply, took)
        logged(EvalResult, step=reply["data"]["step"], episodes=1)
        assert client.status()["last_eval"]["return_mean"] == pytest.approx(reply["data"]["return_mean"])

        reply, took = timed(client, "eval_mode", on=True)
        assert reply["ok"] and took < 1.0, (reply, took)
        logged(StateChanged, state="evaluating")
        reply, took = timed(client, "eval_mode", on=False)
        assert reply["ok"] and took < 1.0, (reply, took)
        wait_for(lambda: client.status()["state"] == "running", what="training after evaluation mode")

        # hostile and concurrent clients while it trains
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        raw.connect(str(socket_path(run_dir)))
        silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        silent.connect(str(socket_path(run_dir)))
        raw_file = raw.makefile("rb")
        for line, message in [(b"{oops\n", "malformed request: not JSON"),
                              (b'{"command": "explode"}\n', "unknown command 'explode'"),
                              (b'{"command": "evaluate", "episodes": -3}\n', "evaluate: episodes must be")]:
            raw.sendall(line)
            reply = json.loads(raw_file.readline())
            assert not reply["ok"] and reply["message"].startswith(message)
        stop_flood = threading.Event()

        def flood() -> None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(socket_path(run_dir)))
            sock.settimeout(0.2)
            while not stop_flood.is_set():
                try:
                    sock.sendall(b'{"command": "status"}\n' * 500)
                except (TimeoutError, OSError):
                    pass
            sock.close()

        flooder = threading.Thread(target=flood, daemon=True)
        flooder.start()
        try:
            second = ControlClient(socket_path(run_dir))
            futures = [c.send({"command": "status"}) for c in (client, second) for _ in range(5)]
            assert all(f.result(5)["ok"] for f in futures)
            step = second.status()["step"]
            wait_for(lambda: second.status()["step"] > step + 50, 10, "training beside a silent and a flooding client")
            raw.sendall(b"y" * (MAX_LINE_BYTES + 1))
            assert json.loads(raw_file.readline())["message"].startswith("request line longer than")
            second.close()
        finally:
            stop_flood.set()
            flooder.join(5)
        assert client.status()["state"] == "running"

        reply, took = timed(client, "stop")
        assert reply["ok"] and reply["data"]["state"] == "finished", reply
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
        silent.close()
        raw.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert not socket_path(run_dir).exists()
    final = [e for e in events(run_dir) if isinstance(e, StateChanged)][-1]
    assert final.state.value == "finished" and latest_checkpoint(run_dir).name == f"step-{final.step}"
    assert [e.state.value for e in events(run_dir) if isinstance(e, StateChanged)] == [
        "running", "paused", "running", "evaluating", "running", "finished"]


def test_a_killed_runs_stale_socket_is_not_live_and_its_resume_replaces_it(tmp_path, write_preset_file):
    preset = write_preset_file("trpo")
    process = rltui_process("train", str(preset), "--headless", "--saves", "runs", *LONG_RUN, cwd=tmp_path)
    try:
        run_dir = the_run_dir(tmp_path / "runs")
        with connect(run_dir) as client:
            step = client.request("checkpoint", timeout=10)["data"]["step"]
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
    path = socket_path(run_dir)
    assert path.exists()  # what a killed run leaves
    listed = rltui("ps", "runs", cwd=tmp_path)
    assert listed.stdout == "no live runs under runs\n"
    assert listed.stderr == f"note: runs/{run_dir.name}/control.sock: stale (its run was killed; resuming the run " \
                            "replaces it)\n"

    resumed = rltui_process("resume", str(run_dir), "--headless", "--set", f"train.total_steps={step + 10_000_000}",
                            cwd=tmp_path)
    try:
        with connect(run_dir) as client:
            assert client.status()["pid"] == resumed.pid and client.status()["step"] >= step
            assert client.request("stop", timeout=30)["ok"]
        resumed.communicate(timeout=60)
        assert resumed.returncode == 0
    finally:
        if resumed.poll() is None:
            resumed.kill()
            resumed.communicate()
    assert not path.exists()


def test_a_detached_run_in_a_200_character_directory_is_listed_and_stopped(tmp_path, write_preset_file):
    saves = tmp_path
    while len(str(saves)) < 175:  # the run directory adds "/tiny-mpo-YYYYmmdd-HHMMSS" (25 characters)
        saves = saves / ("s" * min(50, 175 - len(str(saves)) - 1 or 1))
    saves.mkdir(parents=True)
    preset = write_preset_file("mpo")
    result = rltui("train", str(preset), "--detach", "--saves", str(saves), *LONG_RUN, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    pid = int(re.search(r"pid (\d+)", result.stdout)[1])
    try:
        run_dir = the_run_dir(saves)
        assert len(str(run_dir)) >= 200
        client = connect(run_dir)
        listed = rltui("ps", str(tmp_path), cwd=tmp_path)
        (row,) = listed.stdout.splitlines()[1:]
        assert row.split()[0] == str(pid) and row.endswith(os.path.relpath(run_dir, tmp_path))
        assert client.request("stop", timeout=30)["data"]["state"] == "finished"
        client.close()
        wait_gone(pid)
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    assert not socket_path(run_dir).exists()
    assert "finished: tiny-mpo" in (run_dir / "output.log").read_text()


def test_a_dashboard_run_whose_terminal_hung_up_answers_on_its_socket(tmp_path, write_preset_file):
    preset = write_preset_file("trpo")
    terminal = Terminal(["train", str(preset), "--saves", "runs", *LONG_RUN], tmp_path)
    try:
        run_dir = the_run_dir(tmp_path / "runs")
        client = connect(run_dir)
        wait_for(lambda: terminal.drawn > 1000, what="the dashboard")
        terminal.hang_up()
        wait_for(lambda: "goes on headless" in _read(run_dir / "output.log"), 30, "the hangup note")
        step = client.status()["step"]
        wait_for(lambda: client.status()["step"] > step + 100, 30, "training after the hangup")
        assert client.status()["state"] == "running" and client.status()["pid"] == terminal.pid
        assert client.request("stop", timeout=30)["ok"]
        wait_for(terminal.exited, 60, "the run to end")
    finally:
        terminal.kill()
    assert terminal.status == 0
    assert "finished: tiny-trpo" in _read(run_dir / "output.log")
    assert not socket_path(run_dir).exists()


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""
