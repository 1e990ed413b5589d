"""Checkpoint files: round trip, atomic replacement, pruning, and refusal of bad files."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from rltui import checkpoint as ckpt
from rltui.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, resolve_checkpoint, save_checkpoint
from rltui.replay import ReplayBuffer

PRESET = 'name = "tiny"\nalgo = "mpo"\n'


def agent_state(scale: float = 1.0) -> dict:
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters())
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    return {"net": {k: v * scale for k, v in net.state_dict().items()}, "opt": opt.state_dict(), "num_updates": 7}


def engine_state() -> dict:
    rng = np.random.default_rng(5)
    return {
        "env_steps": 123,
        "update_credit": 0.25,
        "torch_rng": torch.get_rng_state(),
        "sampler_rng": rng.bit_generator.state,
        "normalizer": {"mean": [0.1, 0.2], "var": [1.0, 2.0], "count": 3.0},
    }


def test_round_trip_with_replay(tmp_path):
    replay = ReplayBuffer(10, 1, 2, 1)
    path = save_checkpoint(tmp_path, 123, agent_state(), engine_state(), PRESET, replay, keep=3)
    assert path == tmp_path / "checkpoints" / "step-123"
    assert sorted(p.name for p in path.iterdir()) == ["agent.pt", "meta.json", "preset.toml", "replay.npz", "state.pt"]
    loaded = load_checkpoint(path)
    assert loaded.step == 123 and loaded.preset_text == PRESET
    assert loaded.agent_state["num_updates"] == 7
    assert loaded.engine_state["sampler_rng"] == np.random.default_rng(5).bit_generator.state
    assert torch.equal(loaded.engine_state["torch_rng"], engine_state()["torch_rng"])
    assert loaded.replay_path == path / "replay.npz"
    assert resolve_checkpoint(tmp_path) == path == resolve_checkpoint(path)


def test_prunes_to_keep_and_replaces_same_step(tmp_path):
    for step in (10, 20, 30, 40):
        save_checkpoint(tmp_path, step, agent_state(), engine_state(), PRESET, None, keep=2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [30, 40]
    save_checkpoint(tmp_path, 40, agent_state(2.0), engine_state(), PRESET + "# again\n", None, keep=2)
    assert load_checkpoint(latest_checkpoint(tmp_path)).preset_text.endswith("# again\n")
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-30", "step-40"]


def test_half_written_temp_dir_is_ignored_and_cleaned(tmp_path):
    save_checkpoint(tmp_path, 10, agent_state(), engine_state(), PRESET, None, keep=3)
    stale = tmp_path / "checkpoints" / "step-20.tmp-999999999"
    stale.mkdir()
    (stale / "agent.pt").write_bytes(b"half")
    assert latest_checkpoint(tmp_path).name == "step-10"
    save_checkpoint(tmp_path, 30, agent_state(), engine_state(), PRESET, None, keep=3)
    assert not stale.exists()


def test_killed_mid_save_leaves_previous_checkpoint_loadable(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_checkpoint import agent_state, engine_state, PRESET
        from rltui import checkpoint as ckpt
        ckpt.save_checkpoint({str(tmp_path)!r}, 10, agent_state(), engine_state(), PRESET, None, keep=3)
        real = ckpt._write_bytes
        def dying(file, data):
            if file.name == "preset.toml":
                os.kill(os.getpid(), signal.SIGKILL)
            real(file, data)
        ckpt._write_bytes = dying
        ckpt.save_checkpoint({str(tmp_path)!r}, 20, agent_state(), engine_state(), PRESET, None, keep=3)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == -9, result.stderr
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names[0] == "step-10" and names[1].startswith("step-20.tmp-")
    assert load_checkpoint(latest_checkpoint(tmp_path)).step == 10


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _tamper(path: Path, name: str, data: bytes, fix_checksum: bool) -> None:
    (path / name).write_bytes(data)
    if fix_checksum:
        meta = json.loads((path / "meta.json").read_text())
        meta["files"][name] = ckpt._sha256(path / name)
        (path / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("fix_checksum", [False, True])
def test_pickled_object_with_side_effects_is_refused_without_running(tmp_path, fix_checksum):
    path = save_checkpoint(tmp_path, 10, agent_state(), engine_state(), PRESET, None, keep=3)
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"payload": _Evil(str(marker))}, evil)  # a real torch zip whose pickle calls Path.touch
    _tamper(path, "agent.pt", evil.read_bytes(), fix_checksum)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert not marker.exists()
    assert "\n" not in str(err.value)
    assert ("checksum mismatch" in str(err.value)) != fix_checksum
    # the same with a bare pickle stream instead of a torch zip
    _tamper(path, "state.pt", pickle.dumps(_Evil(str(marker))), True)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not marker.exists()


def test_truncated_and_foreign_files_give_one_line_errors(tmp_path):
    path = save_checkpoint(tmp_path, 10, agent_state(), engine_state(), PRESET, None, keep=3)
    data = (path / "agent.pt").read_bytes()
    _tamper(path, "agent.pt", data[: len(data) // 2], True)
    with pytest.raises(CheckpointError, match="agent.pt: refused or unreadable"):
        load_checkpoint(path)
    (path / "meta.json").write_text('{"format": "something-else"}')
    with pytest.raises(CheckpointError, match="not an rltui checkpoint"):
        load_checkpoint(path)
    (path / "meta.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no such file"):
        resolve_checkpoint(tmp_path / "missing")
    empty = tmp_path / "empty-run"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="holds no checkpoints"):
        resolve_checkpoint(empty)


def _resave_killed_after(renames: int, tmp_path: Path) -> None:
    """Save step 10, then re-save it with other contents in a process killed after `renames` renames."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_checkpoint import agent_state, engine_state, PRESET
        from rltui import checkpoint as ckpt
        ckpt.save_checkpoint({str(tmp_path)!r}, 10, agent_state(), engine_state(), PRESET, None, keep=3)
        real, done = os.rename, []
        def rename_then_die(source, target):
            real(source, target)
            done.append(target)
            if len(done) == {renames}:
                os.kill(os.getpid(), signal.SIGKILL)
        ckpt.os.rename = rename_then_die
        ckpt.save_checkpoint({str(tmp_path)!r}, 10, agent_state(2.0), engine_state(), PRESET + "# new\\n", None, keep=3)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == -9, result.stderr


