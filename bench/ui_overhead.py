"""Training throughput with the dashboard open against headless, for the Pendulum presets.

For each preset the real Engine trains for a fixed wall-clock window (after a warm-up that
covers MPO's `update_after`), alternately headless (engine thread, main thread idle) and with
the dashboard open (the Textual app run headless via `App.run_test`, redrawing at the default
4 Hz: the same widgets, layout and refresh work as in a terminal, minus writing to a tty).
Evaluation and periodic checkpoints are off so both modes do the same work. Prints env steps/s
of each mode and the ratio dashboard/headless (goal >= 0.9).

Attached (`--attached`): the run is a real `rltui train --headless` process, measured through its
control socket's `status`, alone and with `rltui attach`'s dashboard (in this process: following
metrics.jsonl, polling status, drawing at 4 Hz) on it. Prints the ratio attached/alone (goal >= 0.95).

Agent view (`--agent-view`): pendulum-trpo paused in the dashboard, then the `v` view open (evaluation
mode rendered at 30 fps and drawn in half blocks): frames rendered and drawn per second, and the
process's CPU use with the view open against paused without it (training does not run meanwhile).

    python bench/ui_overhead.py [--seconds 15] [--repeats 2] [--size 160x48] [--attached | --agent-view]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# Run as a script, bench/ is first on sys.path and bench/agents.py would shadow the agents package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rltui.app import RlTuiApp
from rltui.commands import Stop
from rltui.control import ControlClient, ControlError, RemoteEngine, socket_path
from rltui.engine import Engine
from rltui.presets import load_preset
from rltui.rundir import create_run_dir

PRESETS = ("pendulum-mpo", "pendulum-trpo")
WARMUP_STEPS = 2_000  # past MPO's update_after (1000), so updates are running in the window


def _engine(preset_name: str, saves: Path) -> Engine:
    preset = load_preset(preset_name, ["train.total_steps=100000000", "eval.interval=0", "checkpoint.interval=0"])
    return Engine(preset, create_run_dir(preset, saves))


def _window(engine: Engine, seconds: float, stop: threading.Event) -> float:
    """Wait for the warm-up, then return env steps/s over `seconds`."""
    while engine.step < WARMUP_STEPS and not stop.is_set():
        time.sleep(0.02)
    t0, s0 = time.perf_counter(), engine.step
    stop.wait(seconds)
    return (engine.step - s0) / (time.perf_counter() - t0)


def headless(preset_name: str, seconds: float, saves: Path) -> float:
    engine = _engine(preset_name, saves)
    thread = engine.start()
    rate = _window(engine, seconds, threading.Event())
    engine.submit(Stop(final_checkpoint=False))
    thread.join()
    return rate


def with_dashboard(preset_name: str, seconds: float, saves: Path, size: tuple[int, int]) -> float:
    engine = _engine(preset_name, saves)
    app = RlTuiApp(engine=engine)

    async def run() -> float:
        async with app.run_test(size=size) as pilot:
            loop = asyncio.get_running_loop()
            rate = await loop.run_in_executor(None, _window, engine, seconds, threading.Event())
            engine.submit(Stop(final_checkpoint=False))
            while not engine.state.is_final:
                await pilot.pause(0.05)
            return rate

    return asyncio.run(run())


def agent_view_cost(seconds: float, saves: Path, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """pendulum-trpo in the dashboard: (frames/s rendered, frames/s drawn, process CPU % with the
    agent view open, process CPU % paused without it), each over `seconds`."""
    from rltui.commands import Pause
    from rltui.screens.agent_view import AgentViewScreen
    from rltui.widgets.frame_view import FrameView

    engine = _engine("pendulum-trpo", saves)
    app = RlTuiApp(engine=engine)

    def cpu_percent(window: float) -> float:
        c0, t0 = time.process_time(), time.perf_counter()
        time.sleep(window)
        return 100 * (time.process_time() - c0) / (time.perf_counter() - t0)

    async def run() -> tuple[float, float, float, float]:
        async with app.run_test(size=size) as pilot:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, _window, engine, 0.0, threading.Event())
            engine.submit(Pause()).result(10)
            paused_cpu = await loop.run_in_executor(None, cpu_percent, seconds)
            await pilot.press("v")
            while not isinstance(app.screen, AgentViewScreen) or engine.frames.latest() is None:
                await pilot.pause(0.05)
            view = app.screen.query_one(FrameView)
            rendered0, drawn, seen = engine.frames.latest()[0], 0, view._key
            c0, t0 = time.process_time(), time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                await pilot.pause(0.01)
                if view._key != seen:
                    drawn, seen = drawn + 1, view._key
            wall = time.perf_counter() - t0
            view_cpu = 100 * (time.process_time() - c0) / wall
            rendered = (engine.frames.latest()[0] - rendered0) / wall
            await pilot.press("escape")
            engine.submit(Stop(final_checkpoint=False))
            while not engine.state.is_final:
                await pilot.pause(0.05)
            return rendered, drawn / wall, view_cpu, paused_cpu

    return asyncio.run(run())


def _process_rate(preset_name: str, seconds: float, saves: Path, size: tuple[int, int] | None) -> float:
    """Env steps/s of a `rltui train --headless` process over `seconds`, with an attached dashboard
    on it when `size` is given."""
    repo = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-m", "rltui", "train", preset_name, "--headless", "--saves", str(saves),
               "--set", "train.total_steps=100000000", "--set", "eval.interval=0", "--set", "checkpoint.interval=0"]
    before = set(saves.iterdir()) if saves.is_dir() else set()
    process = subprocess.Popen(command, cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = _connect(saves, before)
        while client.status()["step"] < WARMUP_STEPS:
            time.sleep(0.1)

        def window() -> float:
            t0, s0 = time.perf_counter(), client.status()["step"]
            time.sleep(seconds)
            return (client.status()["step"] - s0) / (time.perf_counter() - t0)

        if size is None:
            rate = window()
        else:
            app = RlTuiApp(remote=RemoteEngine(Path(client.status()["run_dir"])))

            async def attached() -> float:
                async with app.run_test(size=size) as pilot:
                    rate = await asyncio.get_running_loop().run_in_executor(None, window)
                    await pilot.press("q")  # detach
                    return rate

            rate = asyncio.run(attached())
        client.request("stop", final_checkpoint=False, timeout=60)
        client.close()
        process.wait(60)
        return rate
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _connect(saves: Path, before: set[Path]) -> ControlClient:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for run_dir in set(saves.iterdir()) - before if saves.is_dir() else ():
            try:
                return ControlClient(socket_path(run_dir))
            except ControlError:
                pass
        time.sleep(0.2)
    raise RuntimeError("the run's control socket never answered")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="measured window per run")
    parser.add_argument("--repeats", type=int, default=2, help="headless/dashboard pairs per preset")
    parser.add_argument("--size", default="160x48", help="terminal size of the dashboard, WxH")
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--attached", action="store_true", help="a run in its own process, alone vs attached")
    parser.add_argument("--agent-view", action="store_true", help="what the `v` agent view costs (pendulum-trpo)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    if args.agent_view:
        with tempfile.TemporaryDirectory() as tmp:
            rendered, drawn, view_cpu, paused_cpu = agent_view_cost(args.seconds, Path(tmp), (width, height))
        print(f"agent view {width}x{height}: {rendered:.1f} frames/s rendered, {drawn:.1f} frames/s drawn; "
              f"process CPU {view_cpu:.0f}% of a core with it open, {paused_cpu:.0f}% paused without it")
        return
    if args.attached:
        print(f"window {args.seconds:g} s after {WARMUP_STEPS} warm-up steps, {args.repeats} pair(s), "
              f"a headless process alone vs with an attached dashboard {width}x{height} at 4 Hz")
        for name in args.presets:
            alone, attached = [], []
            with tempfile.TemporaryDirectory() as tmp:
                for _ in range(args.repeats):
                    alone.append(_process_rate(name, args.seconds, Path(tmp), None))
                    attached.append(_process_rate(name, args.seconds, Path(tmp), (width, height)))
            a, b = statistics.mean(alone), statistics.mean(attached)
            runs = ", ".join(f"{x:.0f}/{y:.0f}" for x, y in zip(alone, attached, strict=True))
            print(f"{name:15s} alone {a:8.1f} steps/s  attached {b:8.1f} steps/s  ratio {b / a:.3f}  "
                  f"(pairs alone/attached: {runs})")
        return

    print(f"window {args.seconds:g} s after {WARMUP_STEPS} warm-up steps, {args.repeats} pair(s), "
          f"dashboard {width}x{height} at 4 Hz")
    for name in args.presets:
        rates: dict[str, list[float]] = {"headless": [], "dashboard": []}
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.repeats):  # alternate, so drift in machine load hits both modes
                rates["headless"].append(headless(name, args.seconds, Path(tmp)))
                rates["dashboard"].append(with_dashboard(name, args.seconds, Path(tmp), (width, height)))
        h, d = statistics.mean(rates["headless"]), statistics.mean(rates["dashboard"])
        runs = ", ".join(f"{a:.0f}/{b:.0f}" for a, b in zip(rates["headless"], rates["dashboard"], strict=True))
        print(f"{name:15s} headless {h:8.1f} steps/s  dashboard {d:8.1f} steps/s  "
              f"ratio {d / h:.3f}  (pairs headless/dashboard: {runs})")


if __name__ == "__main__":
    main()
