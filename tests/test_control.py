"""The control socket against a stand-in engine (tests/control_fake.py): the protocol line by line,
hostile clients, the socket file's life, long run directories, ControlClient and RemoteEngine.
The same server inside real `rltui` processes: tests/test_control_process.py."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from control_fake import FakeEngine

from rltui import control
from rltui.commands import Checkpoint, Evaluate, Pause, Reply, Resume, SetEvalMode, Stop
from rltui.control import (
    MAX_CLIENTS,
    MAX_IN_FLIGHT,
    MAX_LINE_BYTES,
    ControlClient,
    ControlError,
    ControlServer,
    NotLiveError,
    RemoteEngine,
    socket_path,
)
from rltui.events import Event, RunState, StateChanged
from rltui.runlog import LOG_NAME

pytestmark = pytest.mark.timeout(60)


class LineClient:
    """A raw connection: bytes out, reply objects in."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        with control._address(path) as address:
            self.sock.connect(address)
        self.buffer = b""

    def send(self, data: bytes | dict) -> None:
        self.sock.sendall(data if isinstance(data, bytes) else (json.dumps(data) + "\n").encode())

    def reply(self, timeout: float = 5.0) -> dict:
        self.sock.settimeout(timeout)
        while b"\n" not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("connection closed")
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def ask(self, data: bytes | dict) -> dict:
        self.send(data)
        return self.reply()

    def closed(self, timeout: float = 5.0) -> bool:
        try:
            self.reply(timeout)
        except (EOFError, ConnectionResetError):  # reset: the server closed with the client's bytes unread
            return True
        return False

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def live(tmp_path):
    """A running fake engine with its server; stopped (and checked to clean up) afterwards."""
    runs: list[tuple[FakeEngine, threading.Thread]] = []

    def make(run_dir: Path | None = None, **kwargs) -> FakeEngine:
        run_dir = run_dir or tmp_path / "run"
        run_dir.mkdir(parents=True, exist_ok=True)
        engine = FakeEngine(run_dir, **kwargs)
        thread = engine.start()
        wait_for(lambda: engine.state is RunState.RUNNING)
        runs.append((engine, thread))
        return engine

    yield make
    for engine, thread in runs:
        engine.stall.clear()
        engine.submit(Stop())
        thread.join(10)
        assert not thread.is_alive()
        assert not socket_path(engine.run_dir).exists()


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def test_status_is_answered_by_the_server(live):
    engine = live()
    path = socket_path(engine.run_dir)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with ControlClient(path) as client:
        wait_for(lambda: client.status()["step"] > 0)
        status = client.status()
    assert status["pid"] == os.getpid()
    assert status["run_dir"] == str(engine.run_dir)
    assert (status["algo"], status["env_id"], status["name"], status["state"]) == ("mpo", "Pendulum-v1", "fake",
                                                                                  "running")
    assert status["total_steps"] == engine.total_steps
    assert status["protocol"] == 1
    assert status["last_eval"] is None and status["last_checkpoint"] is None
    assert set(status) >= {"steps_per_s", "updates_per_s", "episodes", "updates", "started", "message", "device"}


def test_status_answers_while_the_loop_is_stuck_in_a_long_update(live):
    engine = live()
    engine.stall.set()
    with ControlClient(socket_path(engine.run_dir)) as client:
        started = time.monotonic()
        for _ in range(20):
            assert client.status()["state"] == "running"
        assert time.monotonic() - started < 1.0
        # a command waits for the loop: answered "pending" after its timeout, once
        reply = client.request("checkpoint", timeout=0.2)
        assert reply["ok"] and reply["pending"] and reply["data"] == {}
        engine.stall.clear()
        wait_for(lambda: client.status()["last_checkpoint"] is not None)
        assert client.status()["last_checkpoint"]["path"].endswith(f"step-{client.status()['last_checkpoint']['step']}")


