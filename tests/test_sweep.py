"""`rltui sweep` against a real local Ray (one session for the module): trials are ordinary runs,
a killed trial restarts from its checkpoint, ASHA stops a setting that cannot learn, and bad input
is one line and exit 2 with nothing started.

Trials run the tiny presets of conftest.py (Pendulum-v1) or sweep_env.py's target; Ray has two
CPUs, so two trials at a time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
import sweep_env
from conftest import TINY_TRPO

from rltui import checkpoint as ckpt
from rltui.cli import main
from rltui.control import ControlClient, socket_path
from rltui.events import EvalResult, RunStarted, RunState, StateChanged, WarningRaised
from rltui.presets import load_preset
from rltui.rundir import RunLock
from rltui.runlog import LOG_NAME, read_events
from rltui.runmeta import read_run_meta
from rltui.sweep.plan import PLAN_FILE, TUNE_DIR

TESTS_DIR = Path(__file__).resolve().parent
MAX_RAY_TEMP_CHARS = 48  # + "/session_<date>_<time>_<pid>/sockets/plasma_store" stays under 107 bytes


@pytest.fixture(scope="module", autouse=True)
def ray_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One local Ray for the module: 2 CPUs, no dashboard, its temp files under the test's tmp;
    the workers find tests/ (for sweep_env's environment) through PYTHONPATH."""
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS_DIR), saved) if p)
    temp_dir = tmp_path_factory.mktemp("ray")
    if len(str(temp_dir)) > MAX_RAY_TEMP_CHARS:  # Ray's sockets in it must fit a Unix socket address
        temp_dir = Path(tempfile.mkdtemp(prefix="ray-"))
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             _temp_dir=str(temp_dir), runtime_env={"worker_process_setup_hook": "sweep_env.register"})
    try:
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _set(text: str, section: str, key: str, literal: str) -> str:
    """The preset text with `key = literal` in `[section]` (replaced, or added at its top)."""
    lines = text.splitlines()
    start = lines.index(f"[{section}]")
    for i in range(start + 1, len(lines)):
        if lines[i].startswith("["):
            break
        if lines[i].split("=")[0].strip() == key:
            lines[i] = f"{key} = {literal}"
            return "\n".join(lines) + "\n"
    lines.insert(start + 1, f"{key} = {literal}")
    return "\n".join(lines) + "\n"


def _events(run_dir: Path) -> list:
    return read_events(run_dir / LOG_NAME)[0]


def _final_state(run_dir: Path) -> StateChanged:
    return [e for e in _events(run_dir) if isinstance(e, StateChanged)][-1]


def _assert_let_go(run_dir: Path) -> None:
    """No control socket left and nobody holds the run directory."""
    assert not socket_path(run_dir).exists()
    RunLock(run_dir).release()


