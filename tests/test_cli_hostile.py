"""`eval`, `watch` and the global flags attacked as a hostile user would, in real CLI subprocesses.

Every bad input must give exactly one `error: ...` line on stderr, exit status 2, no traceback,
nothing on stdout and nothing written.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_preset

from rltui import cli
from rltui.checkpoint import latest_checkpoint
from rltui.engine import Engine
from rltui.rundir import create_run_dir

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parents[1]
LONG = "x" * 300  # longer than a file name may be (255 bytes)
NOT_UTF8 = os.fsdecode(b"run-\xff\xfe")  # a name whose bytes are not UTF-8


def rltui(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "rltui", *args], cwd=cwd, capture_output=True, text=True,
                          errors="backslashreplace", timeout=timeout, env=env, stdin=subprocess.DEVNULL, check=False)


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under `root` with its size and modification time: to check that nothing was written."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            found[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return found


def assert_one_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def assert_refused_untouched(workdir: Path, args: list[str], fragments: list[str]) -> None:
    """`rltui *args` in `workdir` gives one error line holding `fragments` and changes nothing there."""
    before = tree(workdir)
    assert_one_error(rltui(*args, cwd=workdir), *fragments)
    assert tree(workdir) == before


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A scratch directory holding a finished tiny TRPO run (`run`), a diverged copy of it whose
    weights are all NaN (`diverged`, checksums updated as the engine would write them), a preset
    file, an empty directory and a directory holding only preset.toml."""
    root = tmp_path_factory.mktemp("hostile")
    preset = tiny_preset("trpo", {"train": {"total_steps": 100}, "eval": {"interval": 0}})
    engine = Engine(preset, create_run_dir(preset, root / "saves"))
    engine.run()
    run = root / "run"
    shutil.move(str(engine.run_dir), run)
    shutil.rmtree(root / "saves")
    diverged = root / "diverged"
    shutil.copytree(run, diverged)
    checkpoint = latest_checkpoint(diverged)
    state = torch.load(checkpoint / "agent.pt", weights_only=True)
    torch.save(_all_nan(state), checkpoint / "agent.pt")
    meta = json.loads((checkpoint / "meta.json").read_text())
    meta["files"]["agent.pt"] = hashlib.sha256((checkpoint / "agent.pt").read_bytes()).hexdigest()
    (checkpoint / "meta.json").write_text(json.dumps(meta))
    (root / "preset.toml").write_text((run / "preset.toml").read_text())
    (root / "empty").mkdir()
    (root / "only-preset").mkdir()
    (root / "only-preset" / "preset.toml").write_text((run / "preset.toml").read_text())
    return root


def _all_nan(value):
    if isinstance(value, torch.Tensor):
        return torch.full_like(value, math.nan) if value.is_floating_point() else value
    if isinstance(value, dict):
        return {k: _all_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_all_nan(v) for v in value]
    return value


def _reject_constant(name: str):
    raise AssertionError(f"not strict JSON: {name}")


# ---- eval ------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::UserWarning")  # gymnasium: "The reward is a NaN value"
def test_eval_json_of_a_diverged_agent_is_strict_json_with_nulls(workdir, capsys, monkeypatch):
    before = tree(workdir)
    result = rltui("eval", "diverged", "--json", "--episodes", "2", cwd=workdir)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout, parse_constant=_reject_constant)
    assert report == {"return_mean": None, "return_std": None, "episodes": 2, "step": 100}
    monkeypatch.chdir(workdir)  # the same without --json, in this process (torch is loaded already)
    assert cli.main(["eval", "diverged", "--episodes", "1"]) == 0
    assert "return nan ± nan over 1 deterministic episodes" in capsys.readouterr().out
    assert tree(workdir) == before


