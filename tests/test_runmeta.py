"""run.json: written for every new run (train, detached, any Engine), a resume appended, read
tolerantly, and shown by the dashboard's info screen (`i`)."""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from datetime import datetime
from importlib import metadata
from pathlib import Path

import pytest
import torch
from conftest import tiny_preset
from fake_engine import FakeEngine

from rltui.app import RlTuiApp
from rltui.engine import Engine
from rltui.rundir import create_run_dir
from rltui.runmeta import (
    RUN_META_FILE,
    SCHEMA,
    git_state,
    read_run_meta,
    record_resume,
    write_run_meta,
)
from rltui.screens.dashboard import DashboardScreen
from rltui.screens.info import InfoScreen, info_rows, read_run_facts

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parents[1]
SESSION_KEYS = {"versions", "git", "hostname", "device", "gpu", "command", "cwd", "start_time", "start_epoch"}


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout.strip()


def _check_session(session: dict, *, command: list[str], device: str, before: float, after: float) -> None:
    """Every session key against what this process says independently."""
    assert set(session) >= SESSION_KEYS
    assert session["versions"] == {
        "rltui": "0.1.0", "python": platform.python_version(), "torch": torch.__version__,
        "gymnasium": metadata.version("gymnasium"), "numpy": metadata.version("numpy"),
        "mujoco": _installed("mujoco"),
    }
    assert session["hostname"] == socket.gethostname()
    assert session["device"] == device and session["gpu"] is None
    assert session["command"] == command
    assert session["cwd"] == os.getcwd()
    assert before <= session["start_epoch"] <= after
    started = datetime.fromisoformat(session["start_time"])
    assert started.tzinfo is not None
    assert abs(started.timestamp() - session["start_epoch"]) < 0.001


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def test_a_new_run_records_this_process(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not in a git repository
    before = time.time()
    written = write_run_meta(tmp_path, command=["rltui", "train", "x"], device="cpu", preset=tiny_preset("mpo"),
                             sweep={"name": "lr", "trial": "t3", "config": {"mpo.policy_lr": 3e-4}})
    after = time.time()
    meta = json.loads((tmp_path / RUN_META_FILE).read_text())
    assert meta == written == read_run_meta(tmp_path)
    assert meta["schema"] == SCHEMA == 1
    _check_session(meta, command=["rltui", "train", "x"], device="cpu", before=before, after=after)
    assert meta["git"] is None
    assert meta["preset"] == {"name": "tiny-mpo", "algo": "mpo", "env_id": "Pendulum-v1", "seed": 3}
    assert meta["sweep"] == {"name": "lr", "trial": "t3", "config": {"mpo.policy_lr": 3e-4}}
    assert meta["resumed_from"] is None and meta["resumes"] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [RUN_META_FILE]  # no temporary file left


@pytest.mark.parametrize("sweep, message", [
    ({"config": {"x": float("nan")}}, "sweep must be JSON"),
    ({"config": object()}, "sweep must be JSON"),
    (["a", "list"], "sweep must be a mapping"),
])
def test_a_sweep_that_is_no_json_object_is_refused_before_writing(tmp_path, sweep, message):
    with pytest.raises((TypeError, ValueError), match=message):
        write_run_meta(tmp_path, command=[], device="cpu", sweep=sweep)
    assert not (tmp_path / RUN_META_FILE).exists()


def test_git_commit_and_dirty_flag_of_the_working_directory(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.txt").write_text("one\n")
    _git(repo, "add", "a.txt")
    _git(repo, "commit", "-q", "-m", "first")
    (repo / "sub").mkdir()
    head = _git(repo, "rev-parse", "HEAD")
    assert git_state(repo / "sub") == {"commit": head, "dirty": False}
    (repo / "untracked.txt").write_text("not counted\n")
    assert git_state(repo) == {"commit": head, "dirty": False}
    (repo / "a.txt").write_text("two\n")
    assert git_state(repo) == {"commit": head, "dirty": True}
    empty = tmp_path / "empty"
    empty.mkdir()
    _git(empty, "init", "-q")
    assert git_state(empty) is None  # a repository without a commit
    assert git_state(tmp_path) is None  # not a repository


def test_git_that_is_missing_or_hangs_gives_null_quickly(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no git at all
    assert git_state(REPO) is None
    hanging = tmp_path / "git"
    hanging.write_text("#!/bin/sh\nexec sleep 30\n")
    hanging.chmod(hanging.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}:/bin:/usr/bin")
    started = time.monotonic()
    assert git_state(REPO, timeout_s=0.3) is None
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("content", [b"", b"{not json", b"\xff\xfe", b"[1, 2]", b'{"no": "schema"}',
                                     b'{"schema": "1"}', b'{"schema": true}', b"[" * 100_000])
def test_read_run_meta_is_none_for_anything_but_a_run_json(tmp_path, content):
    assert read_run_meta(tmp_path) is None  # none at all
    (tmp_path / RUN_META_FILE).write_bytes(content)
    assert read_run_meta(tmp_path) is None
    assert read_run_meta(tmp_path / "no-such-dir") is None


def test_a_resume_keeps_the_creation_and_appends_an_entry(tmp_path):
    created = write_run_meta(tmp_path, command=["rltui", "train", "p"], device="cpu", sweep={"name": "s"})
    checkpoint = tmp_path / "checkpoints" / "step-200"
    for n, step in enumerate((200, 400), 1):
        before = time.time()
        notes = record_resume(tmp_path, command=["rltui", "resume", str(n)], device="cuda:1",
                              checkpoint=checkpoint.with_name(f"step-{step}"), step=step)
        after = time.time()
        assert notes == []
        meta = read_run_meta(tmp_path)
        assert {k: v for k, v in meta.items() if k != "resumes"} == {k: v for k, v in created.items() if k != "resumes"}
        assert len(meta["resumes"]) == n
        entry = meta["resumes"][-1]
        assert entry["checkpoint"] == f"checkpoints/step-{step}" and entry["step"] == step
        _check_session({**entry, "gpu": None}, command=["rltui", "resume", str(n)], device="cuda:1", before=before,
                       after=after)


def test_a_run_older_than_run_json_gets_one_on_resume(tmp_path):
    started = 1767000000.25
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"event": "run_started", "step": 0, "time": started}) + "\n")
    assert record_resume(tmp_path, command=["rltui", "resume", "r"], device="cpu", preset=tiny_preset("trpo"),
                         checkpoint=tmp_path / "checkpoints" / "step-400", step=400) == []
    meta = read_run_meta(tmp_path)
    assert meta["start_epoch"] == started
    assert datetime.fromisoformat(meta["start_time"]).timestamp() == started
    assert all(meta[key] is None for key in SESSION_KEYS - {"start_time", "start_epoch"})
    assert meta["preset"] == {"name": "tiny-trpo", "algo": "trpo", "env_id": "Pendulum-v1", "seed": 4}
    assert meta["sweep"] is None and meta["resumed_from"] is None
    assert [(r["checkpoint"], r["step"]) for r in meta["resumes"]] == [("checkpoints/step-400", 400)]


