"""What a sweep runs: its options, its trials, and the plan file that records both. No Ray here.

A sweep is a base preset (a preset name or file, with `--set` overrides) run as one trial per
(setting, seed): the settings are the cross product of the grid values, crossed with `samples`
draws of the random values when there are any. Every seed of a setting shares its values, so a
setting's seeds can be compared. The seed and the setting's values reach a trial's preset as
overrides, through the same machinery as `rltui train --set`, so the trial's preset.toml is
exactly what it ran.

Options come from a sweep file (a preset with a `[sweep]` table) and then from the command line,
which wins:

    [sweep]
    seeds = "0-4"                 # or [0, 1, 2]; --seeds 0-4
    samples = 8                   # draws of the [sweep.random] values; --samples 8
    sample_seed = 0               # seeds those draws (the plan is reproducible)
    scheduler = "asha"            # "fifo" (run every trial to the end) or "asha"; --scheduler
    metric = "eval_return_mean"   # or "train_return_mean"; maximised
    grace_steps = 20000           # ASHA: env steps before a trial can be stopped (default: [eval] interval)
    reduction_factor = 3          # ASHA: keep the best 1/reduction_factor at each rung
    cpus_per_trial = 1            # --cpus-per-trial
    gpus_per_trial = 0            # --gpus-per-trial (fractions share a GPU)
    max_concurrent = 4            # --max-concurrent (default: as many as the resources allow)
    max_failures = 3              # restarts of a failed trial from its last checkpoint

    [sweep.grid]                  # every combination; --grid section.key=v1,v2
    mpo.policy_lr = [1e-4, 3e-4]

    [sweep.random]                # drawn `samples` times
    mpo.kl_epsilon = { loguniform = [0.01, 0.3] }
    mpo.action_samples = { randint = [10, 40] }      # both ends included
    mpo.use_retrace = { choice = [true, false] }
    mpo.gamma = { uniform = [0.95, 0.995] }

Every problem is a `SweepError` (or a `PresetError` for a value the preset refuses) whose one
line names the file and key, or the flag, at fault.

The plan file `<sweep dir>/sweep-plan.json` holds the resolved base preset, the options and every
trial with its values: trials read their preset from it, and `rltui sweep --resume` and the results
table read the sweep from it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import random
import re
import sys
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import tomli_w

from rltui.presets import Override, Preset, PresetError, apply_overrides, parse_override, preset_from_toml_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PLAN_FILE = "sweep-plan.json"
PLAN_VERSION = 1
TUNE_DIR = "tune"  # Ray Tune's experiment directory inside the sweep directory
SCHEDULERS = ("fifo", "asha")
METRICS = ("eval_return_mean", "train_return_mean")
DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice")
MAX_SEED = 2**32 - 1
MAX_TRIALS = 10_000
MAX_NAME_CHARS = 96  # a trial directory name; longer settings are named by their index
SEED_KEY = "train.seed"
# How the warning a trial adds to its run log when Tune stopped it before total_steps begins.
STOPPED_EARLY_NOTE, INTERRUPTED_NOTE = "stopped early", "interrupted"
_NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]+")
_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9._=,+-]")
_OPTION_KEYS = {"seeds", "samples", "sample_seed", "scheduler", "metric", "grace_steps", "reduction_factor",
                "cpus_per_trial", "gpus_per_trial", "max_concurrent", "max_failures", "grid", "random"}


class SweepError(Exception):
    """Bad sweep input (a file, a table, a flag); str() is one line naming where."""


# ---------------------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Distribution:
    """A random value of a setting: `uniform`/`loguniform` over [low, high], `randint` over the
    integers low..high (both included), or `choice` among `values`."""

    kind: str
    values: tuple[Any, ...]

    def sample(self, rng: random.Random) -> Any:
        if self.kind == "uniform":
            return rng.uniform(self.values[0], self.values[1])
        if self.kind == "loguniform":
            return math.exp(rng.uniform(math.log(self.values[0]), math.log(self.values[1])))
        if self.kind == "randint":
            return rng.randint(self.values[0], self.values[1])
        return self.values[rng.randrange(len(self.values))]

    def to_json(self) -> dict[str, list[Any]]:
        return {self.kind: list(self.values)}


def parse_distribution(value: Any, origin: str) -> Distribution:
    """`{uniform = [low, high]}` and the like (see the module doc); SweepError naming `origin`."""
    expected = ("a table with one of " + ", ".join(DISTRIBUTIONS) + ", e.g. { loguniform = [1e-4, 1e-2] }")
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in DISTRIBUTIONS:
        raise SweepError(f"{origin}: expected {expected}, got {_show(value)}")
    kind, spec = next(iter(value.items()))
    if not isinstance(spec, list) or not spec:
        raise SweepError(f"{origin}: {kind} expects a non-empty array, got {_show(spec)}")
    if kind == "choice":
        return Distribution(kind, tuple(spec))
    number = int if kind == "randint" else (int, float)
    if len(spec) != 2 or not all(isinstance(v, number) and not isinstance(v, bool) for v in spec):
        what = "integers" if kind == "randint" else "numbers"
        raise SweepError(f"{origin}: {kind} expects [low, high], two {what}, got {_show(spec)}")
    low, high = spec
    if not (math.isfinite(low) and math.isfinite(high)) or not low < high:
        raise SweepError(f"{origin}: {kind} expects finite low < high, got {_show(spec)}")
    if kind == "loguniform" and low <= 0:
        raise SweepError(f"{origin}: loguniform expects 0 < low < high, got {_show(spec)}")
    return Distribution(kind, (low, high))


def parse_seeds(value: Any, origin: str) -> tuple[int, ...]:
    """`"0-4"`, `"0,2,7"`, `"0-2,10"` (text) or an array of integers -> distinct seeds in order."""
    seeds: list[int] = []
    if isinstance(value, list) and value:
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise SweepError(f"{origin}: expected an array of integers, got {_show(value)}")
        seeds = list(value)
    elif isinstance(value, str) and value.strip():
        for part in value.split(","):
            low, dash, high = part.strip().partition("-")
            try:
                first, last = int(low), int(high if dash else low)
            except ValueError:
                raise SweepError(f'{origin}: expected seeds such as "0-4" or "0,1,5", got {_show(value)}') from None
            if last < first:
                raise SweepError(f"{origin}: the range {part.strip()!r} is empty (its end is below its start)")
            if last - first >= MAX_TRIALS:
                raise SweepError(f"{origin}: more than {MAX_TRIALS} seeds")
            seeds.extend(range(first, last + 1))
    else:
        raise SweepError(f'{origin}: expected seeds such as "0-4", "0,1,5" or [0, 1], got {_show(value)}')
    bad = [s for s in seeds if not 0 <= s <= MAX_SEED]
    if bad:
        raise SweepError(f"{origin}: seeds must be in [0, {MAX_SEED}], got {bad[0]}")
    if len(set(seeds)) != len(seeds):
        raise SweepError(f"{origin}: seed {next(s for s in seeds if seeds.count(s) > 1)} is given twice")
    return tuple(seeds)


def parse_grid_flag(text: str) -> tuple[str, tuple[Any, ...], str]:
    """`--grid section.key=v1,v2,...` -> (key, values, label). Each value is read like a `--set`
    value (a TOML literal, or the text as written for a string key); commas inside [...], {...}
    or quotes do not split, so `--grid network.policy_layer_sizes=[64,64],[256,256]` works."""
    key, equals, values_text = text.partition("=")
    label = f"--grid {key.strip()}"
    if not equals or not key.strip() or not values_text.strip():
        raise SweepError(f"--grid: expected section.key=value1,value2,..., got {_show(text)}")
    values = []
    for item in _split_top_level(values_text):
        if not item.strip():
            raise SweepError(f"{label}: an empty value in {_show(values_text)}")
        try:
            override = parse_override(f"{key}={item}")
        except PresetError as exc:
            raise SweepError(f"{label}: {exc.problem}") from None
        values.append(override.value)
    path = key.strip()
    _check_key(path, label)
    return path, tuple(values), label


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets, braces and quotes."""
    items, depth, quote, start = [], 0, "", 0
    for i, char in enumerate(text):
        if quote:
            if char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return items


