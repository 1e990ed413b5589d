"""Bad preset input through the real CLI: each kind of error exits 2 with one `error:` line naming
the file, override or flag, no traceback, and no run directory; plus `presets --check` warnings and
bases, and a run with the largest seed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rltui import cli
from rltui.presets import physical_memory_bytes
from rltui.replay import replay_bytes
from rltui.rollout import rollout_bytes

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parents[1]


def rltui(*args: str | bytes, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "rltui", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=100, env=env, check=False)


def train_refused(tmp_path: Path, preset: Path, *args: str | bytes) -> str:
    """Run `rltui train PRESET ARGS --saves runs`; check it was refused cleanly; its error line."""
    result = rltui("train", str(preset), "--headless", "--saves", "runs", *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not (tmp_path / "runs").exists()  # nothing written
    return lines[0]


def test_an_absurd_value_is_refused_at_validation(tmp_path, write_preset_file):
    line = train_refused(tmp_path, write_preset_file("mpo"), "--set", f"train.threads={10**20}")
    assert line == f"error: --set train.threads: [train] threads: expected an integer in [1, 1024], got {10**20}"
    line = train_refused(tmp_path, write_preset_file("mpo"), "--seed", str(2**32))
    assert line == "error: --seed: [train] seed: expected an integer in [0, 4294967295], got 4294967296"


def test_a_replay_buffer_larger_than_memory_is_refused(tmp_path, write_preset_file):
    needed = replay_bytes(10**9, 1, 3, 1)  # Pendulum: 3 observations, 1 action
    available = physical_memory_bytes()
    if available is None or available >= needed:
        pytest.skip(f"this machine has enough memory for {needed} bytes of replay")
    line = train_refused(tmp_path, write_preset_file("mpo"), "--set", "train.replay_size=1000000000",
                         "--set", "train.update_after=1000")
    assert line.startswith(f"error: --set train.replay_size: [train] replay_size: 1000000000 transitions of "
                           f"Pendulum-v1 need {needed} bytes")
    assert f"this machine has {available} bytes" in line


def test_a_trpo_rollout_whose_update_would_not_fit_in_memory_is_refused(tmp_path, write_preset_file):
    # The tiny TRPO preset: Pendulum, (16, 16) policy layers, 2 value epochs.
    needed = rollout_bytes(1_048_576, 1_024, 3, 1, (16, 16), 2)
    assert needed == 1_048_576 * 1_024 * (34 + 4 * max(4 * 32 + 8, 2 * 4 + 8))
    available = physical_memory_bytes()
    if available is None or available >= needed:
        pytest.skip(f"this machine has enough memory for {needed} bytes of rollout")
    line = train_refused(tmp_path, write_preset_file("trpo"), "--set", "train.rollout_steps=1048576",
                         "--set", "env.num_envs=1024")
    assert line.startswith(f"error: --set train.rollout_steps: [train] rollout_steps: 1048576 steps x 1024 "
                           f"environments of Pendulum-v1 need {needed} bytes")
    assert f"(the rollout and its update); this machine has {available} bytes" in line


def test_a_sweep_checks_memory_for_every_setting_not_only_each_environments_first(tmp_path):
    needed = rollout_bytes(1_048_576, 2, 3, 1, (4096,), 15)  # pendulum-trpo-quick with one 4096-unit layer
    available = physical_memory_bytes()
    if available is None or available >= needed:
        pytest.skip(f"this machine has enough memory for {needed} bytes of rollout")
    (tmp_path / "big.toml").write_text('extends = "pendulum-trpo-quick"\nname = "big"\n[network]\n'
                                       'policy_layer_sizes = [4096]\n[sweep]\nseeds = "0"\n[sweep.grid]\n'
                                       "train.rollout_steps = [1024, 1048576]\n")
    checked = rltui("presets", "--check", "big.toml", cwd=tmp_path)
    assert (checked.returncode, checked.stdout) == (2, "")
    assert checked.stderr.startswith("error: big.toml [sweep.grid] train.rollout_steps: [train] rollout_steps: "
                                     f"1048576 steps x 2 environments of Pendulum-v1 need {needed} bytes")


def test_deep_nesting_is_one_clean_error(tmp_path, write_preset_file):
    line = train_refused(tmp_path, write_preset_file("mpo"), "--set", "env.kwargs.x=" + "[" * 100_000)
    assert line == "error: --set env.kwargs.x: [env] kwargs.x: tables and arrays nested more than 32 levels deep"


def test_extends_cycles_are_one_clean_error(tmp_path):
    (tmp_path / "a.toml").write_text('extends = "b.toml"\n', encoding="utf-8")
    (tmp_path / "b.toml").write_text('extends = "a.toml"\n', encoding="utf-8")
    assert train_refused(tmp_path, Path("a.toml")) == "error: b.toml: extends: cycle: a.toml -> b.toml -> a.toml"


def test_non_utf8_override_names_the_set_flag(tmp_path, write_preset_file):
    line = train_refused(tmp_path, write_preset_file("mpo"), b"--set", b"train.name=\xff")
    assert line == "error: --set train.name: not UTF-8 text (the command line held bytes that are not UTF-8)"


def test_a_missing_device_names_the_device_flag(tmp_path, write_preset_file):
    import torch

    if torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    line = train_refused(tmp_path, write_preset_file("mpo"), "--device", "cuda:7")
    assert line.startswith('error: --device: [train] device: "cuda:7" was requested but ')


def test_a_kwarg_gymnasium_rejects_names_the_set_flag(tmp_path, write_preset_file):
    line = train_refused(tmp_path, write_preset_file("trpo"), "--set", "env.kwargs.x=1")
    assert line == ('error: --set env.kwargs.x: [env] kwargs.x: gymnasium.make("Pendulum-v1") failed: TypeError: '
                    "PendulumEnv.__init__() got an unexpected keyword argument 'x'")


def test_check_warns_about_a_device_this_machine_lacks_and_explains_bases(tmp_path, write_preset_file):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    gpu = tmp_path / "gpu.toml"
    gpu.write_text(write_preset_file("mpo").read_text().replace('device = "cpu"', 'device = "cuda"'))
    base = REPO / "presets" / "_mujoco-trpo.toml"
    checked = rltui("presets", "--check", "gpu.toml", str(base), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert checked.stderr == ('warning: gpu.toml: [train] device: "cuda" was requested but CUDA is not available; '
                              'use "auto" or "cpu"\n')
    assert checked.stdout.splitlines() == [
        "ok: gpu.toml (tiny-mpo, mpo, Pendulum-v1)",
        (f'ok: {base} (a base for `extends`: its name starts with "_"; the keys it sets are valid, the rest comes '
         "from the presets that extend it)"),
    ]


def test_check_takes_a_sweep_file_and_names_a_bad_sweep_key(tmp_path):
    sweep = tmp_path / "kl.toml"
    sweep.write_text('extends = "pendulum-trpo-quick"\nname = "kl"\n\n[sweep]\nseeds = "0-2"\n\n'
                     "[sweep.grid]\ntrpo.target_kl = [0.005, 0.01]\ntrpo.gamma = [0.9, 0.99]\n")
    checked = rltui("presets", "--check", "kl.toml", cwd=tmp_path)
    assert (checked.returncode, checked.stderr) == (0, "")
    assert checked.stdout == "ok: kl.toml (a sweep of kl, trpo, Pendulum-v1: 12 trials, 4 settings x 3 seeds)\n"
    sweep.write_text(sweep.read_text().replace('seeds = "0-2"', 'seeds = "0-2"\nsamples = "many"'))
    checked = rltui("presets", "--check", "kl.toml", cwd=tmp_path)
    assert (checked.returncode, checked.stdout) == (2, "")
    assert checked.stderr.startswith("error: kl.toml: [sweep] samples: ") and checked.stderr.count("\n") == 1


def test_the_largest_seed_trains_resumes_and_evaluates(tmp_path, write_preset_file, capsys):
    preset = write_preset_file("trpo")
    saves = tmp_path / "runs"
    assert cli.main(["train", str(preset), "--headless", "--seed", "4294967295", "--saves", str(saves),
                     "--set", "train.total_steps=100"]) == 0
    (run_dir,) = saves.iterdir()
    assert cli.main(["resume", str(run_dir), "--headless", "--set", "train.total_steps=200"]) == 0
    capsys.readouterr()
    assert cli.main(["eval", str(run_dir), "--episodes", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 200
