"""What a sweep on Ray Tune costs, against plain headless runs of the same preset.

1. Scaling: TRIALS pendulum-trpo trials (seeds 0..TRIALS-1) of 1 CPU each on a local Ray with
   CORES CPUs (`rltui sweep`), against one headless run (`rltui train --headless`) measured in the
   same invocation. Aggregate env steps/s = all trials' steps / the wall time from the first
   trial's start to the last one's end (from their run logs); the ratio divides it by
   CORES x the single run's steps/s. Goal: >= 0.85. The aggregate over the command's whole wall
   time (Ray's start and stop, the trials' process starts) is printed too.
2. Fixed cost: the wall time of a one-trial sweep minus that of the same run headless, both as
   whole commands (Python and torch imports alike in both): Ray's start, Tune, the trial's process,
   Ray's stop and the results table.

    python bench/sweep.py [--trials 8] [--steps 50000] [--cores N] [--fixed-steps 2000]

Both commands run as the user would run them, each in a fresh process; steps/s come from the
runs' own logs (RunStarted to the final state: training and its evaluations, not imports). Ray runs
its trial processes at niceness 15 (its `worker_niceness`), so the single run is measured at that
niceness too (`--nice`): on a machine that other work shares, a nice-0 run would get more than its
share of the CPU and the ratio would measure the scheduler, not the sweep. (On an idle machine the
niceness changes nothing.)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rltui.events import RunStarted, StateChanged  # noqa: E402
from rltui.runlog import LOG_NAME, read_events  # noqa: E402

PRESET = "pendulum-trpo"
GOAL = 0.85
RAY_WORKER_NICENESS = 15


def rltui(*args: str, nice: int = 0) -> float:
    """Run `python -m rltui ARGS` to its end (at niceness +`nice`); its wall time in seconds."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout's rltui, in the trials' processes too
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rltui", *args], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, env=env, preexec_fn=(lambda: os.nice(nice)) if nice else None)
    return time.perf_counter() - start


def run_span(run_dir: Path) -> tuple[float, float, int]:
    """(start time, end time, env steps) of a finished run, from its log."""
    events, _ = read_events(run_dir / LOG_NAME)
    started = next(e for e in events if isinstance(e, RunStarted))
    ended = [e for e in events if isinstance(e, StateChanged) and e.state.is_final][-1]
    return started.time, ended.time, ended.step - started.step


def only_run(saves: Path) -> Path:
    [run_dir] = [p for p in saves.iterdir() if (p / LOG_NAME).is_file()]
    return run_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="trials of the scaling sweep (default 8)")
    parser.add_argument("--steps", type=int, default=50_000, help="env steps per trial (default 50000)")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1,
                        help="trials at a time (default: this machine's CPUs, all of which Ray gets)")
    parser.add_argument("--fixed-steps", type=int, default=2_000, help="env steps of the fixed-cost run")
    parser.add_argument("--nice", type=int, default=RAY_WORKER_NICENESS,
                        help=f"niceness of the single run (default {RAY_WORKER_NICENESS}, as Ray's trial processes)")
    args = parser.parse_args()
    steps = f"train.total_steps={args.steps}"
    with tempfile.TemporaryDirectory(prefix="rltui-bench-sweep-") as tmp:
        root = Path(tmp)
        rltui("train", PRESET, "--headless", "--set", steps, "--saves", str(root / "single"), nice=args.nice)
        start, end, single_steps = run_span(only_run(root / "single"))
        single = single_steps / (end - start)
        print(f"one headless run (niceness +{args.nice}): {single:,.0f} env steps/s "
              f"({single_steps:,} steps in {end - start:.1f} s)")

        wall = rltui("sweep", PRESET, "--headless", "--set", steps, "--seeds", f"0-{args.trials - 1}",
                     "--cpus-per-trial", "1", "--max-concurrent", str(args.cores), "--name", "scaling",
                     "--saves", str(root))
        spans = [run_span(p) for p in (root / "scaling").iterdir() if (p / LOG_NAME).is_file()]
        total = sum(s[2] for s in spans)
        training = max(s[1] for s in spans) - min(s[0] for s in spans)
        aggregate = total / training
        ratio = aggregate / (args.cores * single)
        print(f"sweep of {len(spans)} trials x {args.steps:,} steps, {args.cores} at a time: "
              f"{aggregate:,.0f} env steps/s while trials ran ({training:.1f} s); "
              f"{total / wall:,.0f} over the whole command ({wall:.1f} s)")
        print(f"scaling: {aggregate:,.0f} / ({args.cores} cores x {single:,.0f}) = {ratio:.2f} "
              f"(goal >= {GOAL}: {'met' if ratio >= GOAL else 'NOT met'})")

        fixed = f"train.total_steps={args.fixed_steps}"
        headless = rltui("train", PRESET, "--headless", "--set", fixed, "--saves", str(root / "fixed-single"))
        swept = rltui("sweep", PRESET, "--headless", "--set", fixed, "--name", "fixed", "--saves", str(root))
        print(f"fixed cost of a one-trial sweep: {swept - headless:.1f} s "
              f"({swept:.1f} s as a sweep, {headless:.1f} s headless, {args.fixed_steps:,} steps)")


if __name__ == "__main__":
    main()
