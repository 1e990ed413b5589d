"""Runs that outlive their terminal: `rltui train --detach`, and a run whose terminal hangs up.

`--detach`: the foreground process checks the input (bad input: one `error:` line, exit 2, nothing
started), then starts `rltui train ... --headless` as a child in a new session (no controlling
terminal, stdin from /dev/null) and waits only until the child has built its engine: the child then
moves its stdout and stderr to `<run_dir>/output.log` and says so through an inherited pipe, and the
foreground prints where the run is and returns. A child that fails before that exits with its own
status and its own one-line error, which the foreground passes on.

A hangup (SIGHUP: the terminal closed, the SSH connection dropped) no longer ends a run: its
output moves to `<run_dir>/output.log`, a dashboard closes without stopping the engine, and the run
goes on headless, reachable over its control socket, until it finishes or is stopped (`stop` over
the socket, SIGTERM or SIGINT: a final checkpoint either way).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

OUTPUT_LOG = "output.log"
APP_EXIT_GRACE_S = 10.0  # after a hangup, how long the dashboard gets to close before the run goes on without it


# ------------------------------------------------------------------------------------------ --detach


def start_detached(argv: list[str], cwd: Path | None = None) -> int:
    """Run `rltui *argv --detached-child FD` in a new session; print where it went once it is ready.

    Returns 0 once the child is ready, else the child's exit status (its output is passed on).
    """
    read_end, write_end = os.pipe()
    command = [sys.executable, "-m", "rltui", *argv]
    command.insert(command.index("--"), f"--detached-child={write_end}")
    try:
        child = subprocess.Popen(
            command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            pass_fds=(write_end,), start_new_session=True,
        )
    finally:
        os.close(write_end)
    assert child.stdout is not None
    try:
        with os.fdopen(read_end, "rb") as ready_pipe:
            early_output = child.stdout.read()  # ends when the child moves its output to the log (or exits)
            ready = ready_pipe.read()
    except BaseException:  # Ctrl-C while waiting: the run is not wanted after all
        child.terminate()
        child.wait()
        raise
    finally:
        child.stdout.close()
    sys.stderr.write(early_output.decode("utf-8", "replace"))
    try:
        info = json.loads(ready)
        run_dir, pid = str(info["run_dir"]), int(info["pid"])
    except (ValueError, KeyError, TypeError):
        return child.wait() or 1
    log = os.path.join(run_dir, OUTPUT_LOG)
    print(f"started in the background (pid {pid}): {run_dir}\n"
          f"  output   {log}\n"
          f"  attach   rltui attach {run_dir}   (q detaches, Q stops)\n"
          f"  status   rltui ps {run_dir}\n"
          f"  stop     kill {pid}   (a final checkpoint is written; resume with: rltui resume {run_dir})")
    return 0


def announce_ready(fd: int, run_dir: Path) -> None:
    """In the detached child, once the engine is built: output to the run's log, then tell the parent."""
    redirect_output(run_dir)
    print(f"detached run, pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}", file=sys.stderr,
          flush=True)
    try:
        os.write(fd, json.dumps({"run_dir": str(run_dir), "pid": os.getpid()}).encode())
    finally:
        os.close(fd)


def redirect_output(run_dir: Path) -> Path:
    """stdout and stderr to `<run_dir>/output.log` (appended), stdin from /dev/null."""
    path = Path(run_dir) / OUTPUT_LOG
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a terminal that went away takes nothing more
            pass
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
    finally:
        os.close(log)
        os.close(null)
    return path


def _silence_output() -> None:
    """stdin, stdout and stderr to /dev/null: nothing more goes to a terminal that hung up."""
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        for fd in (0, 1, 2):
            os.dup2(null, fd)
    finally:
        os.close(null)


# ------------------------------------------------------------------------------------------ hangup


def on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGHUP")


