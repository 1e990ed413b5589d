"""Checkpoints whose checksums are valid but whose contents are not what rltui wrote: wrong types,
shapes, keys or nesting in state.pt, agent.pt, replay.npz, meta.json and preset.toml. Each gives one
`CheckpointError` line (exit 2 from the CLI), never a traceback, and changes nothing in the run."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_preset
from test_background import rltui

from rltui import checkpoint as ckpt
from rltui.engine import Engine
from rltui.evaluation import evaluate_checkpoint
from rltui.presets import apply_overrides
from rltui.rundir import create_run_dir

pytestmark = pytest.mark.timeout(180)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory) -> dict[str, Path]:
    runs = {}
    for algo, total in (("mpo", 150), ("trpo", 150)):  # TRPO stops mid-rollout: its checkpoint holds one
        preset = apply_overrides(tiny_preset(algo), [f"train.total_steps={total}", "eval.interval=0"])
        engine = Engine(preset, create_run_dir(preset, tmp_path_factory.mktemp(algo)))
        engine.run()
        runs[algo] = engine.run_dir
    return runs


def copy_run(source: Path, target: Path) -> Path:
    subprocess.run(["cp", "-a", str(source), str(target)], check=True)
    return target


def resign(checkpoint: Path, name: str, data: bytes) -> None:
    """Replace a file and update meta.json's checksum, as a careful forger would."""
    (checkpoint / name).write_bytes(data)
    meta = json.loads((checkpoint / "meta.json").read_text())
    meta["files"][name] = hashlib.sha256(data).hexdigest()
    (checkpoint / "meta.json").write_text(json.dumps(meta))