def test_eval_takes_the_largest_seed_and_a_healthy_agent_still_gives_numbers(workdir, capsys, monkeypatch):
    monkeypatch.chdir(workdir)
    assert cli.main(["eval", "run", "--json", "--episodes", "1", "--seed", str(2**32 - 1)]) == 0
    report = json.loads(capsys.readouterr().out, parse_constant=_reject_constant)
    assert isinstance(report["return_mean"], float) and report["return_std"] == 0.0


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["run", "--episodes", str(10**20)], ["--episodes: expected an integer in [1, 100000], got '1000"]),
        (["run", "--episodes", "100001"], ["--episodes: expected an integer in [1, 100000]"]),
        (["run", "--episodes", "-5"], ["--episodes: expected an integer in [1, 100000], got '-5'"]),
        (["run", "--episodes", ""], ["--episodes: expected an integer in [1, 100000], got ''"]),
        (["run", "--episodes", "1e3"], ["got '1e3'"]),
        (["run", "--episodes", "9" * 5000], ["--episodes: expected an integer", "…"]),
        (["run", "--seed", str(2**32)], ["--seed: expected an integer in [0, 4294967295], got '4294967296'"]),
        (["run", "--seed", str(10**20)], ["--seed: expected an integer in [0, 4294967295]"]),
        (["run", "--seed", "-1"], ["--seed: expected an integer in [0, 4294967295], got '-1'"]),
        (["run", "--seed", "nan"], ["--seed: expected an integer"]),
        ([""], ["RUN_DIR|CHECKPOINT_DIR: expected a path, got an empty string"]),
        (["missing"], ["error: missing: no such file or directory"]),
        ([LONG], [f"error: {LONG}: file name too long"]),
        ([NOT_UTF8], ["error: run-\\xff\\xfe: no such file or directory"]),
        (["run", "--frobnicate"], ["unrecognized arguments: --frobnicate"]),
        ([], ["the following arguments are required: RUN_DIR|CHECKPOINT_DIR"]),
    ],
    ids=lambda v: str(v)[:40],
)
def test_eval_bad_input_is_one_line_exit_2_nothing_written(workdir, args, fragments):
    assert_refused_untouched(workdir, ["eval", *args], fragments)


# ---- watch -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["missing"], ["error: missing: no such directory (expected a run directory)"]),
        (["preset.toml"], ["error: preset.toml: not a directory (expected a run directory, not a file)"]),
        (["empty"], ["error: empty: no metrics.jsonl (expected a run directory made by `rltui train`)"]),
        (["only-preset"], ["error: only-preset: no metrics.jsonl"]),
        (["run/metrics.jsonl"], ["not a directory"]),
        ([""], ["error: argument RUN_DIR: expected a path, got an empty string"]),
        ([LONG], [f"error: {LONG}: file name too long"]),
        ([NOT_UTF8], ["error: run-\\xff\\xfe: no such directory"]),
        (["run", "extra"], ["unrecognized arguments: extra"]),
        ([], ["the following arguments are required: RUN_DIR"]),
        (["run", "--refresh-hz", "0"], ["--refresh-hz: expected a number in [0.1, 60], got '0'"]),
    ],
    ids=lambda v: str(v)[:40],
)
def test_watch_bad_input_is_one_line_exit_2_nothing_written(workdir, args, fragments):
    assert_refused_untouched(workdir, ["watch", *args], fragments)


def test_watch_refuses_a_log_that_is_not_a_regular_file(tmp_path):
    fifo_run, dir_run = tmp_path / "fifo-run", tmp_path / "dir-run"
    fifo_run.mkdir()
    os.mkfifo(fifo_run / "metrics.jsonl")  # opening it would block forever
    (dir_run / "metrics.jsonl").mkdir(parents=True)
    assert_one_error(rltui("watch", "fifo-run", cwd=tmp_path, timeout=20),
                     "error: fifo-run/metrics.jsonl: not a regular file")
    assert_one_error(rltui("watch", "dir-run", cwd=tmp_path), "error: dir-run/metrics.jsonl: not a regular file")


def test_watch_refuses_an_unreadable_log(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("")
    if os.geteuid() != 0:
        (run / "metrics.jsonl").chmod(0)
        result = rltui("watch", "run", cwd=tmp_path)
    else:  # root reads anything: make open() of the log fail as it would for anyone else
        code = ("import errno, os, sys\n"
                "real = os.open\n"
                "def refuse(path, *a, **k):\n"
                "    if str(path).endswith('metrics.jsonl'):\n"
                "        raise PermissionError(errno.EACCES, 'Permission denied', str(path))\n"
                "    return real(path, *a, **k)\n"
                "os.open = refuse\n"
                "from rltui.cli import main\n"
                "sys.exit(main(['watch', 'run']))\n")
        result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                                timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    assert_one_error(result, "error: run/metrics.jsonl: cannot be read (permission denied)")


# ---- resume ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, fragments",
    [
        ([""], ["error: argument RUN_DIR: expected a path, got an empty string"]),
        ([LONG], [f"error: {LONG}: file name too long"]),
        ([NOT_UTF8], ["error: run-\\xff\\xfe: not a directory"]),
        (["missing"], ["error: missing: not a directory (expected a run directory)"]),
        (["preset.toml"], ["error: preset.toml: not a directory"]),
        (["empty"], ["error: empty: no preset.toml"]),
        (["only-preset"], ["error: only-preset: no checkpoints to resume from"]),
        (["run"], ["error: run: the run is finished (100 of 100 steps); to train on, raise the total, "
                   "e.g. --set train.total_steps=200"]),
        (["run", "--set", "train.total_steps=200", "--set", "trpo.optimizer_type=\"sgd\""],
         ['error: run: [trpo] optimizer_type cannot change when resuming (the run has "adam", asked for "sgd")']),
        (["run", "--set", "train.total_steps=200", "--set", "env.num_envs=3"], ["[env] num_envs cannot change"]),
        (["run", "--set", "train.total_steps=-1"], ["[train] total_steps: expected an integer"]),
    ],
    ids=lambda v: str(v)[:40],
)
def test_resume_bad_input_is_one_line_exit_2_nothing_written(workdir, args, fragments):
    assert_refused_untouched(workdir, ["resume", *args, "--headless"], fragments)


