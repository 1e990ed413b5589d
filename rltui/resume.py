"""What a resume may change, and what it must refuse before anything in the run directory changes.

A resumed run is the same run continued: `rltui resume RUN --set ...` applies every override that
can take effect on the restored state (learning rates reach the restored optimisers; step counts,
intervals, batch sizes, discounts, KL bounds and the like apply from the next step) and refuses,
with one line naming the key, the ones that cannot. Which those are is declared with each setting
(`on_resume` in rltui.presets, shown in the presets README):

- what the saved networks, optimisers and environments are made of: algo, `[env] id`, `num_envs`,
  `normalize_obs` (the networks learnt on normalised or raw observations), the layer sizes, the
  optimiser type, whether MPO's action penalty (and so its dual) exists;
- the run's seed (its evaluation episodes are the same at every step, so results compare);
- settings that only choose starting values, which the checkpoint has long replaced: MPO's
  `temperature_init`, `init_log_alpha_mean`, `init_log_alpha_stddev` and `lambda_init`.

A run at or past its `total_steps` is finished: resuming it without raising `total_steps` is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rltui.presets import Preset, settings_held_on_resume


class ResumeError(Exception):
    """A resume that cannot do what it was asked; str() is a one-line message."""


def check_resume(saved: Preset, wanted: Preset, run_dir: Path, step: int) -> None:
    """Raise ResumeError when `wanted` (the run's preset with this resume's overrides) cannot
    continue a checkpoint made with `saved` at env step `step`."""
    for where, rule, read in settings_held_on_resume(saved.algo):
        before, after = read(saved), read(wanted)
        if before == after:
            continue
        if rule == "fixed":
            raise ResumeError(
                f"{run_dir}: {where} cannot change when resuming (the run has {_show(before)}, asked for "
                f"{_show(after)}); start a new run with `rltui train` instead"
            )
        raise ResumeError(
            f"{run_dir}: {where} only sets a starting value, and the run continues from its checkpoint's "
            f"values (the run has {_show(before)}, asked for {_show(after)})"
        )
    if saved.algo == "mpo":
        before, after = saved.agent["epsilon_penalty"] > 0, wanted.agent["epsilon_penalty"] > 0
        if before != after:
            raise ResumeError(
                f"{run_dir}: [mpo] epsilon_penalty cannot switch the action penalty {'off' if before else 'on'} "
                f"when resuming (it is {'on' if before else 'off'} in the run, and its dual is part of the "
                "checkpoint)"
            )
    total = wanted.train.total_steps
    if step >= total:
        raise ResumeError(
            f"{run_dir}: the run is finished ({step:,} of {total:,} steps); to train on, raise the total, "
            f"e.g. --set train.total_steps={max(2 * total, step + total)}"
        )


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return repr(value)