def torch_bytes(value) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def edit_pt(name: str, change: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(checkpoint: Path) -> None:
        state = torch.load(checkpoint / name, weights_only=True)
        change(state)
        resign(checkpoint, name, torch_bytes(state))
    return apply


def edit_replay(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(checkpoint: Path) -> None:
        with np.load(checkpoint / "replay.npz") as data:
            arrays = {key: data[key] for key in data.files}
        change(arrays)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        resign(checkpoint, "replay.npz", buffer.getvalue())
    return apply


def edit_meta(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(checkpoint: Path) -> None:
        meta = json.loads((checkpoint / "meta.json").read_text())
        change(meta)
        (checkpoint / "meta.json").write_text(json.dumps(meta))
    return apply


def set_counter(state: dict) -> None:
    state["counters"]["env_steps"] = "abc"


def nested_json(checkpoint: Path) -> None:
    (checkpoint / "meta.json").write_text("[" * 100_000 + "]" * 100_000)


CASES = {
    "counters-wrong-type": ("mpo", edit_pt("state.pt", set_counter), "counter env_steps must be a non-negative int"),
    "counters-missing": ("mpo", edit_pt("state.pt", lambda s: s.pop("counters")), "KeyError"),
    "rng-wrong-type": ("mpo", edit_pt("state.pt", lambda s: s["rng"].update(numpy="x")), "does not fit"),
    "obs-wrong-shape": ("mpo", edit_pt("state.pt", lambda s: s.update(obs=torch.zeros(5, 5))), "saved observations"),
    "normaliser-garbage": ("mpo", edit_pt("state.pt", lambda s: s["obs_normalizer"].update(mean="abc")),
                           "does not fit"),
    "env-state-garbage": ("mpo", edit_pt("state.pt", lambda s: s["envs"]["envs"][0].update(dynamics={"kind": 3})),
                          "environment state does not fit"),
    "rollout-wrong-shape": ("trpo", edit_pt("state.pt", lambda s: s["rollout"].update(obs=torch.zeros(3, 9, 9))),
                            "saved rollout field obs"),
    "rollout-not-a-tensor": ("trpo", edit_pt("state.pt", lambda s: s["rollout"].update(values=[1, 2])),
                             "saved rollout field values is not an array"),
    "agent-wrong-shape": ("mpo", edit_pt("agent.pt", lambda s: s["policy"].update(
        {"mean_head.weight": torch.zeros(7, 7)})), "size mismatch"),
    "agent-not-a-dict": ("trpo", lambda c: resign(c, "agent.pt", torch_bytes([1, 2, 3])), "expected a dict"),
    "replay-wrong-shape": ("mpo", edit_replay(lambda a: a.update(obs=a["obs"][:, :, :2])), "field obs is float32"),
    "replay-wrong-dtype": ("mpo", edit_replay(lambda a: a.update(rewards=a["rewards"].astype(np.float64))),
                           "field rewards is float64"),
    "replay-meta-lies": ("mpo", edit_replay(lambda a: a.update(meta=np.array([10, 1, 3, 1, 99]))), "filled rows"),
    "meta-deep-nesting": ("mpo", nested_json, "meta.json: unreadable, not valid JSON (RecursionError)"),
    "meta-negative-step": ("mpo", edit_meta(lambda m: m.update(step=-1)), "'step' must be an integer >= 0"),
    "meta-bool-step": ("mpo", edit_meta(lambda m: m.update(step=True)), "'step' must be an integer >= 0"),
    "meta-bad-digest": ("mpo", edit_meta(lambda m: m["files"].update({"agent.pt": 5})), "SHA-256 hex digests"),
    "meta-step-disagrees": ("mpo", edit_meta(lambda m: m.update(step=149)), "meta.json says 149"),
    "preset-invalid": ("mpo", lambda c: resign(c, "preset.toml", b"algo = 5\n"), "its preset.toml is not valid"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_contents_are_one_line_checkpoint_errors(tmp_path, finished_runs, case):
    algo, damage, message = CASES[case]
    run_dir = copy_run(finished_runs[algo], tmp_path / "run")
    checkpoint = ckpt.latest_checkpoint(run_dir)
    damage(checkpoint)
    before = sorted((p.name, p.stat().st_size) for p in run_dir.rglob("*") if p.is_file())
    with pytest.raises(ckpt.CheckpointError) as error:
        Engine(apply_overrides(tiny_preset(algo), ["train.total_steps=300", "eval.interval=0"]), run_dir, resume=True)
    text = str(error.value)
    assert message in text and "\n" not in text, text
    assert sorted((p.name, p.stat().st_size) for p in run_dir.rglob("*") if p.is_file()) == before


@pytest.mark.parametrize("case", ["agent-wrong-shape", "normaliser-garbage", "meta-deep-nesting", "preset-invalid"])
def test_eval_refuses_malformed_contents_too(tmp_path, finished_runs, case):
    algo, damage, _ = CASES[case]
    run_dir = copy_run(finished_runs[algo], tmp_path / "run")
    damage(ckpt.latest_checkpoint(run_dir))
    with pytest.raises(ckpt.CheckpointError) as error:
        evaluate_checkpoint(run_dir, 1, deterministic=True, seed=None)
    assert "\n" not in str(error.value)


def test_resume_of_a_malformed_checkpoint_exits_2_with_one_line(tmp_path, finished_runs):
    run_dir = copy_run(finished_runs["trpo"], tmp_path / "run")
    edit_pt("state.pt", lambda s: s["rollout"].update(obs=torch.zeros(3, 9, 9)))(ckpt.latest_checkpoint(run_dir))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "rltui", "resume", str(run_dir), "--headless",
                             "--set", "train.total_steps=300"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "saved rollout field obs" in lines[0], result.stderr


# ----------------------------------------------------------------------------- a broken latest, an intact older


@pytest.fixture(scope="module")
def run_with_three_checkpoints(tmp_path_factory) -> Path:
    preset = apply_overrides(tiny_preset("mpo"), ["train.total_steps=150", "eval.interval=0",
                                                  "checkpoint.interval=50", "checkpoint.keep=5"])
    engine = Engine(preset, create_run_dir(preset, tmp_path_factory.mktemp("three")))
    engine.run()
    assert [step for step, _ in ckpt.list_checkpoints(engine.run_dir)] == [50, 100, 150]
    return engine.run_dir


def files_of(run_dir: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(run_dir)), p.stat().st_size) for p in run_dir.rglob("*") if p.is_file())


def test_eval_of_a_run_whose_latest_is_broken_names_the_newest_intact_one(tmp_path, run_with_three_checkpoints):
    run_dir = copy_run(run_with_three_checkpoints, tmp_path / "my run")  # a space: the command is quoted
    checkpoints = run_dir / "checkpoints"
    (checkpoints / "step-150" / "agent.pt").write_bytes(b"truncated")
    (checkpoints / "step-100" / "state.pt").write_bytes(b"also damaged")
    before = files_of(run_dir)
    result = rltui("eval", str(run_dir), "--episodes", "1", cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    expected = (f"error: {checkpoints / 'step-150' / 'agent.pt'}: checksum mismatch (the file was truncated or "
                f"modified); the run's newest intact checkpoint is step-50: rltui eval '{checkpoints / 'step-50'}'")
    assert result.stderr.strip() == expected
    assert files_of(run_dir) == before
    suggested = shlex.split(expected.rsplit(": ", 1)[1])
    assert suggested[:2] == ["rltui", "eval"]
    result = rltui(*suggested[1:], "--episodes", "1", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["step"] == 50


def test_a_broken_checkpoint_asked_for_by_name_or_with_nothing_intact_gets_no_suggestion(
        tmp_path, run_with_three_checkpoints):
    run_dir = copy_run(run_with_three_checkpoints, tmp_path / "run")
    checkpoints = run_dir / "checkpoints"
    (checkpoints / "step-150" / "agent.pt").write_bytes(b"truncated")
    alone = f"error: {checkpoints / 'step-150' / 'agent.pt'}: checksum mismatch (the file was truncated or modified)"
    result = rltui("eval", str(checkpoints / "step-150"), cwd=tmp_path)  # the user chose this one: no other is offered
    assert (result.returncode, result.stderr.strip()) == (2, alone)
    for step in (50, 100):
        (checkpoints / f"step-{step}" / "preset.toml").write_text("changed")
    for args in (["eval", str(run_dir)], ["resume", str(run_dir), "--headless"]):
        result = rltui(*args, cwd=tmp_path)
        assert (result.returncode, result.stderr.strip()) == (2, alone), args


def test_resume_of_a_run_whose_latest_is_broken_says_how_to_resume_from_the_newest_intact_one(
        tmp_path, run_with_three_checkpoints):
    run_dir = copy_run(run_with_three_checkpoints, tmp_path / "run")
    broken = run_dir / "checkpoints" / "step-150"
    (broken / "meta.json").write_text("{")
    before = files_of(run_dir)
    result = rltui("resume", str(run_dir), "--headless", "--set", "train.total_steps=200", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    aside = broken.with_name("broken-step-150")
    assert lines == [f"error: {broken / 'meta.json'}: unreadable, not valid JSON (JSONDecodeError); the newest "
                     f"intact checkpoint is step-100: to resume from it, move the broken one aside "
                     f"(mv {broken} {aside})"]
    assert files_of(run_dir) == before
    os.rename(broken, aside)  # what the message says to do
    result = rltui("resume", str(run_dir), "--headless", "--set", "train.total_steps=200", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [step for step, _ in ckpt.list_checkpoints(run_dir)] == [50, 100, 150, 200]
    assert ckpt.load_checkpoint(run_dir / "checkpoints" / "step-150").step == 150  # trained again from 100
    assert (aside / "meta.json").read_text() == "{"  # the set-aside copy is left alone