def test_an_unreadable_run_json_is_set_aside_on_resume(tmp_path):
    (tmp_path / RUN_META_FILE).write_text("{cut sho")
    notes = record_resume(tmp_path, command=["rltui"], device="cpu", checkpoint=tmp_path / "c", step=1)
    (aside,) = tmp_path.glob(f"{RUN_META_FILE}.unreadable-*")
    assert aside.read_text() == "{cut sho"
    assert len(notes) == 1 and "unreadable (not JSON" in notes[0] and aside.name in notes[0]
    assert len(read_run_meta(tmp_path)["resumes"]) == 1


# ------------------------------------------------------------------------------ who writes it


def test_the_engine_writes_it_for_a_new_run_and_a_resume(tmp_path):
    preset = tiny_preset("trpo", {"train": {"total_steps": 100}, "eval": {"interval": 0}})
    engine = Engine(preset, create_run_dir(preset, tmp_path), command=["my", "sweep"], sweep={"trial": 7})
    meta = read_run_meta(engine.run_dir)
    assert meta["command"] == ["my", "sweep"] and meta["sweep"] == {"trial": 7} and meta["device"] == "cpu"
    assert meta["git"] == git_state(os.getcwd())
    engine.run()
    resumed = tiny_preset("trpo", {"train": {"total_steps": 200}, "eval": {"interval": 0}})
    Engine(resumed, engine.run_dir, resume=True).run()  # the command defaults to sys.argv
    meta = read_run_meta(engine.run_dir)
    assert meta["command"] == ["my", "sweep"] and meta["sweep"] == {"trial": 7}
    assert [(r["command"], r["checkpoint"], r["step"]) for r in meta["resumes"]] == [
        (sys.argv, "checkpoints/step-100", 100)]