# ---- train and presets ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["train", "preset.toml", "--saves", ""], ["--saves: expected a path, got an empty string"]),
        (["train", "preset.toml", "--saves", "preset.toml"], ["error: preset.toml: not a directory"]),
        (["train", "preset.toml", "--saves", LONG], [f"error: {LONG}: file name too long"]),
        (["train", "/dev/zero"], ["error: /dev/zero: is not a regular file (expected a preset file)"]),
        (["train", "empty"], ["error: empty: is a directory (expected a preset file)"]),
        (["train", ""], ["error: expected a preset name or a file, got an empty string"]),
        (["presets", "--check", ""], ["--check: expected a path, got an empty string"]),
        (["presets", "--check", "/dev/zero"], ["error: /dev/zero: is not a regular file"]),
        (["presets", "--check", "."], ["error: .: is a directory"]),
    ],
    ids=lambda v: str(v)[:40],
)
def test_train_and_presets_bad_paths_are_one_line_exit_2_nothing_written(workdir, args, fragments):
    assert_refused_untouched(workdir, args, fragments)


def test_a_fifo_preset_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "fifo.toml")
    assert_one_error(rltui("train", "fifo.toml", cwd=tmp_path, timeout=20), "fifo.toml: is not a regular file")


# ---- global flags ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--refresh-hz", "0", "watch", "run"], ["--refresh-hz: expected a number in [0.1, 60], got '0'"]),
        (["--refresh-hz", "1e-300", "watch", "run"], ["got '1e-300'"]),
        (["--refresh-hz", "61", "watch", "run"], ["got '61'"]),
        (["--refresh-hz", "nan", "watch", "run"], ["got 'nan'"]),
        (["--refresh-hz", "inf", "watch", "run"], ["got 'inf'"]),
        (["--refresh-hz", "-4", "watch", "run"], ["got '-4'"]),
        (["--refresh-hz", "", "watch", "run"], ["got ''"]),
        (["--refresh-hz", "fast", "watch", "run"], ["got 'fast'"]),
        (["--refresh-hz", "1" * 5000, "watch", "run"], ["--refresh-hz: expected a number", "…"]),
        (["--refresh-hz"], ["--refresh-hz: expected one argument"]),
        (["--saves", "", "watch", "run"], ["--saves: expected a path, got an empty string"]),
        (["--saves"], ["--saves: expected one argument"]),
        (["--no-mouse=yes", "watch", "run"], ["--no-mouse: ignored explicit argument 'yes'"]),
        (["frobnicate"], ["invalid choice: 'frobnicate'"]),
        ([""], ["invalid choice: ''"]),
        ([NOT_UTF8], ["invalid choice: 'run-\\udcff\\udcfe'"]),
        (["--frobnicate"], ["unrecognized arguments: --frobnicate"]),
    ],
    ids=lambda v: str(v)[:40],
)
def test_global_flag_bad_input_is_one_line_exit_2_nothing_written(workdir, args, fragments):
    assert_refused_untouched(workdir, args, fragments)


def test_version_and_help_exit_0(workdir):
    version = rltui("--version", cwd=workdir)
    assert version.returncode == 0 and version.stdout.startswith("rltui ") and version.stderr == ""
    for args in (["--help"], ["eval", "--help"], ["watch", "--help"]):
        result = rltui(*args, cwd=workdir)
        assert result.returncode == 0 and "usage: rltui" in result.stdout and result.stderr == ""
