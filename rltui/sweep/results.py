"""The results of a sweep, read from its trials' run logs: per setting, the mean and standard
deviation over seeds of the final and the best evaluation return, and how many trials were
stopped early or failed. Written as `<sweep dir>/results.md` (the table `rltui sweep` prints at the
end) and `results.json`.

A trial's evaluations are its run log's `eval` events. Where a trial was resumed (restarted by Tune
after a failure, or after `rltui sweep --resume`), what the lost session logged after the
checkpoint it resumed from is dropped, as the dashboard drops it. A trial's state: "finished"
(reached total_steps), "stopped early" (ended before, e.g. by ASHA), "failed", "incomplete"
(started, not ended: running, killed, or stopped because its sweep was interrupted) or "not started".

Standard deviations are sample standard deviations (n - 1); with one seed there is none.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rltui.events import ErrorRaised, EvalResult, Event, RunStarted, RunState, StateChanged, WarningRaised
from rltui.sweep.plan import INTERRUPTED_NOTE, STOPPED_EARLY_NOTE, SweepPlan, TrialPlan, write_text_atomic

RESULTS_MD = "results.md"
RESULTS_JSON = "results.json"
FINISHED, STOPPED_EARLY, FAILED, INCOMPLETE, NOT_STARTED = (
    "finished", "stopped early", "failed", "incomplete", "not started")


@dataclass
class TrialOutcome:
    """What one trial's run log says."""

    name: str
    seed: int
    setting: str
    state: str = NOT_STARTED
    step: int = 0
    total_steps: int = 0
    final_return: float | None = None
    final_step: int | None = None
    best_return: float | None = None
    best_step: int | None = None
    evaluations: int = 0
    sessions: int = 0  # 1 + the times it was resumed
    note: str = ""  # the error of a failed trial, or who stopped it early


def fold_trial(trial: TrialPlan, events: list[Event]) -> TrialOutcome:
    """A trial's outcome from its run log's events (see the module doc)."""
    outcome = TrialOutcome(trial.name, trial.seed, trial.setting_label)
    evals: list[tuple[int, float]] = []
    final_state: RunState | None = None
    for event in events:
        outcome.step = max(outcome.step, event.step)
        if isinstance(event, RunStarted):
            outcome.sessions += 1
            outcome.total_steps = event.total_steps
            final_state, outcome.note = None, ""  # (what ended an earlier session is over)
            if event.resumed:  # the earlier session's evaluations past its checkpoint are gone
                evals = [(step, value) for step, value in evals if step <= event.step]
                outcome.step = event.step
        elif isinstance(event, EvalResult) and event.episodes > 0:
            evals.append((event.step, event.return_mean))
        elif isinstance(event, StateChanged):
            final_state = event.state if event.state.is_final else None
        elif isinstance(event, ErrorRaised):
            outcome.note = event.message
        elif isinstance(event, WarningRaised) and event.message.startswith((STOPPED_EARLY_NOTE, INTERRUPTED_NOTE)):
            outcome.note = event.message
    if outcome.sessions:
        ended_early = STOPPED_EARLY if not outcome.note.startswith(INTERRUPTED_NOTE) else INCOMPLETE
        outcome.state = {RunState.FAILED: FAILED, None: INCOMPLETE}.get(
            final_state, FINISHED if outcome.step >= outcome.total_steps else ended_early)
    finite = [(step, value) for step, value in evals if math.isfinite(value)]
    outcome.evaluations = len(evals)
    if evals:
        outcome.final_step, final = evals[-1]
        outcome.final_return = final if math.isfinite(final) else None
    if finite:
        outcome.best_step, outcome.best_return = max(finite, key=lambda pair: (pair[1], -pair[0]))
    return outcome


@dataclass
class Summary:
    """mean and sample std over a setting's seeds (std None below two values)."""

    mean: float | None
    std: float | None

    @staticmethod
    def of(values: list[float]) -> Summary:
        values = [v for v in values if math.isfinite(v)]
        if not values:
            return Summary(None, None)
        return Summary(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None)

    def text(self) -> str:
        if self.mean is None:
            return "-"
        return f"{self.mean:.1f}" + (f" ± {self.std:.1f}" if self.std is not None else "")


@dataclass
class SettingResult:
    setting: str
    values: dict[str, Any]
    n: int  # trials with at least one evaluation
    final: Summary
    best: Summary
    trials: list[TrialOutcome] = field(default_factory=list)

    def count(self, state: str) -> int:
        return sum(t.state == state for t in self.trials)


