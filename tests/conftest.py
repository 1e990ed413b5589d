"""Shared fixtures: tiny Pendulum presets built in code (small nets, a few hundred steps)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from rltui.presets import Preset, preset_from_toml_text

torch.set_num_threads(1)

TINY_MPO = """
name = "tiny-mpo"
description = "Pendulum, tiny networks, for tests"
algo = "mpo"

[env]
id = "Pendulum-v1"
num_envs = 1
normalize_obs = true

[train]
total_steps = 400
seed = 3
device = "cpu"
threads = 1
replay_size = 5000
update_after = 100
batch_size = 32
updates_per_step = 0.5

[network]
policy_layer_sizes = [16, 16]
critic_layer_sizes = [16, 16]

[mpo]
action_samples = 4
target_networks_update_period = 10

[eval]
interval = 200
episodes = 1

[checkpoint]
interval = 0
keep = 3
save_replay = true
"""

TINY_TRPO = """
name = "tiny-trpo"
description = "Pendulum, tiny networks, for tests"
algo = "trpo"

[env]
id = "Pendulum-v1"
num_envs = 2
normalize_obs = true
normalize_reward = true

[train]
total_steps = 400
seed = 4
device = "cpu"
threads = 1
rollout_steps = 50

[network]
policy_layer_sizes = [16, 16]
critic_layer_sizes = [16, 16]

[trpo]
gamma = 0.9
value_epochs = 2
value_minibatch_size = 32

[eval]
interval = 200
episodes = 1

[checkpoint]
interval = 0
keep = 3
"""

TINY_TEXTS = {"mpo": TINY_MPO, "trpo": TINY_TRPO}


def tiny_preset(algo: str, overrides: dict[str, dict] | None = None) -> Preset:
    """The tiny preset for `algo`, with {section: {key: value}} replacing values (TOML literals)."""
    text = TINY_TEXTS[algo]
    for section, values in (overrides or {}).items():
        for key, value in values.items():
            text = _set_toml_value(text, section, key, value)
    return preset_from_toml_text(text, f"<tiny-{algo}>")


def _set_toml_value(text: str, section: str, key: str, value: object) -> str:
    literal = _toml_literal(value)
    lines = text.splitlines()
    start = lines.index(f"[{section}]")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")), len(lines))
    for i in range(start + 1, end):
        if lines[i].split("=")[0].strip() == key:
            lines[i] = f"{key} = {literal}"
            break
    else:
        lines.insert(start + 1, f"{key} = {literal}")
    return "\n".join(lines) + "\n"


def _toml_literal(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_literal(v) for v in value) + "]"
    return repr(value)


@pytest.fixture
def make_preset() -> Callable[..., Preset]:
    return tiny_preset


@pytest.fixture
def write_preset_file(tmp_path: Path) -> Callable[[str], Path]:
    def write(algo: str) -> Path:
        path = tmp_path / f"tiny-{algo}.toml"
        path.write_text(TINY_TEXTS[algo])
        return path

    return write


@pytest.fixture(autouse=True, scope="session")
def _private_cache_home(tmp_path_factory: pytest.TempPathFactory):
    """The run index caches summaries under $XDG_CACHE_HOME: the tests' go to a temporary folder,
    never the user's ~/.cache (subprocesses inherit it)."""
    import os

    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = previous