class OutputToLogOnHangup:
    """For a headless run in a terminal: on SIGHUP its output moves to the run's log, and it goes on."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.hung_up = False
        self._previous: Any = None

    def __enter__(self) -> OutputToLogOnHangup:
        if on_main_thread():
            self._previous = signal.signal(signal.SIGHUP, self._on_hangup)
        return self

    def __exit__(self, *_: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous if not self.hung_up else signal.SIG_IGN)

    def _on_hangup(self, *_: object) -> None:
        if not self.hung_up:
            self.hung_up = True
            redirect_output(self.run_dir)
            print(f"terminal gone (SIGHUP) at {time.strftime('%Y-%m-%d %H:%M:%S')}: the run goes on, its output "
                  "continues here", file=sys.stderr, flush=True)


class _Detachable:
    """The engine as the dashboard sees it. The dashboard's worker calls `run()`, which starts the
    engine on its own thread and returns when it ends, or at once once detached; after `detach()`
    the dashboard can no longer stop the engine (closing the app stops it otherwise)."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.detached = threading.Event()
        self.thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._app: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def ensure_started(self) -> threading.Thread:
        with self._lock:
            if self.thread is None:
                self.thread = self._engine.start()
            return self.thread

    def show_in(self, app: Any) -> None:
        """The Textual app showing this run (what `detach()` closes)."""
        self._app = app

    def run(self) -> None:
        thread = self.ensure_started()
        if self.detached.is_set():
            self._exit_app()
        while thread.is_alive() and not self.detached.is_set():
            thread.join(0.1)

    def stop(self, final_checkpoint: bool = True) -> None:
        if not self.detached.is_set():
            self._engine.stop(final_checkpoint=final_checkpoint)

    def submit(self, command: Any) -> Any:
        from rltui.commands import Reply, Stop

        if self.detached.is_set() and isinstance(command, Stop):
            import concurrent.futures

            future: concurrent.futures.Future[Reply] = concurrent.futures.Future()
            future.set_result(Reply(False, "the terminal is gone: the run goes on headless"))
            return future
        return self._engine.submit(command)

    def detach(self) -> None:
        """From now on the dashboard cannot stop the engine; ask the dashboard to close."""
        self.detached.set()
        self._exit_app()

    def _exit_app(self) -> None:
        app = self._app
        if app is None:
            return

        def ask() -> None:
            try:
                app.call_from_thread(app.exit, 0)
            except Exception:  # noqa: BLE001 - the app is gone already
                pass

        threading.Thread(target=ask, name="rltui-hangup-exit", daemon=True).start()


def run_dashboard_through_hangup(engine: Any, open_dashboard: Callable[[Any, Callable[[Any], None]], int]) -> int:
    """`open_dashboard(engine, show_in)`, except that a hangup closes the dashboard and not the run;
    `open_dashboard` hands its app to `show_in` before running it.

    After a hangup: output to `<run_dir>/output.log`, a headless progress line there, the run goes
    on until it ends (SIGTERM or SIGINT: stop with a final checkpoint); returns as `rltui train
    --headless` would. Should the dashboard not close (a terminal can wedge it), the process still
    ends when the run does.
    """
    if not on_main_thread():
        return open_dashboard(engine, lambda app: None)
    proxy = _Detachable(engine)
    after = _AfterHangup(proxy)
    previous = signal.signal(signal.SIGHUP, after.on_hangup)
    try:
        code = open_dashboard(proxy, proxy.show_in)
    finally:
        if not after.started.is_set():
            signal.signal(signal.SIGHUP, previous)
    if not after.started.is_set():
        return code
    after.app_closed.set()
    while after.is_alive():
        after.join(0.2)
    return after.exit_code


class _AfterHangup(threading.Thread):
    """The rest of a run whose terminal hung up, on a thread of its own (see run_dashboard_through_hangup)."""

    def __init__(self, proxy: _Detachable) -> None:
        super().__init__(name="rltui-after-hangup", daemon=True)
        self.proxy = proxy
        self.started = threading.Event()
        self.app_closed = threading.Event()
        self.exit_code = 1
        self._stopping = False

    def on_hangup(self, *_: object) -> None:
        """SIGHUP handler (main thread)."""
        if self.started.is_set():
            return
        self.started.set()
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        _silence_output()  # the dashboard's last writes go nowhere, not into a dead terminal
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_stop_signal)
        self.proxy.detach()
        self.start()

    def _on_stop_signal(self, signum: int, _frame: object) -> None:
        if self._stopping:  # a second one: give up the final checkpoint
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self._stopping = True
        print(f"stopping ({signal.Signals(signum).name}): saving a final checkpoint (again to abandon it)",
              file=sys.stderr, flush=True)
        _request_stop(self.proxy._engine)

    def run(self) -> None:
        from rltui.cli import EXIT_FAILED, EXIT_OK, HeadlessProgress
        from rltui.events import RunState

        self.app_closed.wait(APP_EXIT_GRACE_S)
        engine = self.proxy._engine
        thread = self.proxy.ensure_started()
        redirect_output(engine.run_dir)
        closed = "closed" if self.app_closed.is_set() else "did not close"
        print(f"terminal gone (SIGHUP) at {time.strftime('%Y-%m-%d %H:%M:%S')}, step {engine.step:,}: the dashboard "
              f"{closed}, the run goes on headless (pid {os.getpid()})", file=sys.stderr, flush=True)
        progress = HeadlessProgress(engine.total_steps, engine.step, sys.stderr)
        engine.subscribe(progress)
        thread.join()
        progress.finish(engine)
        sys.stderr.flush()
        self.exit_code = EXIT_FAILED if engine.state == RunState.FAILED else EXIT_OK
        if not self.app_closed.wait(APP_EXIT_GRACE_S):  # the dashboard never closed: end without it
            os._exit(self.exit_code)


def _request_stop(engine: Any) -> None:
    """Stop with a final checkpoint, by `submit` where the engine has it."""
    submit = getattr(engine, "submit", None)
    if submit is not None:
        from rltui.commands import Stop

        submit(Stop(final_checkpoint=True))
    else:
        engine.stop(final_checkpoint=True)
