"""SVG snapshots of the picker (80x24, 160x48) and the dashboard (80x24, 120x36, 160x48, 200x50,
NO_COLOR, a symmetric log scale), from deterministic data.

Update after an intended change with `pytest tests/test_snapshots.py --snapshot-update` and
look at the SVGs in tests/__snapshots__/.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fake_engine import T0, FakeEngine

from rltui.app import RlTuiApp
from rltui.presets import PresetInfo, preset_from_toml_text

pytestmark = pytest.mark.timeout(120)

PRESETS = {
    "presets/demo-mpo.toml": """
name = "demo-mpo"
description = "MPO on Pendulum-v1, a snapshot-test preset"
algo = "mpo"
[env]
id = "Pendulum-v1"
[train]
total_steps = 20_000
[network]
policy_layer_sizes = [64, 64]
critic_layer_sizes = [64, 64]
[mpo]
kl_epsilon = 0.1
mstep_kl_epsilon = 0.01
""",
    "presets/demo2-mpo.toml": """
name = "demo2-mpo"
description = "Another one"
algo = "mpo"
[env]
id = "Pendulum-v1"
""",
    "presets/demo-trpo.toml": """
name = "demo-trpo"
description = "TRPO on Pendulum-v1, a snapshot-test preset"
algo = "trpo"
[env]
id = "Pendulum-v1"
""",
}


def _picker_app() -> RlTuiApp:
    infos = [
        PresetInfo(name=Path(p).stem, algo=p.rsplit("-", 1)[1].removesuffix(".toml"), env_id="Pendulum-v1",
                   description="", path=Path(p))
        for p in PRESETS
    ]
    return RlTuiApp(
        picker_kwargs={
            "lister": lambda: infos,
            "loader": lambda path, overrides=(), check_env=True: preset_from_toml_text(PRESETS[str(path)], str(path)),
            "device_resolver": lambda spec: "cpu",
        }
    )


async def _picker_ready(pilot) -> None:
    picker = pilot.app.screen
    deadline = time.monotonic() + 10
    while "auto" not in picker._devices:  # the device is resolved off the UI thread
        assert time.monotonic() < deadline
        await pilot.pause(0.05)
    await pilot.pause()


def _dashboard_app(algo: str) -> tuple[RlTuiApp, FakeEngine]:
    engine = FakeEngine(algo)
    return RlTuiApp(engine=engine, clock=lambda: T0 + 20.0), engine


def _dashboard_ready(engine: FakeEngine):
    async def run_before(pilot) -> None:
        assert engine.emitted.wait(10)
        pilot.app.screen.pull()
        await pilot.pause()

    return run_before


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
def test_picker(snap_compare, size):
    assert snap_compare(_picker_app(), terminal_size=size, run_before=_picker_ready)


@pytest.mark.parametrize("size", [(80, 24), (120, 36), (200, 50)], ids=lambda size: f"{size[0]}x{size[1]}")
def test_dashboard_mpo(snap_compare, size):
    app, engine = _dashboard_app("mpo")
    assert snap_compare(app, terminal_size=size, run_before=_dashboard_ready(engine))


def test_dashboard_no_color_80x24(snap_compare, monkeypatch):
    """Series told apart by their dash patterns and legend marks, the raw band stippled."""
    monkeypatch.setenv("NO_COLOR", "1")
    app, engine = _dashboard_app("mpo")
    assert snap_compare(app, terminal_size=(80, 24), run_before=_dashboard_ready(engine))


def test_dashboard_returns_on_a_symmetric_log_scale_120x36(snap_compare):
    app, engine = _dashboard_app("mpo")
    assert snap_compare(app, terminal_size=(120, 36), run_before=_dashboard_ready(engine), press=["l"])


def test_dashboard_trpo_160x48(snap_compare):
    app, engine = _dashboard_app("trpo")
    assert snap_compare(app, terminal_size=(160, 48), run_before=_dashboard_ready(engine))


def test_dashboard_zoomed_chart_80x24(snap_compare):
    app, engine = _dashboard_app("mpo")
    assert snap_compare(app, terminal_size=(80, 24), run_before=_dashboard_ready(engine), press=["3"])