def test_two_seeds_by_two_settings_finish_as_four_runs_with_a_results_table(tmp_path, capsys):
    preset = _write(tmp_path / "tiny-trpo.toml", _set(TINY_TRPO, "checkpoint", "interval", "200"))
    saves = tmp_path / "saves"

    code = main(["sweep", str(preset), "--seeds", "0-1", "--grid", "trpo.target_kl=0.01,0.03",
                 "--saves", str(saves), "--name", "kl", "--headless"])

    out, err = capsys.readouterr()
    assert code == 0, err
    sweep_dir = saves / "kl"
    names = ["target_kl=0.01,seed=0", "target_kl=0.01,seed=1", "target_kl=0.03,seed=0", "target_kl=0.03,seed=1"]
    assert sorted(p.name for p in sweep_dir.iterdir() if (p / "preset.toml").is_file()) == names
    finals: dict[str, list[float]] = {"trpo.target_kl=0.01": [], "trpo.target_kl=0.03": []}
    bests: dict[str, list[float]] = {"trpo.target_kl=0.01": [], "trpo.target_kl=0.03": []}
    for name in names:
        run_dir = sweep_dir / name
        kl, seed = float(name.split(",")[0].split("=")[1]), int(name[-1])
        ran = load_preset(run_dir / "preset.toml")  # the resolved preset is exactly what ran
        assert (ran.train.seed, ran.agent["target_kl"], ran.train.total_steps) == (seed, kl, 400)
        assert read_run_meta(run_dir)["sweep"] == {
            "name": "kl", "trial": name, "setting": f"trpo.target_kl={kl:g}", "seed": seed,
            "config": {"trpo.target_kl": kl, "train.seed": seed}}
        events = _events(run_dir)
        assert [type(e) for e in events].count(RunStarted) == 1
        state = _final_state(run_dir)
        assert (state.state, state.step) == (RunState.FINISHED, 400)
        assert [c[0] for c in ckpt.list_checkpoints(run_dir)] == [200, 400]
        _assert_let_go(run_dir)
        returns = [e.return_mean for e in events if isinstance(e, EvalResult)]
        assert [e.step for e in events if isinstance(e, EvalResult)] == [200, 400]
        finals[f"trpo.target_kl={kl:g}"].append(returns[-1])
        bests[f"trpo.target_kl={kl:g}"].append(max(returns))

    results = json.loads((sweep_dir / "results.json").read_text())
    by_setting = {s["setting"]: s for s in results["settings"]}
    assert set(by_setting) == set(finals)
    for setting, values in finals.items():
        row = by_setting[setting]
        assert (row["n"], row["trials"], row["stopped_early"], row["failed"]) == (2, 2, 0, 0)
        assert row["final_return"]["mean"] == pytest.approx(statistics.fmean(values))
        assert row["final_return"]["std"] == pytest.approx(statistics.stdev(values))
        assert row["best_return"]["mean"] == pytest.approx(statistics.fmean(bests[setting]))
        assert {r["state"] for r in row["runs"]} == {"finished"}
    table = (sweep_dir / "results.md").read_text()
    first = by_setting["trpo.target_kl=0.01"]["final_return"]
    assert f"{first['mean']:.1f} ± {first['std']:.1f}" in table
    assert f"{first['mean']:.1f} ± {first['std']:.1f}" in out  # printed too
    assert "results: " in out and str(sweep_dir / "results.md") in out
    assert (sweep_dir / PLAN_FILE).is_file() and (sweep_dir / TUNE_DIR).is_dir()
    for name in names:  # the headless progress lines
        assert f"{name}: started" in err and f"{name}: finished at step 400" in err
    assert "Traceback" not in err


def test_a_trial_killed_midway_restarts_from_its_checkpoint_with_its_step_counter(tmp_path, capsys):
    text = _set(_set(_set(TINY_TRPO, "train", "total_steps", "1000"), "checkpoint", "interval", "200"),
                "eval", "interval", "500")
    preset = _write(tmp_path / "tiny-trpo.toml", text)
    saves = tmp_path / "saves"
    run_dir = saves / "killed" / "seed=0"
    codes: list[int] = []
    driver = threading.Thread(target=lambda: codes.append(main(
        ["sweep", str(preset), "--saves", str(saves), "--name", "killed", "--headless"])))
    driver.start()
    try:
        deadline = time.monotonic() + 60
        while not ckpt.list_checkpoints(run_dir):  # the first checkpoint is written
            assert time.monotonic() < deadline and driver.is_alive(), "no checkpoint came"
            time.sleep(0.05)
        with ControlClient(socket_path(run_dir)) as client:
            assert client.request("pause", timeout=30)["ok"]  # (so it cannot finish before the kill)
            pid = client.status()["pid"]
        assert pid != os.getpid()
        os.kill(pid, signal.SIGKILL)  # the trial's process dies: a preempted node
        killed_at = ckpt.list_checkpoints(run_dir)[-1][0]
    finally:
        driver.join(120)
    assert codes == [0], capsys.readouterr().err
    assert 200 <= killed_at < 1000
    sessions = [e for e in _events(run_dir) if isinstance(e, RunStarted)]
    assert [(s.resumed, s.step) for s in sessions] == [(False, 0), (True, killed_at)]
    state = _final_state(run_dir)
    assert (state.state, state.step) == (RunState.FINISHED, 1000)
    final = ckpt.load_checkpoint(ckpt.latest_checkpoint(run_dir))
    assert final.step == 1000 and final.engine_state["counters"]["env_steps"] == 1000
    _assert_let_go(run_dir)
    results = json.loads((saves / "killed" / "results.json").read_text())
    [run] = results["settings"][0]["runs"]
    assert (run["state"], run["step"], run["sessions"]) == ("finished", 1000, 2)


