"""`rltui report`: a Markdown table and a plot of runs' evaluation returns, seeds grouped.

    DIR/report.md          per run: group, seed, state, step, final and best evaluation return (with
                           their steps); per group: n, and the mean ± sample standard deviation (n - 1)
                           over its runs of the final and of the best evaluation return
    DIR/eval_returns.png   evaluation return against env steps, one panel per environment, one colour
                           per group: the mean over the group's runs (curves interpolated onto their
                           common steps) and a band from their minimum to their maximum

The runs and their groups are `rltui.summaries`' (a group: runs that differ only by their seed).
"Final" is a run's last evaluation, "best" its highest. Needs matplotlib (`pip install
'rltui[report]'`), drawn with its Agg backend (no display needed). Both files are written under a
temporary name and renamed.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

from rltui.summaries import LIVE, RunSummary, by_group, mean_std, seed_band

REPORT_NAME = "report.md"
PLOT_NAME = "eval_returns.png"
INSTALL_HINT = "pip install 'rltui[report]'"


def _number(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.2f}"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return " ".join(text.split()).replace("\\", "\\\\").replace("|", "\\|") or "-"


def _eval_at(summary: RunSummary, best: bool) -> str:
    """'-1234.56 (step 20,000)' for the last (or best) evaluation, '-' without one."""
    curve = summary.eval_curve
    points = [(r, s) for s, r in zip(curve.steps, curve.returns, strict=True) if math.isfinite(r)]
    if not points:
        return "-"
    if best:
        value, step = max(points, key=lambda p: p[0])
    elif summary.last_eval is None:
        return "-"
    else:
        value, step = summary.last_eval, curve.steps[-1]
    return f"{_number(value)} (step {step:,})"


def _mean_std(values: Sequence[float]) -> str:
    if not values:
        return "-"
    mean, std = mean_std(values)
    return _number(mean) if std is None else f"{_number(mean)} ± {_number(std)}"


def group_numbers(summaries: Sequence[RunSummary]) -> dict[str, int]:
    """Each group's number (1, 2, ...: in order of first appearance), as the table and the plot show it."""
    return {group: number for number, group in enumerate(by_group(summaries), start=1)}


def markdown(summaries: Sequence[RunSummary], sources: Sequence[str]) -> str:
    """The text of report.md."""
    state = {s.run_dir: f"{LIVE} ({s.live_state})" if s.state == LIVE and s.live_state else s.state
             for s in summaries}
    numbers = group_numbers(summaries)
    lines = [
        "# rltui report", "",
        f"{len(summaries)} run{'s' * (len(summaries) != 1)} from {', '.join(f'`{p}`' for p in sources)}, "
        f"{time.strftime('%Y-%m-%d %H:%M:%S')}. Returns are those of the deterministic evaluations; "
        "\"final\" is a run's last evaluation, \"best\" its highest. Groups (#) are listed below.", "",
        "## Runs", "",
        "| run | group | seed | state | step | final eval | best eval |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for s in summaries:
        lines.append(f"| {_cell(str(s.run_dir))} | #{numbers[s.group]} | {'-' if s.seed is None else s.seed} | "
                     f"{_cell(state[s.run_dir])} | {s.step:,} / {s.total_steps:,} | {_eval_at(s, best=False)} | "
                     f"{_eval_at(s, best=True)} |")
    lines += [
        "", "## Groups", "",
        "Mean ± sample standard deviation (n - 1) over the runs of each group that have an evaluation "
        "(n of them); the seeds are listed.", "",
        "| # | group | env | n | final eval | best eval | seeds |",
        "|---:|---|---|---:|---:|---:|---|",
    ]
    for group, runs in by_group(summaries).items():
        finals = [s.last_eval for s in runs if s.last_eval is not None]
        bests = [s.best_eval for s in runs if s.best_eval is not None]
        seeds = ", ".join("-" if s.seed is None else str(s.seed) for s in runs)
        envs = ", ".join(sorted({s.env_id or "-" for s in runs}))
        lines.append(f"| {numbers[group]} | {_cell(group)} | {_cell(envs)} | {len(finals)} | {_mean_std(finals)} | "
                     f"{_mean_std(bests)} | {seeds} |")
    lines += ["", f"![Evaluation return against env steps]({PLOT_NAME})", ""]
    return "\n".join(lines)


LEGEND_LABEL_CHARS = 60
LEGEND_ENTRIES = 20  # per panel; the others are counted in one more line


def _legend_label(number: int, group: str, runs: int) -> str:
    label = f"#{number} {group}"
    if len(label) > LEGEND_LABEL_CHARS:
        label = label[: LEGEND_LABEL_CHARS - 1] + "…"
    return f"{label} (n={runs})"


def plot(summaries: Sequence[RunSummary], path: Path) -> None:
    """eval_returns.png: one panel per environment, a mean line and a min-max band per group,
    each group labelled with its number in report.md."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    envs = sorted({s.env_id for s in summaries if len(s.eval_curve)}) or [""]  # (panels with evaluations)
    columns = min(len(envs), 3)
    rows = math.ceil(len(envs) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(9.5 * columns, 4.4 * rows), squeeze=False,
                                layout="constrained")
    groups = by_group(summaries)
    numbers = group_numbers(summaries)
    colours = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20").colors  # type: ignore[attr-defined]
    for index, env in enumerate(envs):
        ax = axes[index // columns][index % columns]
        for group, runs in groups.items():
            band = seed_band([s.eval_curve for s in runs if s.env_id == env])
            if not band.steps:
                continue
            colour = colours[(numbers[group] - 1) % len(colours)]
            ax.plot(band.steps, band.mean, color=colour, linewidth=1.5,
                    label=_legend_label(numbers[group], group, band.runs))
            if band.runs > 1:
                ax.fill_between(band.steps, band.low, band.high, color=colour, alpha=0.2, linewidth=0)
        ax.set_title(env or "runs")
        ax.set_xlabel("env steps")
        ax.set_ylabel("evaluation return")
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        if not handles:
            ax.text(0.5, 0.5, "no evaluations", ha="center", va="center", transform=ax.transAxes)
            continue
        if len(handles) > LEGEND_ENTRIES:
            more = len(handles) - LEGEND_ENTRIES + 1
            handles = handles[: LEGEND_ENTRIES - 1] + [plt.Line2D([], [], linestyle="none")]
            labels = labels[: LEGEND_ENTRIES - 1] + [f"... {more} more groups (see report.md)"]
        ax.legend(handles, labels, fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  borderaxespad=0.0, frameon=False)
    for index in range(len(envs), rows * columns):
        axes[index // columns][index % columns].set_visible(False)
    figure.suptitle("Evaluation return: mean over each group's runs, band from their min to their max")
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        figure.savefig(temp, format="png", dpi=100)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
        plt.close(figure)


def write_report(summaries: Sequence[RunSummary], out_dir: Path, sources: Sequence[str]) -> tuple[Path, Path]:
    """report.md and eval_returns.png in `out_dir` (created if missing); returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report, picture = out_dir / REPORT_NAME, out_dir / PLOT_NAME
    plot(summaries, picture)
    temp = report.with_name(f".{report.name}.{os.getpid()}.tmp")
    try:
        temp.write_text(markdown(summaries, sources), encoding="utf-8")
        os.replace(temp, report)
    finally:
        temp.unlink(missing_ok=True)
    return report, picture
