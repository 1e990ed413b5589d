"""How fast `RunIndex` (rltui/summaries.py) summarises many runs: the runs browser's data layer.

Generates `--runs` synthetic run directories (default 1,000) of `--events` events each (default
10,000): a real preset.toml (pendulum-mpo, ten settings of kl_epsilon, seeds), and a metrics.jsonl
of real event lines as the run log writes them (run start, states, training episodes and update
metrics in MPO's proportions, evaluations every 2,000 steps, checkpoints; one run in 20 killed
without a final state, one in 20 failed), a tenth of them in a sweep's folder. Then measures, each
in a new `python` process (interpreter start and imports included, as a user would wait):

    cold    RunIndex(...).refresh() with an empty cache (the logs are in the page cache: just written)
    warm    the same again: every summary from the on-disk cache            (goal <= 2 s)
    grow    `--grow` events appended to a tenth of the logs, then a refresh in the warm index of
            this process, and in a new process (its cache, then only the appended bytes)

    python bench/runs.py [--runs 1000] [--events 10000] [--grow 100] [--dir DIR] [--keep]

The data goes to a temporary directory (or `--dir`) and is removed afterwards unless `--keep`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # bench/agents.py would otherwise shadow the agents package

from rltui.events import (  # noqa: E402
    CheckpointSaved,
    EpisodeFinished,
    ErrorRaised,
    EvalResult,
    RunStarted,
    RunState,
    StateChanged,
    UpdateMetrics,
)
from rltui.presets import agent_settings_in_effect, load_preset, preset_to_toml  # noqa: E402
from rltui.runlog import event_to_line  # noqa: E402
from rltui.summaries import RunIndex  # noqa: E402

STEPS_PER_EVENT = 100  # env steps between two events of the body (episodes of 200 steps, updates every 0.5 s)
EVAL_EVERY_STEPS = 2_000
CHECKPOINT_EVERY_STEPS = 100_000
MPO_METRICS = (
    "loss/q", "loss/temperature", "loss/dual", "kl/nonparametric", "kl/mean", "kl/std", "q/mean", "q/min",
    "q/max", "q/target_mean", "q/sampled_min", "q/sampled_max", "policy/std_mean", "policy/entropy",
    "weights/entropy", "loss/policy_nll", "loss/penalty_temperature", "loss/policy", "dual/temperature",
    "dual/alpha_mean", "dual/alpha_std", "policy/param_delta", "dual/penalty_temperature",
    "env/episode_return", "perf/steps_per_s", "perf/updates_per_s", "train/skipped_updates", "env/steps",
)
KL_EPSILONS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)

INDEX_ONCE = """
import json, sys, time
started = time.perf_counter()
from rltui.summaries import RunIndex
imported = time.perf_counter()
runs = RunIndex([sys.argv[1]], cache=sys.argv[2]).refresh()
done = time.perf_counter()
states = {}
for run in runs:
    states[run.state] = states.get(run.state, 0) + 1
print(json.dumps({"import_s": imported - started, "refresh_s": done - imported, "runs": len(runs), "states": states}))
"""


def body(events: int, t0: float) -> list[tuple[int, bytes]]:
    """(step, line) of the training events between a run's start and its end, evaluations excluded."""
    out = []
    step = 0
    for i in range(events):
        step += STEPS_PER_EVENT
        t = t0 + step / 500.0
        if i % 2 == 0:
            event = EpisodeFinished(step=step, time=t, episode_return=-1500.0 + 0.01 * step % 1300.0,
                                    episode_length=200)
        else:
            metrics = {name: 1.0 / (1 + k + i) for k, name in enumerate(MPO_METRICS)}
            event = UpdateMetrics(step=step, time=t, updates=50, metrics=metrics)
        out.append((step, event_to_line(event).encode()))
        if step % CHECKPOINT_EVERY_STEPS == 0:
            out.append((step, event_to_line(CheckpointSaved(step=step, time=t, path=f"/x/checkpoints/step-{step}"))
                        .encode()))
    return out