@pytest.mark.parametrize("renames, survivor", [(1, PRESET), (2, PRESET + "# new\n")])
def test_a_resave_killed_between_its_renames_never_loses_the_step(tmp_path, renames, survivor):
    _resave_killed_after(renames, tmp_path)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert any(name.startswith("step-10.old-") for name in names) and ("step-10" in names) == (renames == 2)
    (found,) = ckpt.list_checkpoints(tmp_path)  # readers see a complete step 10 at every moment
    assert found[0] == 10 and load_checkpoint(found[1]).preset_text == survivor
    ckpt.recover_checkpoints(tmp_path)  # the next owner of the run tidies up
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-10"]
    assert load_checkpoint(latest_checkpoint(tmp_path)).preset_text == survivor


def test_stray_names_in_checkpoints_never_break_listing_or_pruning(tmp_path):
    root = tmp_path / "checkpoints"
    root.mkdir()
    (root / "step-7").write_text("a file, not a checkpoint")
    (root / "notes.txt").write_text("mine")
    for name in ("step-abc", "step-007", "step-5.tmp-99999999999999", "step-6.tmp-4294967296", "step-8.old-x"):
        (root / name).mkdir()
    elsewhere = save_checkpoint(tmp_path / "other-run", 99, agent_state(), engine_state(), PRESET, None, keep=3)
    (root / "step-99").symlink_to(elsewhere, target_is_directory=True)
    for step in (10, 20, 30):
        save_checkpoint(tmp_path, step, agent_state(), engine_state(), PRESET, None, keep=2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [20, 30]
    left = sorted(p.name for p in root.iterdir())
    assert left == ["notes.txt", "step-007", "step-20", "step-30", "step-5.tmp-99999999999999", "step-7",
                    "step-8.old-x", "step-99", "step-abc"]  # the dead pid's temp dir step-6 is gone
    assert load_checkpoint(elsewhere).step == 99  # a symlink is never followed into another run
