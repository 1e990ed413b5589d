"""`rltui eval --video`: the recorded frames are the episodes' own (read back and compared with an
independent rendering), recording changes nothing of the evaluation, and bad input or a failure
leaves no file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import imageio.v3 as iio
import numpy as np
import pytest
from conftest import tiny_preset

from rltui import cli
from rltui.engine import Engine
from rltui.envs import eval_seeds
from rltui.rundir import create_run_dir
from rltui.video import FrameTap, VideoError, VideoWriter, render_offscreen

pytestmark = pytest.mark.timeout(300)
EPISODE_FRAMES = 201  # Pendulum: the frame after reset, then one per step of a 200-step episode


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    preset = tiny_preset("trpo", {"train": {"total_steps": 800}, "eval": {"interval": 0}})
    engine = Engine(preset, create_run_dir(preset, tmp_path_factory.mktemp("saves")))
    engine.run()
    return engine.run_dir


def _eval_json(capsys, *args: str) -> dict:
    assert cli.main(["eval", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _first_frame(seed: int) -> np.ndarray:
    render_offscreen()
    env = gym.make("Pendulum-v1", render_mode="rgb_array")
    env.reset(seed=seed)
    frame = env.render()
    env.close()
    return frame


def test_a_gif_holds_every_frame_of_the_episodes_and_the_returns_do_not_change(run_dir, tmp_path, capsys):
    plain = _eval_json(capsys, str(run_dir), "--episodes", "2")
    video = tmp_path / "agent.gif"
    recorded = _eval_json(capsys, str(run_dir), "--episodes", "2", "--video", str(video))
    assert recorded == {**plain, "video": str(video)}
    kept, shapes = {}, []
    for index, frame in enumerate(iio.imiter(video)):  # one at a time (402 frames: 300 MB)
        shapes.append(frame.shape)
        if index in (0, EPISODE_FRAMES - 1, EPISODE_FRAMES):
            kept[index] = frame
    assert shapes == [(500, 500, 3)] * (2 * EPISODE_FRAMES)
    first, second = eval_seeds(tiny_preset("trpo").train.seed, 0, 2)
    assert np.abs(kept[0].astype(int) - _first_frame(first).astype(int)).mean() < 1.0  # (GIF palette)
    assert np.abs(kept[EPISODE_FRAMES].astype(int) - _first_frame(second).astype(int)).mean() < 1.0
    assert not np.array_equal(kept[0], kept[EPISODE_FRAMES - 1])  # the pendulum moved
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.gif"]  # no temporary file left


def test_an_mp4_plays_the_episode(run_dir, tmp_path, capsys):
    video = tmp_path / "agent.mp4"
    assert cli.main(["eval", str(run_dir), "--episodes", "1", "--video", str(video)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"video: {video}"
    import imageio.v2 as imageio

    shapes = []
    with imageio.get_reader(video) as reader:  # (one frame at a time: 201 of them take 150 MB)
        for frame in reader:
            shapes.append(frame.shape)
    assert shapes == [(500, 500, 3)] * EPISODE_FRAMES


@pytest.mark.parametrize(("name", "message"), [
    ("agent.avi", "agent.avi: expected a file ending in .mp4 or .gif"),
    ("nowhere/agent.mp4", "agent.mp4: no such folder"),
])
def test_a_bad_video_path_is_one_line_exit_2_before_any_episode(run_dir, tmp_path, capsys, name, message):
    assert cli.main(["eval", str(run_dir), "--video", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert list(tmp_path.iterdir()) == []


def test_without_imageio_the_error_names_the_extra(run_dir, tmp_path):
    blocker = "import sys; sys.modules['imageio'] = None; sys.modules['imageio.v2'] = None; "
    code = blocker + f"from rltui.cli import main; sys.exit(main(['eval', {str(run_dir)!r}, '--video', 'x.gif']))"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: recording a video needs imageio (pip install 'rltui[video]')"
    assert list(tmp_path.iterdir()) == []


def test_a_recording_that_fails_leaves_nothing(tmp_path):
    video = tmp_path / "agent.gif"
    with pytest.raises(RuntimeError), VideoWriter(video) as writer:
        writer.add(np.zeros((8, 8, 3), dtype=np.uint8))
        raise RuntimeError("the episode crashed")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(VideoError, match="no frame was rendered"), VideoWriter(video):
        pass
    assert list(tmp_path.iterdir()) == []


@pytest.mark.filterwarnings("ignore:.*without specifying any render mode")
def test_an_environment_that_does_not_render_frames_is_said(tmp_path):
    env = FrameTap(gym.make("Pendulum-v1"), lambda frame: None)  # no render_mode: render() gives None
    with pytest.raises(VideoError, match="does not render RGB frames"):
        env.reset(seed=0)