def test_every_command_is_acknowledged_once_it_took_effect(live):
    engine = live()
    raw = LineClient(socket_path(engine.run_dir))
    reply = raw.ask({"command": "pause", "id": "p1"})
    assert reply == {"ok": True, "message": "paused", "data": {}, "id": "p1"}
    assert engine.state is RunState.PAUSED
    assert raw.ask({"command": "status", "id": 2})["data"]["state"] == "paused"
    assert raw.ask({"command": "resume", "id": 3}) == {"ok": True, "message": "running", "data": {}, "id": 3}
    saved = raw.ask({"command": "checkpoint", "id": 4.5})
    assert saved["ok"] and saved["id"] == 4.5 and saved["data"]["path"].endswith(f"step-{saved['data']['step']}")
    reply = raw.ask({"command": "evaluate", "episodes": 3})
    assert reply["data"]["episodes"] == 3 and reply["data"]["return_std"] is None  # NaN as null
    assert "id" not in reply
    assert raw.ask({"command": "eval_mode", "on": True})["message"] == "eval mode on"
    assert engine.state is RunState.EVALUATING
    assert raw.ask({"command": "eval_mode", "on": False})["message"] == "eval mode off"
    status = raw.ask({"command": "status"})["data"]
    assert status["last_eval"]["episodes"] == 3 and status["last_eval"]["return_std"] is None
    assert status["last_checkpoint"] == saved["data"]
    assert engine.submitted == [Pause(), Resume(), Checkpoint(), Evaluate(3), SetEvalMode(True), SetEvalMode(False)]
    raw.close()


def test_a_slow_command_is_pending_after_its_timeout_and_gets_no_second_reply(live):
    engine = live(command_delay_s=0.5)
    raw = LineClient(socket_path(engine.run_dir))
    started = time.monotonic()
    reply = raw.ask({"command": "checkpoint", "id": 1, "timeout": 0.1})
    assert reply["pending"] is True and reply["ok"] is True and reply["id"] == 1
    assert time.monotonic() - started < 0.45
    assert raw.ask({"command": "status", "id": 2})["id"] == 2
    time.sleep(0.7)  # the checkpoint is written now; its late result is not sent
    raw.send({"command": "status", "id": 3})
    assert raw.reply()["id"] == 3
    raw.close()


@pytest.mark.parametrize("line, message", [
    (b"not json\n", "malformed request: not JSON (Expecting value: line 1 column 1 (char 0))"),
    (b"[1, 2]\n", "malformed request: expected a JSON object, got list"),
    (b'"pause"\n', "malformed request: expected a JSON object, got str"),
    (b"\xff\xfe\n", "malformed request: not UTF-8"),
    (b'{"command": "dance"}\n', "unknown command 'dance' (expected one of checkpoint, eval_mode, evaluate, pause, "
                                "resume, stop, or status)"),
    (b'{"id": 1}\n', "unknown command 'None' (expected one of checkpoint, eval_mode, evaluate, pause, resume, stop, "
                     "or status)"),
    (b'{"command": "pause", "now": true}\n', "pause: unknown field 'now'"),
    (b'{"command": "status", "verbose": true}\n', "status: unknown field 'verbose'"),
    (b'{"command": "evaluate", "episodes": 0}\n', "evaluate: episodes must be an integer in [1, 10000] or null"),
    (b'{"command": "evaluate", "episodes": 1e400}\n', "evaluate: episodes must be an integer in [1, 10000] or null"),
    (b'{"command": "eval_mode", "on": "yes"}\n', "eval_mode: on must be true or false"),
    (b'{"command": "stop", "final_checkpoint": 1}\n', "stop: final_checkpoint must be true or false"),
    (b'{"command": "pause", "id": {"a": 1}}\n', "id must be a string of at most 200 characters or a number"),
    (b'{"command": "pause", "id": "' + b"x" * 201 + b'"}\n', "id must be a string of at most 200 characters or a number"),
    (b'{"command": "pause", "timeout": -1}\n', "timeout must be a number of seconds in (0, 3600]"),
    (b'{"command": "pause", "timeout": true}\n', "timeout must be a number of seconds in (0, 3600]"),
    (b"[" * 30000 + b"]" * 30000 + b"\n", "malformed request: not JSON (maximum recursion depth exceeded while "
                                          "decoding a JSON array from a unicode string)"),
])
def test_bad_requests_get_one_error_reply_and_disturb_nothing(live, line, message):
    engine = live()
    raw = LineClient(socket_path(engine.run_dir))
    before = engine.step
    reply = raw.ask(line)
    assert reply.pop("id", None) == (1 if b'"id": 1' in line else None)
    assert reply == {"ok": False, "message": message, "data": {}}
    assert raw.ask({"command": "status", "id": "after"})["ok"]  # the connection goes on
    assert engine.submitted == []
    wait_for(lambda: engine.step > before)
    raw.close()


def test_blank_lines_and_crlf_are_fine_and_replies_echo_ids(live):
    engine = live()
    raw = LineClient(socket_path(engine.run_dir))
    raw.send(b"\n  \n" + b'{"command": "status", "id": "a"}\r\n' + b'{"command": "status", "id": "b"}\n')
    assert [raw.reply()["id"], raw.reply()["id"]] == ["a", "b"]
    raw.close()