def _check_key(key: str, origin: str) -> None:
    parts = key.split(".")
    if len(parts) != 2 or not all(re.fullmatch(r"[A-Za-z0-9_-]+", p) for p in parts):
        raise SweepError(f"{origin}: expected a preset key as section.key (e.g. mpo.policy_lr), got {_show(key)}")
    if key == SEED_KEY:
        raise SweepError(f"{origin}: the seed is swept by --seeds ([sweep] seeds), not as a setting")


def _show(value: Any, limit: int = 60) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict, str)) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class SweepOptions:
    """Everything a sweep is asked to do beyond its base preset (see the module doc)."""

    seeds: tuple[int, ...] = (0,)
    grid: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    random: tuple[tuple[str, Distribution], ...] = ()
    samples: int = 1
    sample_seed: int = 0
    scheduler: str = "fifo"
    metric: str = "eval_return_mean"
    grace_steps: int | None = None
    reduction_factor: float = 3.0
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    max_failures: int = 3
    # Which file or flag set each option or setting key (for messages); not part of the plan.
    origins: Mapping[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class SweepFlags:
    """The command line's sweep options; None where not given."""

    seeds: str | None = None
    grid: Sequence[str] = ()
    samples: int | None = None
    scheduler: str | None = None
    cpus_per_trial: float | None = None
    gpus_per_trial: float | None = None
    max_concurrent: int | None = None


def options_from_table(table: Any, origin: str) -> SweepOptions:
    """The `[sweep]` table of a sweep file; `origin` is the file's display path."""
    if not isinstance(table, dict):
        raise SweepError(f"{origin}: sweep: expected a table [sweep], got {_show(table)}")
    unknown = sorted(set(table) - _OPTION_KEYS)
    if unknown:
        raise SweepError(f"{origin}: [sweep] {unknown[0]}: unknown key "
                         f"(expected one of {', '.join(sorted(_OPTION_KEYS))})")
    where = {key: f"{origin}: [sweep] {key}" for key in table}
    values: dict[str, Any] = {}
    if "seeds" in table:
        values["seeds"] = parse_seeds(table["seeds"], where["seeds"])
    for key, low in (("samples", 1), ("sample_seed", 0), ("grace_steps", 1), ("max_concurrent", 1),
                     ("max_failures", 0)):
        if key in table:
            values[key] = _integer(table[key], low, where[key])
    for key, floor, floor_open in (("cpus_per_trial", 0.0, True), ("gpus_per_trial", 0.0, False),
                                   ("reduction_factor", 1.0, True)):
        if key in table:
            values[key] = _number(table[key], floor, floor_open, where[key])
    for key, choices in (("scheduler", SCHEDULERS), ("metric", METRICS)):
        if key in table:
            if table[key] not in choices:
                raise SweepError(f"{where[key]}: expected one of {', '.join(map(repr, choices))}, "
                                 f"got {_show(table[key])}")
            values[key] = table[key]
    origins = {key: where[key] for key in values}
    if "grid" in table:
        grid = []
        for key, entry in _flatten(table["grid"], f"{origin}: [sweep.grid]"):
            label = f"{origin}: [sweep.grid] {key}"
            _check_key(key, label)
            if not isinstance(entry, list) or not entry:
                raise SweepError(f"{label}: expected a non-empty array of values, got {_show(entry)}")
            grid.append((key, tuple(entry)))
            origins[key] = f"{origin} [sweep.grid] {key}"
        values["grid"] = tuple(grid)
    if "random" in table:
        randoms = []
        for key, entry in _flatten(table["random"], f"{origin}: [sweep.random]"):
            label = f"{origin}: [sweep.random] {key}"
            _check_key(key, label)
            randoms.append((key, parse_distribution(entry, label)))
            origins[key] = f"{origin} [sweep.random] {key}"
        values["random"] = tuple(randoms)
    options = SweepOptions(**values, origins=origins)
    _check_keys_apart(options)
    return options


def _flatten(table: Any, origin: str) -> list[tuple[str, Any]]:
    """{"mpo": {"policy_lr": [...]}} (what `mpo.policy_lr = [...]` parses to) -> [("mpo.policy_lr", [...])]."""
    if not isinstance(table, dict):
        raise SweepError(f"{origin}: expected a table of section.key = ..., got {_show(table)}")
    flat: list[tuple[str, Any]] = []
    for section, keys in table.items():
        if not isinstance(keys, dict) or any(k in DISTRIBUTIONS for k in keys):
            raise SweepError(f"{origin}: expected keys as section.key (e.g. mpo.policy_lr = ...), got {_show(section)}")
        flat.extend((f"{section}.{key}", value) for key, value in keys.items())
    return flat


def _integer(value: Any, low: int, origin: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise SweepError(f"{origin}: expected an integer >= {low}, got {_show(value)}")
    return value


def _number(value: Any, low: float, low_open: bool, origin: str) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < low or (low_open and value == low):
        raise SweepError(f"{origin}: expected a number {'>' if low_open else '>='} {low:g}, got {_show(value)}")
    return float(value)


def apply_flags(options: SweepOptions, flags: SweepFlags) -> SweepOptions:
    """The command line over the file's options: a flag replaces the option, a `--grid` key
    replaces that key's values (from the file's grid or random table)."""
    values: dict[str, Any] = {}
    origins = dict(options.origins)
    if flags.seeds is not None:
        values["seeds"] = parse_seeds(flags.seeds, "--seeds")
        origins["seeds"] = "--seeds"
    for name in ("samples", "scheduler", "cpus_per_trial", "gpus_per_trial", "max_concurrent"):
        value = getattr(flags, name)
        if value is not None:
            values[name] = value
            origins[name] = "--" + name.replace("_", "-")
    if flags.grid:
        grid = dict(options.grid)
        randoms = dict(options.random)
        for text in flags.grid:
            key, grid_values, label = parse_grid_flag(text)
            randoms.pop(key, None)
            grid[key] = grid_values
            origins[key] = label
        values["grid"] = tuple(grid.items())
        values["random"] = tuple(randoms.items())
    updated = dataclasses.replace(options, **values, origins=origins)
    _check_keys_apart(updated)
    return updated


def _check_keys_apart(options: SweepOptions) -> None:
    both = sorted(set(dict(options.grid)) & set(dict(options.random)))
    if both:
        raise SweepError(f"{options.origins.get(both[0], both[0])}: {both[0]} is both in the grid and random")


# ---------------------------------------------------------------------------------------- trials


@dataclass(frozen=True)
class TrialPlan:
    """One trial: a setting (its values by preset key) and a seed. `name` is its run directory."""

    name: str
    setting: tuple[tuple[str, Any], ...]
    seed: int
    sample: int | None = None  # which draw of the random values, when there are any

    @property
    def setting_label(self) -> str:
        return setting_label(self.setting, self.sample)

    def overrides(self, origins: Mapping[str, str] | None = None) -> list[Override]:
        """The setting's values and the seed as preset overrides, labelled for messages."""
        origins = origins or {}
        values = [Override(origins.get(key, f"sweep {key}"), tuple(key.split(".")), value)
                  for key, value in self.setting]
        return [*values, Override(origins.get("seeds", "sweep seed"), ("train", "seed"), self.seed)]


def setting_label(setting: Sequence[tuple[str, Any]], sample: int | None = None) -> str:
    """"mpo.policy_lr=0.0003, mpo.kl_epsilon=0.1" (the base preset's values: "preset")."""
    parts = [f"{key}={_value_text(value)}" for key, value in setting]
    if sample is not None:
        parts.insert(0, f"sample {sample}")
    return ", ".join(parts) or "preset"


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ",".join(_value_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _short_keys(keys: Iterable[str]) -> dict[str, str]:
    """The key part alone ("policy_lr") where no two swept keys share it, else the full key."""
    keys = list(keys)
    tails = [k.split(".")[-1] for k in keys]
    return {key: tail if tails.count(tail) == 1 else key for key, tail in zip(keys, tails, strict=True)}


def _trial_name(setting: Sequence[tuple[str, Any]], sample: int | None, seed: int, index: int,
                short: Mapping[str, str]) -> str:
    parts = [f"{short[key]}={_value_text(value)}" for key, value in setting]
    if sample is not None:
        parts.insert(0, f"sample={sample}")
    name = _UNSAFE_IN_NAME.sub("-", ",".join([*parts, f"seed={seed}"]))
    return name if len(name) <= MAX_NAME_CHARS else f"setting={index},seed={seed}"


def expand_trials(options: SweepOptions) -> list[TrialPlan]:
    """Every (setting, seed): the grid's cross product (in the order given), each with `samples`
    draws of the random values when there are any; the seeds innermost."""
    grid_keys = [key for key, _ in options.grid]
    grid_points = list(itertools.product(*(values for _, values in options.grid)))
    rng = random.Random(options.sample_seed)
    draws: list[tuple[int | None, tuple[tuple[str, Any], ...]]] = [(None, ())]
    if options.random:
        draws = [(i, tuple((key, dist.sample(rng)) for key, dist in options.random)) for i in range(options.samples)]
    count = len(grid_points) * len(draws) * len(options.seeds)
    if count > MAX_TRIALS:
        raise SweepError(f"{count} trials (settings x seeds); at most {MAX_TRIALS}")
    short = _short_keys([*grid_keys, *(key for key, _ in options.random)])
    trials, names = [], set()
    for index, ((sample, drawn), point) in enumerate(itertools.product(draws, grid_points)):
        setting = (*zip(grid_keys, point, strict=True), *drawn)
        for seed in options.seeds:
            name = _trial_name(setting, sample, seed, index, short)
            if name in names:  # values that read the same (e.g. 1e-4 and 1.00001e-4)
                name = f"setting={index},seed={seed}"
            names.add(name)
            trials.append(TrialPlan(name, setting, seed, sample))
    return trials


# ---------------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class SweepPlan:
    """A sweep as run: its name, the resolved base preset (TOML), the options and the trials."""

    name: str
    preset_toml: str
    options: SweepOptions
    trials: tuple[TrialPlan, ...]
    created: str = ""

    def trial(self, name: str) -> TrialPlan:
        for trial in self.trials:
            if trial.name == name:
                return trial
        raise SweepError(f"no trial named {name!r} in the sweep {self.name}")

    def base_preset(self, source: str = PLAN_FILE) -> Preset:
        return preset_from_toml_text(self.preset_toml, source)

    def trial_preset(self, trial: TrialPlan, base: Preset | None = None) -> Preset:
        """The trial's preset: the base preset with its setting and seed applied as overrides."""
        return apply_overrides(base or self.base_preset(), trial.overrides(self.options.origins))

    def to_json(self) -> dict[str, Any]:
        options = self.options
        return {
            "version": PLAN_VERSION,
            "name": self.name,
            "created": self.created,
            "preset_toml": self.preset_toml,
            "options": {
                "seeds": list(options.seeds),
                "grid": {key: list(values) for key, values in options.grid},
                "random": {key: dist.to_json() for key, dist in options.random},
                **{name: getattr(options, name) for name in (
                    "samples", "sample_seed", "scheduler", "metric", "grace_steps", "reduction_factor",
                    "cpus_per_trial", "gpus_per_trial", "max_concurrent", "max_failures")},
            },
            "trials": [
                {"name": t.name, "seed": t.seed, "sample": t.sample, "setting": dict(t.setting)} for t in self.trials
            ],
        }


def new_sweep_name(preset: Preset, now: datetime | None = None) -> str:
    return f"{preset.name}-sweep-{(now or datetime.now()):%Y%m%d-%H%M%S}"


def check_sweep_name(name: str) -> str:
    if not _NAME_PATTERN.fullmatch(name) or name in (".", ".."):
        raise SweepError(f"--name: expected a name of letters, digits, '.', '_' and '-', got {_show(name)}")
    return name


def write_plan(sweep_dir: Path, plan: SweepPlan) -> None:
    write_text_atomic(sweep_dir / PLAN_FILE, json.dumps(plan.to_json(), indent=1, allow_nan=False) + "\n")


def read_plan(sweep_dir: Path) -> SweepPlan:
    """The plan of a sweep directory; SweepError naming the file when it is missing or damaged."""
    path = Path(sweep_dir) / PLAN_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SweepError(f"{sweep_dir}: no {PLAN_FILE} (expected a sweep directory made by `rltui sweep`)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SweepError(f"{path}: cannot be read ({' '.join(str(exc).split())[:100]})") from None
    try:
        if data["version"] != PLAN_VERSION:
            raise ValueError(f"version {data['version']!r}, this rltui reads version {PLAN_VERSION}")
        raw = data["options"]
        options = SweepOptions(
            seeds=tuple(raw["seeds"]),
            grid=tuple((k, tuple(v)) for k, v in raw["grid"].items()),
            random=tuple((k, parse_distribution(v, k)) for k, v in raw["random"].items()),
            **{name: raw[name] for name in (
                "samples", "sample_seed", "scheduler", "metric", "grace_steps", "reduction_factor",
                "cpus_per_trial", "gpus_per_trial", "max_concurrent", "max_failures")},
        )
        trials = tuple(TrialPlan(str(t["name"]), tuple(t["setting"].items()), int(t["seed"]), t["sample"])
                       for t in data["trials"])
        plan = SweepPlan(str(data["name"]), str(data["preset_toml"]), options, trials, str(data.get("created", "")))
    except (KeyError, TypeError, ValueError, AttributeError, SweepError) as exc:
        raise SweepError(f"{path}: not a sweep plan this rltui can read ({' '.join(str(exc).split())[:100]})") from None
    return plan


def sweep_record(plan: SweepPlan, trial: TrialPlan) -> dict[str, Any]:
    """What a trial's run records about its sweep (its run metadata's `sweep` field): the sweep's
    name, the trial, its setting (a label, the same for every seed of it) and its config (the
    values the trial applied to the base preset, the seed included)."""
    return {
        "name": plan.name,
        "trial": trial.name,
        "setting": trial.setting_label,
        "seed": trial.seed,
        "config": {**dict(trial.setting), SEED_KEY: trial.seed},
    }


def write_text_atomic(path: Path, text: str) -> None:
    """Write under a temporary name in the same folder, then rename over `path`."""
    path = Path(path)
    temp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(temp, "x", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def read_sweep_file(path: Path) -> tuple[Any, str] | None:
    """A preset file's TOML without its `[sweep]` table, and that table; None when the file has
    no `[sweep]` table (then it is an ordinary preset) or is not TOML (the preset loader says why)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, ValueError, RecursionError):
        return None
    if "sweep" not in data:
        return None
    table = data.pop("sweep")
    return table, tomli_w.dumps(data)


# ---------------------------------------------------------------------------------------- a new sweep


def build_plan(preset_arg: str, set_overrides: Sequence[str], flags: SweepFlags, name: str | None, *,
               check_device: bool, now: datetime | None = None) -> SweepPlan:
    """The plan of a new sweep from `rltui sweep PRESET ...`: the base preset (a name, a preset file
    or a sweep file, with `--set`), the options (the file's `[sweep]` table, then the flags), and
    every trial, each trial's preset validated (its environment made once per distinct [env]; with
    `check_device`, its device checked to exist here). Raises SweepError or PresetError."""
    from rltui.envs import EnvSpec
    from rltui.presets import check_environment, check_memory, load_preset, preset_device, preset_to_toml

    path = Path(preset_arg)
    found = read_sweep_file(path) if path.is_file() else None
    if found is not None:
        table, preset_text = found
        options = options_from_table(table, preset_arg)
        base = apply_overrides(preset_from_toml_text(preset_text, preset_arg), set_overrides)
    else:
        options = SweepOptions()
        base = load_preset(preset_arg, set_overrides, check_env=False)
    options = apply_flags(options, flags)
    if options.samples > 1 and not options.random:
        raise SweepError(f"{options.origins.get('samples', '--samples')}: {options.samples} samples need random "
                         "settings to draw ([sweep.random] in a sweep file); seeds are set with --seeds")
    trials = expand_trials(options)
    checked_envs: list[tuple[Any, EnvSpec]] = []  # each distinct [env] is made once
    for trial in {t.setting: t for t in trials}.values():  # one seed of each setting (seeds are checked above)
        preset = apply_overrides(base, trial.overrides(options.origins))
        if preset.eval.interval <= 0:
            raise SweepError(f"{preset.origin_of('eval', 'interval')}: [eval] interval: a sweep reports evaluations "
                             f"to Ray Tune; expected an interval > 0, got {preset.eval.interval}")
        spec = next((spec for env, spec in checked_envs if env == preset.env), None)
        if spec is None:
            checked_envs.append((preset.env, check_environment(preset)))
        else:
            check_memory(preset, spec)  # the setting may size the replay or the rollout
        if preset.train.device.startswith("cuda") and options.gpus_per_trial == 0:
            raise SweepError(f"{preset.origin_of('train', 'device')}: [train] device: {preset.train.device!r} "
                             "needs --gpus-per-trial > 0 (a trial uses only the GPUs Ray gives it)")
        if check_device:
            preset_device(preset)
    name = check_sweep_name(name) if name is not None else new_sweep_name(base, now)
    created = (now or datetime.now()).isoformat(timespec="seconds")
    return SweepPlan(name, preset_to_toml(base), options, tuple(trials), created)