def test_a_refused_resume_records_nothing(tmp_path):
    preset = tiny_preset("trpo", {"train": {"total_steps": 100}, "eval": {"interval": 0}})
    engine = Engine(preset, create_run_dir(preset, tmp_path), command=["x"])
    engine.run()
    before = (engine.run_dir / RUN_META_FILE).read_bytes()
    with pytest.raises(Exception, match="total_steps"):
        Engine(preset, engine.run_dir, resume=True)  # finished: nothing to resume
    assert (engine.run_dir / RUN_META_FILE).read_bytes() == before


def _rltui(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "rltui", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=env)


def test_train_resume_and_detach_record_their_command_lines(tmp_path, write_preset_file):
    preset = str(write_preset_file("trpo"))
    train = _rltui("train", preset, "--headless", "--saves", "runs", "--set", "train.total_steps=100", cwd=tmp_path)
    assert train.returncode == 0, train.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    resume = _rltui("resume", str(run_dir), "--headless", "--set", "train.total_steps=200", cwd=tmp_path)
    assert resume.returncode == 0, resume.stderr
    meta = read_run_meta(run_dir)
    assert meta["command"] == ["rltui", "train", preset, "--headless", "--saves", "runs", "--set",
                               "train.total_steps=100"]
    assert meta["cwd"] == str(tmp_path) and meta["git"] is None
    assert [(r["command"], r["checkpoint"], r["step"]) for r in meta["resumes"]] == [
        (["rltui", "resume", str(run_dir), "--headless", "--set", "train.total_steps=200"], "checkpoints/step-100",
         100)]

    detach = _rltui("train", preset, "--detach", "--saves", "bg", "--set", "train.total_steps=100", cwd=tmp_path)
    assert detach.returncode == 0, detach.stderr
    pid = int(re.match(r"started in the background \(pid (\d+)\)", detach.stdout)[1])
    try:
        (run_dir,) = (tmp_path / "bg").iterdir()
        meta = read_run_meta(run_dir)  # written before the run was announced
        assert meta["command"] == ["rltui", "train", "--set=train.total_steps=100", "--headless", "--saves=bg", "--",
                                   preset]
    finally:
        _wait_gone(pid)


def _wait_gone(pid: int, timeout: float = 60.0) -> None:
    """Wait for a detached run to end (stopped with SIGTERM after `timeout`)."""
    deadline = time.monotonic() + timeout
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _running(pid):
        os.kill(pid, signal.SIGTERM)