def test_an_oversized_line_is_refused_and_its_connection_closed(live):
    engine = live()
    raw = LineClient(socket_path(engine.run_dir))
    other = LineClient(socket_path(engine.run_dir))
    raw.sock.sendall(b"x" * (MAX_LINE_BYTES + 10))
    reply = raw.reply()
    assert reply == {"ok": False, "message": f"request line longer than {MAX_LINE_BYTES} bytes: connection closed",
                     "data": {}}
    assert raw.closed()
    assert other.ask({"command": "status"})["ok"]
    # a complete line over the limit too
    third = LineClient(socket_path(engine.run_dir))
    third.sock.sendall(b'{"command": "status", "pad": "' + b"y" * MAX_LINE_BYTES + b'"}\n')
    assert third.reply()["message"].startswith("request line longer than")
    assert third.closed()
    other.close()


def test_a_silent_client_and_a_flooding_client_stall_neither_training_nor_others(live):
    engine = live()
    path = socket_path(engine.run_dir)
    silent = LineClient(path)
    flood = LineClient(path)
    stop_flooding = threading.Event()

    def flood_it():  # requests as fast as the socket takes them; never reads a reply
        line = b'{"command": "status"}\n' * 1000
        flood.sock.settimeout(0.2)
        while not stop_flooding.is_set():
            try:
                flood.sock.sendall(line)
            except (TimeoutError, BlockingIOError):
                pass
            except OSError:
                return

    flooder = threading.Thread(target=flood_it, daemon=True)
    flooder.start()
    try:
        time.sleep(0.5)
        with ControlClient(path) as client:
            for _ in range(5):
                step = engine.step
                started = time.monotonic()
                assert client.status()["state"] == "running"
                assert time.monotonic() - started < 0.5
                wait_for(lambda step=step: engine.step > step + 50, timeout=2)
                time.sleep(0.1)
    finally:
        stop_flooding.set()
        flooder.join(5)
    silent.close()
    flood.close()


def test_a_silent_client_is_closed_after_the_idle_timeout(live):
    engine = live(idle_timeout=0.3)
    raw = LineClient(socket_path(engine.run_dir))
    assert raw.ask({"command": "status"})["ok"]
    assert raw.closed(timeout=3)


def test_a_half_closed_client_gets_its_replies(live):
    engine = live()
    raw = LineClient(socket_path(engine.run_dir))
    raw.send(b'{"command": "status", "id": 1}\n{"command": "checkpoint", "id": 2}\n')
    raw.sock.shutdown(socket.SHUT_WR)
    assert {raw.reply()["id"], raw.reply()["id"]} == {1, 2}
    assert raw.closed()
    partial = LineClient(socket_path(engine.run_dir))
    partial.send(b'{"command": "status"}')  # no newline, then the end
    partial.sock.shutdown(socket.SHUT_WR)
    assert partial.reply()["message"].startswith("malformed request: the connection ended in the middle of a line")
    assert partial.closed()


def test_several_clients_at_once_and_a_limit(live):
    engine = live()
    path = socket_path(engine.run_dir)
    clients = [LineClient(path) for _ in range(MAX_CLIENTS)]
    for i, client in enumerate(clients):
        client.send({"command": "status", "id": i})
    assert [client.reply()["id"] for client in clients] == list(range(MAX_CLIENTS))
    extra = LineClient(path)
    assert extra.reply() == {"ok": False, "message": f"refused: {MAX_CLIENTS} clients are connected already",
                             "data": {}}
    assert extra.closed()
    with pytest.raises(ControlError, match=f"refused: {MAX_CLIENTS} clients are connected already"):
        ControlClient(path).status()
    clients.pop().close()
    wait_for(lambda: len(engine.server._conns) < MAX_CLIENTS)
    again = LineClient(path)
    assert again.ask({"command": "status"})["ok"]
    for client in [*clients, again]:
        client.close()


def test_in_flight_commands_per_connection_are_limited(live):
    engine = live()
    engine.stall.set()
    raw = LineClient(socket_path(engine.run_dir))
    for i in range(MAX_IN_FLIGHT + 1):
        raw.send({"command": "checkpoint", "id": i, "timeout": 30})
    reply = raw.reply()
    assert reply["id"] == MAX_IN_FLIGHT and not reply["ok"]
    assert reply["message"] == f"checkpoint: {MAX_IN_FLIGHT} commands are in flight on this connection already; " \
                               "wait for their replies"
    engine.stall.clear()
    assert sorted(raw.reply()["id"] for _ in range(MAX_IN_FLIGHT)) == list(range(MAX_IN_FLIGHT))
    raw.close()


