"""What the runs browser and the compare view cost, on recorded logs (no training).

Compare view: RUNS logs of STEPS env steps each (an episode every 200 steps, metrics every 100,
an evaluation every 5,000: about STEPS/40 lines a run) opened at 160x48 in the real app (run
headless through `App.run_test`). Prints the time until every log is read, and the time of one
refresh tick when every run moved (all four charts recomputed and rasterised: what a tick costs
with live runs; goal <= 50 ms, a fifth of the 4 Hz budget).

Runs browser: BROWSED small runs; prints a cold `RunIndex.refresh()` (no cache: every log read),
a warm one (nothing changed: what the 2 s refresh costs), and the table rebuilt for them (a new
order) against updated in place (same rows; goal: the in-place update well under the rebuild).

    python bench/browser.py [--runs 8] [--steps 1000000] [--browsed 500]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # (bench/agents.py would shadow agents)

from rltui.app import RlTuiApp
from rltui.comparison import ComparedRun
from rltui.events import EpisodeFinished, EvalResult, Event, RunStarted, RunState, StateChanged, UpdateMetrics
from rltui.runlog import RunLogWriter
from rltui.screens.compare import CompareScreen
from rltui.screens.runs import RunsScreen
from rltui.summaries import RunIndex

T0 = 1_700_000_000.0


def events(name: str, seed: int, steps: int) -> list[Event]:
    def t(step: int) -> float:
        return T0 + step / 100.0

    out: list[Event] = [
        RunStarted(0, name=name, algo="mpo", env_id="Pendulum-v1", device="cpu", total_steps=steps,
                   run_dir=name, agent_settings={"kl_epsilon": 0.1}, time=t(0)),
        StateChanged(0, state=RunState.RUNNING, time=t(0)),
    ]
    for step in range(100, steps + 1, 100):
        u = step / steps
        if step % 200 == 0:
            out.append(EpisodeFinished(step, episode_return=-1400 + 1200 * u + 50 * math.sin(step + seed),
                                       episode_length=200, time=t(step)))
        out.append(UpdateMetrics(step, updates=25, time=t(step), metrics={
            "loss/q": 10 * math.exp(-3 * u) + seed, "kl/nonparametric": 0.08 + 0.01 * math.sin(u * 9 + seed),
            "kl/mean": 0.004, "kl/std": 0.0005, "dual/temperature": 1 + u, "dual/alpha_mean": 2 + u,
            "dual/alpha_std": 3 + u, "perf/steps_per_s": 100.0}))
        if step % 5000 == 0:
            out.append(EvalResult(step, return_mean=-1400 + 1200 * u, return_std=10.0, length_mean=200.0,
                                  episodes=5, time=t(step)))
    out.append(StateChanged(steps, state=RunState.FINISHED, time=t(steps)))
    return out


def record(run_dir: Path, seed: int, steps: int) -> Path:
    run_dir.mkdir(parents=True)
    (run_dir / "preset.toml").write_text(f'name = "bench-mpo"\nalgo = "mpo"\n[env]\nid = "Pendulum-v1"\n'
                                         f"[train]\nseed = {seed}\ntotal_steps = {steps}\n")
    writer = RunLogWriter(run_dir / "metrics.jsonl")
    for event in events(run_dir.name, seed, steps):
        writer(event)
    writer.close()
    return run_dir


async def compare_view(root: Path, runs: int, steps: int) -> None:
    dirs = [record(root / "compare" / f"run-{i}", i, steps) for i in range(runs)]
    app = RlTuiApp(compare=[ComparedRun(d, d.name, "bench") for d in dirs])
    started = time.perf_counter()
    async with app.run_test(size=(160, 48)) as pilot:
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        while not all(run.history.status().state.is_final for run in screen.runs):
            await pilot.pause(0.01)
        loaded = time.perf_counter() - started
        await pilot.pause(0.2)
        ticks = []
        for grouped in (False, True):
            screen.grouped = grouped
            for _ in range(10):
                screen._drawn.clear()  # as if every run moved
                t = time.perf_counter()
                screen.pull()
                for chart in screen.charts():
                    chart._build(*chart.size)
                ticks.append((grouped, time.perf_counter() - t))
        await pilot.press("q")
    lines = sum(1 for _ in open(dirs[0] / "metrics.jsonl"))
    print(f"compare view: {runs} runs x {steps:,} steps ({lines:,} log lines each): read in {loaded:.2f} s")
    for grouped in (False, True):
        ms = 1000 * statistics.median(t for g, t in ticks if g is grouped)
        print(f"  a tick with every run moved ({'grouped' if grouped else 'each run'}): {ms:.1f} ms "
              f"(goal <= 50 ms)")


async def runs_browser(root: Path, browsed: int) -> None:
    saves = root / "browsed"
    for i in range(browsed):
        record(saves / f"bench-mpo-{i:04d}", i, 20_000)
    index = RunIndex([saves], use_cache=False)
    t = time.perf_counter()
    runs = index.refresh()
    cold = time.perf_counter() - t
    t = time.perf_counter()
    index.refresh()
    warm = time.perf_counter() - t
    app = RlTuiApp(runs_roots=[saves])
    async with app.run_test(size=(160, 48)) as pilot:
        screen = app.screen
        assert isinstance(screen, RunsScreen)
        while len(screen.runs) < browsed:
            await pilot.pause(0.05)
        rebuilds, updates = [], []
        for _ in range(6):
            t = time.perf_counter()
            screen.descending = not screen.descending  # the other order: the table refilled
            rebuilds.append(time.perf_counter() - t)
            t = time.perf_counter()
            screen.show_runs(runs)  # the same rows: updated in place
            updates.append(time.perf_counter() - t)
        await pilot.press("q")
    print(f"runs browser: {browsed} runs: RunIndex.refresh cold {1000 * cold:.0f} ms, warm {1000 * warm:.0f} ms; "
          f"table refilled {1000 * statistics.median(rebuilds):.0f} ms, updated in place "
          f"{1000 * statistics.median(updates):.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--browsed", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")  # the browser's index cache: not the user's
        asyncio.run(compare_view(Path(tmp), args.runs, args.steps))
        asyncio.run(runs_browser(Path(tmp), args.browsed))


if __name__ == "__main__":
    main()
