"""The sweep's driver: Ray (local, or a cluster by address), Ray Tune's Tuner, progress, results.

Without an address Ray starts on this machine with its CPUs and GPUs (nothing to set up) and stops
at the end; with `--address auto` or `ray://host:port` the sweep joins that cluster, and the sweep
directory (trial run directories and Tune's own state alike) must be on storage every node mounts
at the same path. When Ray is already up in this process (a test's session), it is used as it is.

Tune runs one trial per (setting, seed) of the plan, `{"trial": <name>}` its whole config, with
`cpus_per_trial`/`gpus_per_trial` each (fractions of a GPU share it), at most `max_concurrent` at a
time, FIFO or ASHA on the plan's metric over `env_steps`, restarting a failed trial up to
`max_failures` times. A trial's process goes on to the next trial (`reuse_actors`): starting a
process and importing torch again cost seconds per trial. Tune keeps its experiment state in
`<sweep dir>/tune/`, from which `rltui sweep --resume` restores it (Tune's `Tuner.restore`);
without that state (the driver died before Tune saved any) the plan is started again and each
trial resumes its own run directory.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, ClassVar, TextIO

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from rltui.rundir import RunLock, RunLockedError
from rltui.sweep.plan import TUNE_DIR, SweepError, SweepOptions, SweepPlan, write_plan
from rltui.sweep.progress import SweepProgress
from rltui.sweep.trial import EXIT_WAIT_S, SweepTrial

LOCK_POLL_S = 0.2
RESUME_WAIT_S = 60.0  # how long --resume waits for the trials of a killed driver to let go of their runs


def start_ray(address: str | None) -> bool:
    """Start (or join) Ray unless it is up in this process already; True when this call did."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's own console output: off (ours instead)
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    except ConnectionError as exc:
        if address is None:
            raise
        raise SweepError(f"--address {address}: cannot join a Ray cluster there ({str(exc).splitlines()[0]})") from None
    return True


def check_resources(options: SweepOptions, cluster: dict[str, float]) -> None:
    """SweepError when one trial asks for more CPUs or GPUs than the whole cluster has."""
    for key, resource, asked in (("cpus_per_trial", "CPU", options.cpus_per_trial),
                                 ("gpus_per_trial", "GPU", options.gpus_per_trial)):
        have = cluster.get(resource, 0.0)
        if asked > have:
            origin = options.origins.get(key, "--" + key.replace("_", "-"))
            has = f"{have:g} {resource}s" if have else f"no {resource}"
            raise SweepError(f"{origin}: {asked:g} {resource}s per trial, but the Ray cluster has {has}")


def scheduler_for(plan: SweepPlan) -> TrialScheduler:
    options = plan.options
    if options.scheduler == "fifo":
        return FIFOScheduler()
    base = plan.base_preset()
    max_t = max(plan.trial_preset(t, base).train.total_steps for t in plan.trials)
    grace = min(options.grace_steps or base.eval.interval, max_t)
    return ASHAScheduler(time_attr="env_steps", max_t=max_t, grace_period=grace,
                         reduction_factor=options.reduction_factor)


def tune_trial_name(trial: Any) -> str:
    """Tune's name (and directory) of a trial: the plan's trial name."""
    return str(trial.config["trial"])


class ProgressCallback(tune.Callback):
    """Hands Tune's trial states to the progress view at each step of Tune's loop.

    Tune pickles its callbacks into its experiment state, so the view is a class attribute (set
    by the driver for the sweep it runs) rather than part of the pickled object."""

    view: ClassVar[SweepProgress | None] = None

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if ProgressCallback.view is not None:
            ProgressCallback.view.update({tune_trial_name(t): str(t.status) for t in trials})


def _tuner(plan: SweepPlan, sweep_dir: Path, resume: bool) -> tune.Tuner:
    options = plan.options
    trainable = tune.with_resources(
        tune.with_parameters(SweepTrial, sweep_dir=str(sweep_dir)),
        {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial},
    )
    tune_dir = sweep_dir / TUNE_DIR
    if resume and tune.Tuner.can_restore(str(tune_dir)):
        return tune.Tuner.restore(str(tune_dir), trainable, resume_unfinished=True, resume_errored=True)
    return tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search([t.name for t in plan.trials])},
        tune_config=tune.TuneConfig(
            metric=options.metric, mode="max", scheduler=scheduler_for(plan),
            max_concurrent_trials=options.max_concurrent, reuse_actors=True,
            trial_name_creator=tune_trial_name, trial_dirname_creator=tune_trial_name,
        ),
        run_config=tune.RunConfig(
            name=TUNE_DIR, storage_path=str(sweep_dir), verbose=0, callbacks=[ProgressCallback()],
            failure_config=tune.FailureConfig(max_failures=options.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        ),
    )