def _running(pid: int) -> bool:
    """Alive and not a zombie (nobody may reap an orphan here)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


# ------------------------------------------------------------------------------ the info screen


def _rows(app: RlTuiApp) -> dict[str, str]:
    screen = app.screen
    assert isinstance(screen, InfoScreen)
    return dict(info_rows(screen.facts))


@pytest.mark.asyncio
async def test_i_shows_run_json_in_watch_mode_and_closes_with_i_or_escape(tmp_path):
    preset = tiny_preset("mpo", {"train": {"total_steps": 100}, "eval": {"interval": 0}})
    engine = Engine(preset, create_run_dir(preset, tmp_path), command=["rltui", "train", "tiny"],
                    sweep={"name": "grid", "trial": 2})
    engine.run()
    Engine(tiny_preset("mpo", {"train": {"total_steps": 200}, "eval": {"interval": 0}}), engine.run_dir,
           resume=True, command=["rltui", "resume", "it"]).run()
    meta = read_run_meta(engine.run_dir)
    app = RlTuiApp(watch_dir=engine.run_dir, refresh_hz=20.0)
    async with app.run_test(size=(140, 50)) as pilot:
        dashboard = app.screen
        assert isinstance(dashboard, DashboardScreen)
        assert "i Info" in _footer(app)
        await pilot.press("i")
        rows = _rows(app)
        assert rows["run directory"] == str(engine.run_dir)
        assert rows["preset"] == "tiny-mpo (mpo, Pendulum-v1)" and rows["seed"] == "3"
        assert rows["started"] == meta["start_time"] and rows["host"] == socket.gethostname()
        assert rows["command"] == "rltui train tiny" and rows["device"] == "cpu"
        assert rows["sweep"] == '{"name": "grid", "trial": 2}'
        assert rows["resumes"] == "1" and rows["resume 1"] == "from checkpoints/step-100 (step 100)"
        assert rows["versions"].startswith(f"rltui 0.1.0, python {platform.python_version()}, torch ")
        text = _screen_text(app)
        assert "Run information" in text and "command: rltui resume it" in text
        await pilot.press("i")
        assert app.screen is dashboard
        await pilot.press("i")
        assert isinstance(app.screen, InfoScreen)
        await pilot.press("escape")
        assert app.screen is dashboard


@pytest.mark.asyncio
async def test_info_of_a_run_without_run_json_and_of_a_live_run(tmp_path):
    preset = tiny_preset("trpo", {"train": {"total_steps": 100}, "eval": {"interval": 0}})
    engine = Engine(preset, create_run_dir(preset, tmp_path))
    engine.run()
    (engine.run_dir / RUN_META_FILE).unlink()  # as a run made before run.json
    app = RlTuiApp(watch_dir=engine.run_dir, refresh_hz=20.0)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("i")
        assert _rows(app) == {
            "run directory": str(engine.run_dir), "preset": "tiny-trpo (trpo, Pendulum-v1)", "seed": "4",
            RUN_META_FILE: "none (this run was made before rltui recorded one)",
        }

    fake = FakeEngine("mpo")  # a live run: its directory is the engine's
    app = RlTuiApp(engine=fake)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.2)
        await pilot.press("i")
        assert _rows(app)["run directory"] == str(fake.run_dir)
        await pilot.press("escape")
        assert isinstance(app.screen, DashboardScreen)
        assert fake.commands == []


def test_info_rows_survive_odd_values(tmp_path):
    (tmp_path / RUN_META_FILE).write_text(json.dumps({
        "schema": 7, "versions": "?", "git": {"commit": "abc", "dirty": None}, "command": "a string",
        "resumes": [3, {"step": True}], "gpu": "G", "device": "cuda:0", "future_key": 1,
    }))
    rows = info_rows(read_run_facts(tmp_path, name="from-history"))
    assert ("preset", "from-history") in rows and ("seed", "—") in rows
    assert ("git", "abc") in rows and ("command", "a string") in rows and ("device", "cuda:0 (G)") in rows
    assert ("resume 2", "from — (step true)") in rows and ("schema", "7") in rows


def _footer(app: RlTuiApp) -> str:
    return _screen_text(app).splitlines()[-1]


def _screen_text(app: RlTuiApp) -> str:
    strips = app.screen._compositor.render_strips()
    return "\n".join("".join(segment.text for segment in strip) for strip in strips)
