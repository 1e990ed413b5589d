"""The CLI end to end in subprocesses (train, eval, resume, presets, Ctrl-C) and its bad-input exits."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rltui import cli
from rltui.checkpoint import latest_checkpoint, list_checkpoints
from rltui.events import EpisodeFinished, EvalResult, UpdateMetrics, WarningRaised
from rltui.runlog import read_events

pytestmark = pytest.mark.timeout(180)
REPO = Path(__file__).resolve().parents[1]


def rltui(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "rltui", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_version():
    result = rltui("--version", cwd=REPO)
    assert result.returncode == 0 and result.stdout.startswith("rltui ")


def test_train_eval_resume_end_to_end(tmp_path, write_preset_file):
    preset = write_preset_file("mpo")
    train = rltui("train", str(preset), "--headless", "--set", "train.total_steps=300", "--seed", "11",
                  "--saves", "runs", cwd=tmp_path)
    assert train.returncode == 0, train.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("tiny-mpo-")
    assert latest_checkpoint(run_dir).name == "step-300"
    assert "seed = 11" in (run_dir / "preset.toml").read_text()
    lines = train.stderr.splitlines()
    assert any(line.startswith("step 300/300 (100%)") for line in lines)  # plain lines: stderr is a pipe
    assert not any("\r" in line for line in lines)
    assert any(line.startswith("finished: tiny-mpo") for line in lines)
    assert train.stdout == ""

    evaluated = rltui("eval", str(run_dir), "--json", "--episodes", "2", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    assert set(report) == {"return_mean", "return_std", "episodes", "step"}
    assert report["episodes"] == 2 and report["step"] == 300 and report["return_mean"] < 0
    # the default seeds are those of the run's own evaluations: the final one-episode eval matches
    one = rltui("eval", str(latest_checkpoint(run_dir)), "--json", "--episodes", "1", cwd=tmp_path)
    final_eval = [e for e in read_events(run_dir / "metrics.jsonl")[0] if isinstance(e, EvalResult)][-1]
    assert json.loads(one.stdout)["return_mean"] == pytest.approx(final_eval.return_mean, rel=1e-5)

    resumed = rltui("resume", str(run_dir), "--headless", "--set", "train.total_steps=450", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert [s for s, _ in list_checkpoints(run_dir)] == [300, 450]
    events, _ = read_events(run_dir / "metrics.jsonl")
    starts = [e for e in events if e.kind == "run_started"]
    assert [(s.step, s.resumed) for s in starts] == [(0, False), (300, True)]
    assert not any(isinstance(e, WarningRaised) for e in events)


def test_ctrl_c_stops_with_a_final_checkpoint(tmp_path, write_preset_file):
    preset = write_preset_file("trpo")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-m", "rltui", "train", str(preset), "--headless", "--saves", "runs",
         "--set", "train.total_steps=10000000"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        logs = list((tmp_path / "runs").glob("*/metrics.jsonl"))
        if logs and any(isinstance(e, EpisodeFinished) for e in read_events(logs[0])[0]):
            break
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "stopping: saving a final checkpoint" in stderr and "Traceback" not in stderr
    run_dir = logs[0].parent
    events, _ = read_events(logs[0])
    assert events[-1].kind == "state" and events[-1].state.value == "finished"
    assert latest_checkpoint(run_dir).name == f"step-{events[-1].step}"


def test_presets_list_and_check(tmp_path, write_preset_file):
    listed = rltui("presets", cwd=tmp_path)
    assert listed.returncode == 0
    assert listed.stdout.splitlines()[0].split() == ["NAME", "ALGO", "ENV", "DESCRIPTION"]
    assert any(line.split()[:3] == ["pendulum-mpo", "mpo", "Pendulum-v1"] for line in listed.stdout.splitlines())
    good = write_preset_file("trpo")
    bad = tmp_path / "bad.toml"
    bad.write_text(write_preset_file("mpo").read_text().replace("kl_epsilon", "x").replace(
        "action_samples = 4", 'action_samples = "many"'))
    checked = rltui("presets", "--check", str(good), str(bad), cwd=tmp_path)
    assert checked.returncode == 2
    assert checked.stdout.strip() == f"ok: {good} (tiny-trpo, trpo, Pendulum-v1)"
    (line,) = checked.stderr.splitlines()
    assert line.startswith("error: ") and "[mpo] action_samples" in line


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "missing.toml", "--headless"], "missing.toml: no such file"),
        (["train", "no-such-preset", "--headless"], 'no preset named "no-such-preset"'),
        (["train", "{mpo}", "--headless", "--set", "mpo.kl_epsilon=abc"], "kl_epsilon: expected a number > 0"),
        (["train", "{mpo}", "--headless", "--set", "nonsense"], "nonsense"),
        (["train", "{mpo}", "--bogus"], "unrecognized arguments: --bogus"),
        (["train"], "the following arguments are required: PRESET"),
        (["eval", "nowhere"], "nowhere: no such file or directory"),
        (["eval", "{tmp}", "--episodes", "0"], "--episodes: expected an integer in [1, 100000]"),
        (["eval", "{tmp}"], "holds no checkpoints"),
        (["resume", "nowhere"], "nowhere: not a directory"),
        (["resume", "{tmp}"], "no preset.toml"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, write_preset_file, capsys, args, message):
    mpo = write_preset_file("mpo")
    argv = [a.replace("{mpo}", str(mpo)).replace("{tmp}", str(tmp_path)) for a in args]
    code = cli.main(argv + (["--saves", str(tmp_path / "runs")] if argv[0] == "train" and len(argv) > 1 else []))
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], captured.err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_tampered_checkpoint_is_refused_by_eval_in_a_subprocess(tmp_path, write_preset_file):
    preset = write_preset_file("trpo")
    assert rltui("train", str(preset), "--headless", "--set", "train.total_steps=200", "--saves", "runs",
                 cwd=tmp_path).returncode == 0
    checkpoint = latest_checkpoint(next((tmp_path / "runs").iterdir()))
    (checkpoint / "agent.pt").write_bytes(b"not a checkpoint")
    result = rltui("eval", str(checkpoint), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {checkpoint / 'agent.pt'}: checksum mismatch (the file was truncated or modified)"


def test_progress_line_on_a_terminal_redraws_in_place():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    from rltui.events import RunStarted, RunState, StateChanged

    stream = Tty()
    progress = cli.HeadlessProgress(total_steps=1000, start_step=0, stream=stream)
    for event in (RunStarted(0, name="r", algo="mpo", env_id="Pendulum-v1", device="cpu", total_steps=1000,
                             run_dir="r", time=0.0),
                  StateChanged(0, state=RunState.RUNNING, time=0.0),
                  UpdateMetrics(step=50, updates=3, metrics={}, time=1.0)):
        progress.history(event)  # folded, not drawn
    progress(UpdateMetrics(step=100, updates=3, metrics={}, time=2.0))  # 50 steps/s over the last second
    progress(EpisodeFinished(step=200, episode_return=-10.0, episode_length=200))  # within 0.25 s: not drawn
    assert stream.getvalue().count("\r") == 1
    assert "step 100/1,000 (10%) | 50 steps/s | ETA 0:00:18" in stream.getvalue()
    progress.note("warning: something")
    assert stream.getvalue().endswith("\nwarning: something\n")


def test_progress_line_and_summary_come_from_the_folded_events():
    from types import SimpleNamespace

    from fake_engine import scripted_events

    from rltui.events import CheckpointSaved, RunState, StateChanged

    events = [*scripted_events("mpo", steps=4200, total_steps=4200),
              StateChanged(4200, state=RunState.FINISHED, message="finished 4200 steps")]
    stream = io.StringIO()
    progress = cli.HeadlessProgress(total_steps=1, start_step=0, stream=stream)  # RunStarted's total rules
    for event in events:
        progress(event)
    returns = [e.episode_return for e in events if isinstance(e, EpisodeFinished)][-10:]
    last_eval = [e for e in events if isinstance(e, EvalResult)][-1]
    lines = stream.getvalue().splitlines()
    plain = [line for line in lines if line.startswith("step ")]
    assert len(plain) == 21  # one line per 5 % (210 steps), at the first event past each mark
    assert plain[0] == "step 0/4,200 (0%) | – steps/s"  # nothing measured yet
    assert plain[-1] == f"step 4,200/4,200 (100%) | 500 steps/s | return {sum(returns) / 10:.1f} (last 10) | " \
                        f"eval {last_eval.return_mean:.1f}"
    half = next(line for line in plain if line.startswith("step 2,100/4,200 (50%) | 500 steps/s | return "))
    assert half.endswith("| ETA 0:00:04")
    assert lines[lines.index(plain[-1]) - 1] == "warning: skipped 1 update with non-finite loss"  # at step 4,100
    engine = SimpleNamespace(state=RunState.FINISHED, algo="mpo", run_dir=Path("saves/x"))
    progress.finish(engine)
    summary = stream.getvalue().splitlines()[len(lines):]
    assert summary[0].startswith("finished: mpo-pendulum-test (mpo, Pendulum-v1) at step 4,200 after 0:00:0")
    assert summary[0].endswith("steps/s this session); finished 4200 steps")
    checkpoint = next(e for e in events if isinstance(e, CheckpointSaved)).path
    assert summary[1:] == [
        f"  recent return {sum(returns) / 10:.1f} (last 10 episodes)",
        f"  evaluation at step 4,000: {last_eval.return_mean:.1f} ± 20.0 (5 episodes)",
        f"  checkpoint {checkpoint}",
        "  run dir saves/x (resume: rltui resume saves/x)",
    ]