def test_stop_is_answered_when_the_run_ended_then_the_socket_is_gone(live, tmp_path):
    engine = live()
    path = socket_path(engine.run_dir)
    waiting = LineClient(path)
    waiting.send({"command": "checkpoint", "id": "late", "timeout": 60})
    with ControlClient(path) as client:
        engine.stall.set()  # the checkpoint and the stop wait in the queue
        time.sleep(0.05)
        reply_future = client.send({"command": "stop", "timeout": 30})
        engine.stall.clear()
        reply = reply_future.result(10)
    assert reply["ok"] and reply["message"].startswith("stopped at step")
    wait_for(lambda: not path.exists())
    with pytest.raises(NotLiveError, match="no control socket") as info:
        ControlClient(path)
    assert not info.value.stale


def test_commands_after_the_end_and_pending_ones_at_the_end(tmp_path):
    engine = FakeEngine(tmp_path, total_steps=10**9)
    thread = engine.start()
    wait_for(lambda: engine.state is RunState.RUNNING)
    raw = LineClient(socket_path(tmp_path))
    engine.stall.set()
    raw.send({"command": "stop", "id": "s"})
    raw.send({"command": "pause", "id": "p", "timeout": 60})
    time.sleep(0.1)
    engine.stall.clear()
    replies = {r["id"]: r for r in (raw.reply(), raw.reply())}
    assert replies["s"]["ok"] and replies["p"] == {"ok": False, "message": "the run has ended", "data": {}, "id": "p"}
    assert raw.closed()
    thread.join(5)
    assert engine.submit(Pause()).result(1).message == "the run has ended"


def test_a_stale_socket_is_replaced_and_a_non_socket_is_not(tmp_path):
    path = socket_path(tmp_path)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # as a killed process leaves it: the file, nobody listening
    with pytest.raises(NotLiveError, match="stale socket") as info:
        ControlClient(path)
    assert info.value.stale
    engine = FakeEngine(tmp_path)
    server = ControlServer(engine, tmp_path)
    server.start()
    try:
        with ControlClient(path) as client:
            assert client.status()["pid"] == os.getpid()
    finally:
        server.close()
    assert not path.exists()
    path.write_text("not a socket")
    server = ControlServer(engine, tmp_path)
    with pytest.raises(ControlError, match="exists and is not a socket"):
        server.start()
    server.close()
    assert path.read_text() == "not a socket"


def test_a_run_directory_of_200_characters(tmp_path):
    run_dir = tmp_path
    while len(str(run_dir)) < 200:
        run_dir = run_dir / ("d" * min(40, 200 - len(str(run_dir)) - 1 or 1))
    run_dir.mkdir(parents=True)
    assert len(str(run_dir)) >= 200 and len(str(socket_path(run_dir))) > control.MAX_ADDRESS_BYTES
    engine = FakeEngine(run_dir, total_steps=10**9)
    thread = engine.start()
    wait_for(lambda: engine.state is RunState.RUNNING)
    path = socket_path(run_dir)
    assert stat.S_ISSOCK(os.lstat(path).st_mode) and stat.S_IMODE(os.lstat(path).st_mode) == 0o600
    with ControlClient(path) as client:
        assert client.status()["run_dir"] == str(run_dir)
        assert client.request("pause")["ok"]
        assert client.request("stop", timeout=10)["ok"]
    thread.join(5)
    assert not path.exists()


def test_remote_engine_drives_a_run_like_a_local_engine(live):
    engine = live()
    remote = RemoteEngine(engine.run_dir, poll_s=0.05)
    try:
        assert (remote.algo, remote.total_steps, remote.pid, remote.run_dir) == (
            "mpo", engine.total_steps, os.getpid(), engine.run_dir)
        assert remote.state is RunState.RUNNING
        assert remote.submit(Pause()).result(5) == Reply(True, "paused")
        wait_for(lambda: remote.state is RunState.PAUSED)
        reply = remote.submit(Checkpoint()).result(5)
        assert reply.ok and reply.data["path"].endswith(f"step-{reply.data['step']}")
        assert remote.submit(Evaluate(2)).result(5).data["episodes"] == 2
        assert remote.submit(Resume()).result(5).ok
        wait_for(lambda: remote.state is RunState.RUNNING and remote.step > 0)
        assert remote.submit(Stop()).result(10).ok
        wait_for(lambda: not remote.connected)
        wait_for(lambda: remote.state is RunState.FINISHED)  # the run log's last state
        assert remote.submit(Pause()).result(5) == Reply(False, "the run has ended")
    finally:
        remote.close()


