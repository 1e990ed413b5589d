"""Training throughput with the dashboard open against headless, for the Pendulum presets.

For each preset the real Engine trains for a fixed wall-clock window (after a warm-up that
covers MPO's `update_after`), alternately headless (engine thread, main thread idle) and with
the dashboard open (the Textual app run headless via `App.run_test`, redrawing at the default
4 Hz: the same widgets, layout and refresh work as in a terminal, minus writing to a tty).
Evaluation and periodic checkpoints are off so both modes do the same work. Prints env steps/s
of each mode and the ratio dashboard/headless (goal >= 0.9).

    python bench/ui_overhead.py [--seconds 15] [--repeats 2] [--size 160x48]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

# Run as a script, bench/ is first on sys.path and bench/agents.py would shadow the agents package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rltui.app import RlTuiApp
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
    engine.stop(final_checkpoint=False)
    thread.join()
    return rate


def with_dashboard(preset_name: str, seconds: float, saves: Path, size: tuple[int, int]) -> float:
    engine = _engine(preset_name, saves)
    app = RlTuiApp(engine=engine)

    async def run() -> float:
        async with app.run_test(size=size) as pilot:
            loop = asyncio.get_running_loop()
            rate = await loop.run_in_executor(None, _window, engine, seconds, threading.Event())
            engine.stop(final_checkpoint=False)
            while not engine.state.is_final:
                await pilot.pause(0.05)
            return rate

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="measured window per run")
    parser.add_argument("--repeats", type=int, default=2, help="headless/dashboard pairs per preset")
    parser.add_argument("--size", default="160x48", help="terminal size of the dashboard, WxH")
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

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