def write_runs(root: Path, runs: int, events: int) -> tuple[int, dict[str, int]]:
    """The run directories; returns the bytes of their logs and how many end in each state."""
    preset = load_preset("pendulum-mpo")
    preset_text = preset_to_toml(preset)
    settings = agent_settings_in_effect(preset)
    t0 = time.time() - 86_400
    lines = body(events - 4, t0)  # (start, running, final state, and one line per evaluation come on top)
    # chunks of the shared body between evaluation points, so each run only formats its own lines
    chunks: list[tuple[int, bytes]] = []
    pending: list[bytes] = []
    next_eval = EVAL_EVERY_STEPS
    for step, line in lines:
        pending.append(line)
        if step >= next_eval:
            chunks.append((step, b"".join(pending)))
            pending, next_eval = [], next_eval + EVAL_EVERY_STEPS
    chunks.append((lines[-1][0], b"".join(pending)))
    last_step = lines[-1][0]
    total = 0
    states = {"finished": 0, "killed": 0, "failed": 0}
    for i in range(runs):
        config, seed = i % len(KL_EPSILONS), i // len(KL_EPSILONS)
        parent = root / "sweep-kl" if i % 10 == 9 else root
        run_dir = parent / f"pendulum-mpo-{i:05d}"
        run_dir.mkdir(parents=True)
        text = preset_text.replace("seed = 0\n", f"seed = {seed}\n", 1).replace(
            "\nkl_epsilon = 0.1\n", f"\nkl_epsilon = {KL_EPSILONS[config]}\n", 1)
        (run_dir / "preset.toml").write_text(text)
        out = [event_to_line(RunStarted(step=0, time=t0, name="pendulum-mpo", algo="mpo", env_id="Pendulum-v1",
                                        device="cpu", total_steps=last_step, run_dir=str(run_dir.resolve()),
                                        agent_settings=settings)).encode(),
               event_to_line(StateChanged(step=0, time=t0, state=RunState.RUNNING)).encode()]
        for step, chunk in chunks:
            out.append(chunk)
            if step % EVAL_EVERY_STEPS == 0:
                mean = -1200.0 + 1000.0 * step / last_step + 5.0 * (config - seed % 7)
                out.append(event_to_line(EvalResult(step=step, time=t0 + step / 500.0, return_mean=mean,
                                                    return_std=20.0, length_mean=200.0, episodes=10,
                                                    returns=(mean,) * 10)).encode())
        end = t0 + last_step / 500.0
        if i % 20 == 1:
            out.append(event_to_line(ErrorRaised(step=last_step, time=end, message="RuntimeError: boom")).encode())
            out.append(event_to_line(StateChanged(step=last_step, time=end, state=RunState.FAILED,
                                                  message="RuntimeError: boom")).encode())
            states["failed"] += 1
        elif i % 20 == 0:
            states["killed"] += 1
        else:
            out.append(event_to_line(StateChanged(step=last_step, time=end, state=RunState.FINISHED,
                                                  message=f"finished {last_step} steps")).encode())
            states["finished"] += 1
        data = b"".join(out)
        (run_dir / "metrics.jsonl").write_bytes(data)
        total += len(data)
    return total, states


def index_in_new_process(root: Path, cache: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", INDEX_ONCE, str(root), str(cache)], capture_output=True,
                            text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"the indexing process failed:\n{result.stderr}")
    report = json.loads(result.stdout)
    report["process_s"] = time.perf_counter() - started
    return report


def grow(root: Path, every: int, events: int) -> int:
    """Append `events` training lines to every `every`-th log; returns the bytes appended."""
    logs = sorted(root.rglob("metrics.jsonl"))[::every]
    extra = b"".join(line for _, line in body(events, time.time()))
    for log in logs:
        with open(log, "ab") as handle:
            handle.write(extra)
    return len(extra) * len(logs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1_000)
    parser.add_argument("--events", type=int, default=10_000, help="events per run")
    parser.add_argument("--grow", type=int, default=100, help="events appended to a tenth of the runs")
    parser.add_argument("--dir", type=Path, help="where to generate the runs (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="leave the generated runs")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="rltui-bench-runs-", dir=args.dir))
    root, cache = base / "saves", base / "cache"
    try:
        started = time.perf_counter()
        size, states = write_runs(root, args.runs, args.events)
        print(f"generated {args.runs:,} runs x {args.events:,} events = {size / 1e9:.2f} GB of logs "
              f"in {time.perf_counter() - started:.1f} s ({states})")

        cold = index_in_new_process(root, cache)
        assert cold["runs"] == args.runs and cold["states"] == {k: v for k, v in states.items() if v}, cold
        print(f"cold  (empty cache, new process): {cold['process_s']:.2f} s in all, refresh {cold['refresh_s']:.2f} s "
              f"= {size / 1e6 / cold['refresh_s']:,.0f} MB/s of logs")
        warm = index_in_new_process(root, cache)
        assert warm["states"] == cold["states"]
        print(f"warm  (cached, new process):      {warm['process_s']:.2f} s in all, refresh {warm['refresh_s']:.3f} s, "
              f"imports {warm['import_s']:.3f} s   (goal <= 2 s)")

        index = RunIndex([root], cache=cache)
        index.refresh()
        t = time.perf_counter()
        index.refresh()
        print(f"idle  (nothing changed) refresh of a warm index: {time.perf_counter() - t:.3f} s")
        appended = grow(root, 10, args.grow)
        t = time.perf_counter()
        index.refresh()
        in_process = time.perf_counter() - t
        print(f"grow  ({args.grow} events appended to {args.runs // 10} logs, {appended / 1e6:.1f} MB): "
              f"refresh of a warm index {in_process:.3f} s", end="")
        index.save_cache()
        grown = grow(root, 10, args.grow)
        fresh = index_in_new_process(root, cache)
        print(f"; again, in a new process {fresh['process_s']:.2f} s in all ({grown / 1e6:.1f} MB read)")
    finally:
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
