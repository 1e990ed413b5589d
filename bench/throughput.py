"""Headless training throughput of the Pendulum presets, and the loop's overhead around update().

For each preset, runs the real Engine headless for a fixed number of env steps (evaluation and
periodic checkpoints off) and prints env steps/s plus the share of wall time spent outside
`agent.update()` once updates have started. Goal: < 10 % for MPO.

    python bench/throughput.py [--mpo-steps 3000] [--trpo-steps 20000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, bench/ is first on sys.path and bench/agents.py would shadow the agents package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rltui.engine import Engine
from rltui.presets import load_preset
from rltui.rundir import create_run_dir


def measure(preset_name: str, steps: int, update_after: int | None) -> dict[str, float]:
    overrides = [f"train.total_steps={steps}", "eval.interval=0", "checkpoint.interval=0"]
    if update_after is not None:
        overrides.append(f"train.update_after={update_after}")
    preset = load_preset(preset_name, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(preset, create_run_dir(preset, Path(tmp)))
        update = engine.agent.update
        timing = {"update_s": 0.0, "first_update": None, "updates": 0}

        def timed_update(batch):
            start = time.perf_counter()
            if timing["first_update"] is None:
                timing["first_update"] = start
            result = update(batch)
            timing["update_s"] += time.perf_counter() - start
            timing["updates"] += 1
            return result

        engine.agent.update = timed_update
        finished_at = {}
        engine.subscribe(lambda event: finished_at.setdefault("t", time.perf_counter())
                         if getattr(event, "state", None) is not None and event.state.is_final else None)
        start = time.perf_counter()
        engine.run()
        end = finished_at.get("t", time.perf_counter())
    wall = end - start
    learning_wall = end - timing["first_update"] if timing["first_update"] else float("nan")
    return {
        "steps_per_s": steps / wall,
        "updates": timing["updates"],
        "outside_update": 1.0 - timing["update_s"] / learning_wall,
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mpo-steps", type=int, default=3000)
    parser.add_argument("--trpo-steps", type=int, default=20480)
    args = parser.parse_args()
    rows = [
        ("pendulum-mpo", measure("pendulum-mpo", args.mpo_steps, update_after=1000)),
        ("pendulum-trpo", measure("pendulum-trpo", args.trpo_steps, update_after=None)),
    ]
    print(f"{'preset':<15} {'steps':>7} {'wall s':>8} {'env steps/s':>12} {'updates':>8} {'outside update()':>17}")
    for name, row in rows:
        steps = args.mpo_steps if name.endswith("mpo") else args.trpo_steps
        print(f"{name:<15} {steps:>7} {row['wall_s']:>8.1f} {row['steps_per_s']:>12.1f} "
              f"{row['updates']:>8} {row['outside_update']:>16.1%}")
    print("goal: outside update() < 10% for pendulum-mpo (time after the first update)")


if __name__ == "__main__":
    main()