def test_a_sweep_whose_driver_was_killed_goes_on_with_resume(tmp_path, capsys):
    """The driver runs as its own process, joined to the module's Ray by --address; killing it
    kills its trials too. `--resume` then finishes every trial, each from its own checkpoint."""
    text = _set(_set(_set(TINY_TRPO, "train", "total_steps", "1000"), "checkpoint", "interval", "200"),
                "eval", "interval", "500")
    preset = _write(tmp_path / "tiny-trpo.toml", text)
    saves = tmp_path / "saves"
    sweep_dir = saves / "cut"
    driver = subprocess.Popen(
        [sys.executable, "-m", "rltui", "sweep", str(preset), "--seeds", "0-1", "--saves", str(saves), "--name", "cut",
         "--headless", "--address", ray.get_runtime_context().gcs_address],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not ckpt.list_checkpoints(sweep_dir / "seed=0"):
            assert time.monotonic() < deadline and driver.poll() is None, driver.stderr.read() if driver.stderr else ""
            time.sleep(0.05)
        driver.kill()
    finally:
        driver.wait(30)
    cut_at = {name: [c[0] for c in ckpt.list_checkpoints(sweep_dir / name)] for name in ("seed=0", "seed=1")}

    code = main(["sweep", "--resume", str(sweep_dir), "--headless"])

    out, err = capsys.readouterr()
    assert code == 0, err
    for name, checkpoints in cut_at.items():
        run_dir = sweep_dir / name
        state = _final_state(run_dir)
        assert (state.state, state.step) == (RunState.FINISHED, 1000)
        sessions = [e for e in _events(run_dir) if isinstance(e, RunStarted)]
        if checkpoints and checkpoints[-1] < 1000:  # it was cut mid-way: it went on from a checkpoint
            assert sessions[-1].resumed and sessions[-1].step >= checkpoints[-1]
        _assert_let_go(run_dir)
    assert "| 2/2 |" in out and "did not finish" not in out


ASHA_SWEEP = """
name = "target-trpo"
algo = "trpo"

[env]
id = "{env}"
num_envs = 2

[train]
total_steps = 1000
seed = 1
device = "cpu"
rollout_steps = 50

[network]
policy_layer_sizes = [16]
critic_layer_sizes = [16]

[trpo]
target_kl = 0.05

[eval]
interval = 200
episodes = 1

[checkpoint]
interval = 0

[sweep]
scheduler = "asha"
grace_steps = 200
reduction_factor = 2
max_concurrent = 1

[sweep.grid]
trpo.target_kl = [0.05, 1e-12]   # the second cannot move its policy: it cannot learn
"""


def test_asha_stops_the_trial_whose_setting_cannot_learn(tmp_path, capsys):
    sweep_file = _write(tmp_path / "target.toml", ASHA_SWEEP.format(env=sweep_env.ENV_ID))
    saves = tmp_path / "saves"

    code = main(["sweep", str(sweep_file), "--saves", str(saves), "--name", "asha", "--headless"])

    out, err = capsys.readouterr()
    assert code == 0, err
    learner, stuck = saves / "asha" / "target_kl=0.05,seed=0", saves / "asha" / "target_kl=1e-12,seed=0"
    assert (_final_state(learner).state, _final_state(learner).step) == (RunState.FINISHED, 1000)
    learner_evals = [e.return_mean for e in _events(learner) if isinstance(e, EvalResult)]
    assert len(learner_evals) == 5 and learner_evals[-1] > learner_evals[0]  # it learns
    events = _events(stuck)
    stuck_evals = [(e.step, e.return_mean) for e in events if isinstance(e, EvalResult)]
    assert stuck_evals[0][0] == 200 and stuck_evals[0][1] < learner_evals[0]  # below the rung's cutoff
    state = [e for e in events if isinstance(e, StateChanged)][-1]
    assert state.state is RunState.FINISHED and state.message == f"stopped at step {state.step}"
    assert state.step < 1000
    [note] = [e for e in events if isinstance(e, WarningRaised)]
    assert note.message.startswith(f"stopped early at step {state.step} by the sweep's ASHA scheduler")
    assert ckpt.list_checkpoints(stuck)[-1][0] == state.step  # the final checkpoint of the stop path
    _assert_let_go(stuck)
    by_setting = {s["setting"]: s for s in json.loads((saves / "asha" / "results.json").read_text())["settings"]}
    assert by_setting["trpo.target_kl=1e-12"]["stopped_early"] == 1
    assert by_setting["trpo.target_kl=0.05"]["stopped_early"] == 0
    assert "trpo.target_kl=1e-12 |" in out and "1 of 1" in out


def _run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("sweep_table, expected", [
    ('seeds = "4-1"', "bad.toml: [sweep] seeds: the range '4-1' is empty (its end is below its start)"),
    ('schedular = "asha"', "bad.toml: [sweep] schedular: unknown key (expected one of cpus_per_trial, "),
    ('scheduler = "hyperband"', "bad.toml: [sweep] scheduler: expected one of 'fifo', 'asha', got \"hyperband\""),
    ("[sweep.grid]\ntrpo.target_kl = 0.01",
     "bad.toml: [sweep.grid] trpo.target_kl: expected a non-empty array of values, got 0.01"),
    ("[sweep.grid]\ntrpo.target_kl = [0.01, -1.0]", "bad.toml [sweep.grid] trpo.target_kl: [trpo] target_kl: "),
    ("[sweep.grid]\ntrpo.no_such_key = [1, 2]", "bad.toml [sweep.grid] trpo.no_such_key: [trpo] no_such_key: "),
    ("[sweep.random]\ntrpo.target_kl = { loguniform = [0.0, 0.1] }",
     "bad.toml: [sweep.random] trpo.target_kl: loguniform expects 0 < low < high, got [0.0, 0.1]"),
    ("[sweep.random]\ntrpo.target_kl = { lognormal = [0.0, 0.1] }",
     "bad.toml: [sweep.random] trpo.target_kl: expected a table with one of uniform, loguniform, randint, choice"),
    ("samples = 4", "bad.toml: [sweep] samples: 4 samples need random settings to draw ([sweep.random] in a sweep "
                    "file); seeds are set with --seeds"),
])
def test_a_bad_sweep_file_is_one_line_naming_the_file_and_key(tmp_path, monkeypatch, capsys, sweep_table, expected):
    _write(tmp_path / "bad.toml", TINY_TRPO + "\n[sweep]\n" + sweep_table + "\n")
    saves = tmp_path / "saves"
    monkeypatch.chdir(tmp_path)  # messages name the file as given
    code, out, err = _run_cli(["sweep", "bad.toml", "--saves", str(saves), "--headless"], capsys)
    assert code == 2 and out == ""
    assert err.startswith("error: " + expected) and err.count("\n") == 1, err
    assert not saves.exists()


@pytest.mark.parametrize("flags, expected", [
    (["--seeds", "a-b"], 'error: --seeds: expected seeds such as "0-4" or "0,1,5", got "a-b"'),
    (["--seeds", "0,0"], "error: --seeds: seed 0 is given twice"),
    (["--grid", "trpo.target_kl"], 'error: --grid: expected section.key=value1,value2,..., got "trpo.target_kl"'),
    (["--grid", "trpo.target_kl=0.01,,0.02"], 'error: --grid trpo.target_kl: an empty value in "0.01,,0.02"'),
    (["--grid", "trpo.target_kl=0.01,zero"], "error: --grid trpo.target_kl: [trpo] target_kl: "),
    (["--grid", "train.seed=1,2"], "error: --grid train.seed: the seed is swept by --seeds ([sweep] seeds), "
                                   "not as a setting"),
    (["--set", "eval.interval=0"], "error: --set eval.interval: [eval] interval: a sweep reports evaluations to "
                                   "Ray Tune; expected an interval > 0, got 0"),
    (["--samples", "3"], "error: --samples: 3 samples need random settings to draw"),
    (["--cpus-per-trial", "0"], "error: argument --cpus-per-trial: expected a number > 0, got '0'"),
    (["--gpus-per-trial", "-1"], "error: argument --gpus-per-trial: expected a number >= 0, got '-1'"),
    (["--scheduler", "pbt"], "error: argument --scheduler: invalid choice: 'pbt'"),
    (["--name", "a/b"], "error: --name: expected a name of letters, digits, '.', '_' and '-', got \"a/b\""),
    (["--set", "train.device=cuda", "--gpus-per-trial", "0"],
     "error: --set train.device: [train] device: 'cuda' needs --gpus-per-trial > 0"),
    (["--gpus-per-trial", "1"], "error: --gpus-per-trial: 1 GPUs per trial, but the Ray cluster has no GPU"),
    (["--cpus-per-trial", "3"], "error: --cpus-per-trial: 3 CPUs per trial, but the Ray cluster has 2 CPUs"),
])
def test_bad_flags_are_one_line_and_exit_2_with_nothing_created(tmp_path, capsys, write_preset_file, flags, expected):
    saves = tmp_path / "saves"
    code, out, err = _run_cli(["sweep", str(write_preset_file("trpo")), "--saves", str(saves), "--headless",
                               *flags], capsys)
    assert code == 2 and out == ""
    assert err.startswith(expected) and err.count("\n") == 1, err
    assert not saves.exists() or not any(saves.iterdir())


def test_resume_refuses_what_it_cannot_take(tmp_path, capsys, write_preset_file):
    preset = str(write_preset_file("trpo"))
    code, _, err = _run_cli(["sweep", "--resume", str(tmp_path), preset], capsys)
    assert code == 2 and err.startswith("error: --resume: PRESET cannot be given")
    code, _, err = _run_cli(["sweep", "--resume", str(tmp_path), "--seeds", "0-2"], capsys)
    assert code == 2 and err.startswith("error: --resume: --seeds cannot be given")
    code, _, err = _run_cli(["sweep", "--resume", str(tmp_path / "nope")], capsys)
    assert code == 2 and err == f"error: {tmp_path / 'nope'}: not a directory (expected a sweep directory made by `rltui sweep`)\n"
    code, _, err = _run_cli(["sweep", "--resume", str(tmp_path)], capsys)
    assert code == 2 and err == f"error: {tmp_path}: no {PLAN_FILE} (expected a sweep directory made by `rltui sweep`)\n"
    code, _, err = _run_cli(["sweep"], capsys)
    assert code == 2 and err.startswith("error: sweep: expected PRESET")
    (tmp_path / "saves" / "taken").mkdir(parents=True)
    code, _, err = _run_cli(["sweep", preset, "--saves", str(tmp_path / "saves"), "--name", "taken"], capsys)
    assert code == 2 and "taken: already exists (go on with it: rltui sweep --resume" in err


def test_without_ray_the_command_names_the_extra(tmp_path, write_preset_file):
    blocked = "import sys; sys.modules['ray'] = None; from rltui.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", blocked, "sweep", str(write_preset_file("trpo"))],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: rltui sweep needs Ray Tune, the `sweep` extra: pip install 'rltui[sweep]'")
    assert done.stderr.count("\n") == 1