def collect(plan: SweepPlan, sweep_dir: Path) -> list[SettingResult]:
    """Every setting of the plan with its trials' outcomes, the best mean final return first."""
    from rltui.runlog import LOG_NAME, read_events

    by_setting: dict[str, SettingResult] = {}
    for trial in plan.trials:
        events, _ = read_events(Path(sweep_dir) / trial.name / LOG_NAME)
        outcome = fold_trial(trial, events)
        label = trial.setting_label
        result = by_setting.setdefault(label, SettingResult(label, dict(trial.setting), 0, Summary(None, None),
                                                            Summary(None, None)))
        result.trials.append(outcome)
    for result in by_setting.values():
        evaluated = [t for t in result.trials if t.final_return is not None]
        result.n = len(evaluated)
        result.final = Summary.of([t.final_return for t in evaluated if t.final_return is not None])
        result.best = Summary.of([t.best_return for t in evaluated if t.best_return is not None])
    return sorted(by_setting.values(), key=lambda r: (r.final.mean is None, -(r.final.mean or 0.0)))


def table_lines(results: list[SettingResult]) -> list[str]:
    """The per-setting table (Markdown, readable as plain text)."""
    rows = [["setting", "n", "final return", "best return", "stopped early", "failed"]]
    for r in results:
        stopped, failed, seeds = r.count(STOPPED_EARLY), r.count(FAILED), len(r.trials)
        mark = " *" if stopped else ""
        rows.append([r.setting, f"{r.n}/{seeds}", r.final.text() + mark, r.best.text(),
                     f"{stopped} of {seeds}" if stopped else "", f"{failed} of {seeds}" if failed else ""])
    return _markdown(rows)


def trial_lines(results: list[SettingResult]) -> list[str]:
    rows = [["trial", "seed", "state", "step", "final return", "best return (step)", "note"]]
    for r in results:
        for t in r.trials:
            best = "-" if t.best_return is None else f"{t.best_return:.1f} ({t.best_step:,})"
            final = "-" if t.final_return is None else f"{t.final_return:.1f}"
            rows.append([t.name, str(t.seed), t.state, f"{t.step:,}/{t.total_steps:,}" if t.total_steps else "-",
                         final, best, t.note])
    return _markdown(rows)


def _markdown(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return lines


def report_text(plan: SweepPlan, results: list[SettingResult], *, with_trials: bool = True) -> str:
    trials = [t for r in results for t in r.trials]
    seeds = ", ".join(map(str, plan.options.seeds))
    lines = [
        f"# Sweep {plan.name}",
        "",
        f"{len(trials)} trials: {len(results)} setting(s) x seeds {seeds}; scheduler {plan.options.scheduler}. "
        "Returns: deterministic evaluation return (mean over its episodes); mean ± std over seeds of each "
        "trial's final and best evaluation.",
        "",
        *table_lines(results),
    ]
    if any(r.count(STOPPED_EARLY) for r in results):
        lines += ["", "\\* some of this setting's trials were stopped early: their final return is from the "
                      "step they reached."]
    if with_trials:
        lines += ["", "## Trials", "", *trial_lines(results)]
    return "\n".join(lines) + "\n"


def results_json(plan: SweepPlan, results: list[SettingResult]) -> dict[str, Any]:
    return {
        "sweep": plan.name,
        "metric": "deterministic evaluation return (mean over its episodes)",
        "std": "sample standard deviation over seeds (n - 1); null below two seeds",
        "settings": [
            {
                "setting": r.setting,
                "values": r.values,
                "n": r.n,
                "trials": len(r.trials),
                "final_return": asdict(r.final),
                "best_return": asdict(r.best),
                "stopped_early": r.count(STOPPED_EARLY),
                "failed": r.count(FAILED),
                "runs": [asdict(t) for t in r.trials],
            }
            for r in results
        ],
    }


def write_results(plan: SweepPlan, sweep_dir: Path) -> tuple[list[SettingResult], str]:
    """Collect, write results.md and results.json (atomically), and return the results and the text."""
    results = collect(plan, sweep_dir)
    text = report_text(plan, results)
    write_text_atomic(Path(sweep_dir) / RESULTS_MD, text)
    write_text_atomic(Path(sweep_dir) / RESULTS_JSON,
                      json.dumps(results_json(plan, results), indent=1, allow_nan=False) + "\n")
    return results, text