@pytest.mark.parametrize("logged", [None, RunState.RUNNING, RunState.PAUSED])
def test_a_remote_run_that_vanished_without_a_final_state_reads_as_failed(tmp_path, logged):
    if logged is not None:  # killed mid-run: its log's last state is not a final one
        (tmp_path / LOG_NAME).write_text(json.dumps(StateChanged(step=3, state=logged).to_json()) + "\n")
    engine = FakeEngine(tmp_path)
    server = ControlServer(engine, tmp_path)
    server.start()
    remote = RemoteEngine(tmp_path, poll_s=0.05)
    told: list[Event] = []
    remote.subscribe(told.append)
    try:
        server.close()  # as if killed
        wait_for(lambda: remote.state is RunState.FAILED)
        wait_for(lambda: len(told) == 1)
        (lost,) = told
        assert isinstance(lost, StateChanged) and lost.state is RunState.FAILED
        assert lost.message.startswith(f"the run's process (pid {os.getpid()}) ended without a word")
    finally:
        remote.close()


NOBODY = 65534


def connect_as(uid: int, path: Path) -> str:
    """Connect to `path` from a forked child running as `uid`, ask for status; what it got back."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: nothing but system calls, then _exit
        result = b"EOF"
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(5)
            try:
                sock.connect(str(path))
                try:
                    sock.sendall(b'{"command": "status"}\n')
                except BrokenPipeError:  # refused at once: its one line is there to read
                    pass
                data = b""
                while b"\n" not in data:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                result = data.strip() or b"EOF"
            except PermissionError:
                result = b"EACCES"
        except BaseException as exc:  # noqa: BLE001
            result = repr(exc).encode()
        finally:
            os.write(write_end, result)
            os._exit(0)
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as pipe:
            return pipe.read().decode()
    finally:
        os.waitpid(pid, 0)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to connect as another user")
def test_another_user_is_refused():
    base = Path(tempfile.mkdtemp(prefix="rltui-uid-"))  # outside pytest's 0700 tree, so nobody can reach it
    try:
        base.chmod(0o711)
        engine = FakeEngine(base)
        server = ControlServer(engine, base)
        server.start()
        path = socket_path(base)
        try:
            assert connect_as(NOBODY, path) == "EACCES"  # mode 0600: the kernel refuses the connection
            path.chmod(0o666)  # where a mode lets it through, the server refuses it by the peer's credentials
            reply = json.loads(connect_as(NOBODY, path))
            assert reply == {"ok": False, "data": {}, "message": f"refused: this run belongs to user 0, the connection "
                                                                 f"comes from user {NOBODY}"}
            with ControlClient(path) as client:
                assert client.status()["pid"] == os.getpid()
        finally:
            server.close()
    finally:
        for child in base.iterdir():
            child.unlink()
        base.rmdir()


OUT_OF_FDS = """
import os, resource, socket, subprocess, sys, time
from pathlib import Path
from control_fake import FakeEngine
from rltui.control import ControlClient, ControlServer, socket_path

run_dir = Path(sys.argv[1])
server = ControlServer(FakeEngine(run_dir), run_dir)
server.start()
path = str(socket_path(run_dir))
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 3, hard))
clients = subprocess.Popen([sys.executable, "-c", f'''
import resource, socket, time
resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))  # (the low limit is inherited)
held = [socket.socket(socket.AF_UNIX) for _ in range(10)]
for s in held:
    s.connect({path!r})
time.sleep(2)
'''])
time.sleep(1.0)
cpu = time.process_time()
time.sleep(1.0)
print("paused", server._accept_again_at is not None, "cpu", time.process_time() - cpu)
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
clients.wait()
time.sleep(1.2)
with ControlClient(path) as client:
    print("answers", client.status()["pid"] == os.getpid())
server.close()
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files in /proc/self/fd")
def test_running_out_of_file_descriptors_pauses_accepting_instead_of_spinning(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), str(Path(__file__).parent)])}
    result = subprocess.run([sys.executable, "-c", OUT_OF_FDS, str(tmp_path)], capture_output=True, text=True,
                            timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    paused, answers = result.stdout.splitlines()
    assert paused.startswith("paused True cpu ") and float(paused.split()[-1]) < 0.2, result.stdout
    assert answers == "answers True"