def wait_for_runs_to_close(plan: SweepPlan, sweep_dir: Path, timeout_s: float = EXIT_WAIT_S) -> list[str]:
    """Wait until no trial process holds its run directory (a stopped trial writes its final
    checkpoint as its process exits); the names of those still held after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    held = [t.name for t in plan.trials if (sweep_dir / t.name).is_dir()]
    while held:
        still = []
        for name in held:
            try:
                RunLock(sweep_dir / name).release()
            except RunLockedError:
                still.append(name)
        held = still
        if not held or time.monotonic() >= deadline:
            break
        time.sleep(LOCK_POLL_S)
    return held


def _fit_in_the_browser(plan: SweepPlan, sweep_dir: Path, resume: bool, progress: SweepProgress,
                        stream: TextIO) -> list[str]:
    """Tune on a thread while the runs browser shows the sweep (grouped by setting: its seeds as
    one group, live); a browser left before the end hands the terminal back to the progress view.
    Returns the trials still holding their run directory at the end."""
    from rltui.app import run_runs

    outcome: dict[str, Any] = {}

    def fit() -> None:
        try:
            _tuner(plan, sweep_dir, resume).fit()
            outcome["held"] = wait_for_runs_to_close(plan, sweep_dir)
        except BaseException as exc:  # noqa: BLE001 - raised again on the driver's thread
            outcome["error"] = exc

    ProgressCallback.view = None  # the browser has the terminal
    thread = threading.Thread(target=fit, name="rltui-sweep-tune", daemon=True)
    thread.start()
    run_runs([sweep_dir], grouped=True)
    if thread.is_alive():
        stream.write(f"the sweep goes on (Ctrl-C stops it; `rltui runs {sweep_dir}` browses it again)\n")
        stream.flush()
        ProgressCallback.view = progress
        while thread.is_alive():
            thread.join(0.2)  # (a bare join would not let Ctrl-C through)
    if "error" in outcome:
        raise outcome["error"]
    return list(outcome["held"])


def run_sweep(plan: SweepPlan, sweep_dir: Path, *, address: str | None, headless: bool, resume: bool,
              stream: TextIO, out: TextIO) -> int:
    """The whole sweep: Ray up (a new sweep's directory and plan are written once Ray is up and
    has room for a trial), the trials on Tune with live progress on `stream`, Ray down, then the
    results table, printed on `out` and written to the sweep directory. Exit status: 0 when every
    trial finished or was stopped early by the scheduler, 1 otherwise."""
    from rltui.sweep.results import FAILED, FINISHED, RESULTS_JSON, RESULTS_MD, STOPPED_EARLY, write_results

    sweep_dir = sweep_dir.absolute()
    started = start_ray(address)
    try:
        check_resources(plan.options, ray.cluster_resources())
        if resume:  # a killed driver's trial processes may still be ending (Ray reaps them): wait for them
            still = wait_for_runs_to_close(plan, sweep_dir, timeout_s=RESUME_WAIT_S)
            if still:
                raise SweepError(f"{sweep_dir}: trial(s) {', '.join(still)} still held by a live process after "
                                 f"{RESUME_WAIT_S:g} s (another driver of this sweep?); stop it, then --resume")
        else:
            sweep_dir.mkdir(parents=True)
            write_plan(sweep_dir, plan)
        progress = SweepProgress(plan, sweep_dir, stream, live=not headless)
        ProgressCallback.view = progress
        try:
            if headless or not (stream.isatty() and sys.stdin.isatty()):
                _tuner(plan, sweep_dir, resume).fit()
                held = wait_for_runs_to_close(plan, sweep_dir)
            else:
                held = _fit_in_the_browser(plan, sweep_dir, resume, progress, stream)
        finally:
            ProgressCallback.view = None
            progress.close()
    finally:
        if started:
            ray.shutdown()
    results, text = write_results(plan, sweep_dir)
    out.write(text.split("\n## Trials")[0].rstrip("\n") + "\n")
    trials = [t for r in results for t in r.trials]
    for trial in trials:
        if trial.state == FAILED:
            out.write(f"failed: {trial.name}: {trial.note or 'see its run log'}\n")
    for name in held:
        out.write(f"warning: {name}: its trial process had not let go of its run directory at the end\n")
    out.write(f"results: {sweep_dir / RESULTS_MD} and {RESULTS_JSON}; run directories under {sweep_dir}\n")
    unfinished = [t for t in trials if t.state not in (FINISHED, STOPPED_EARLY, FAILED)]
    if unfinished:
        out.write(f"{len(unfinished)} trial(s) did not finish; go on with: rltui sweep --resume {sweep_dir}\n")
    out.flush()
    return 0 if all(t.state in (FINISHED, STOPPED_EARLY) for t in trials) else 1
