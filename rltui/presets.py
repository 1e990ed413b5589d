"""Training presets: TOML files validated strictly into frozen dataclasses.

Every setting is declared once, as a field of the dataclass of its table: the field's type
annotation is the setting's type, its default the default, and `setting(...)` adds its range and a
one-line doc. `EnvConfig` is `[env]`, `TrainConfig` `[train]`, `NetworkConfig` `[network]`,
`MPOConfig` / `TRPOConfig` the agent tables `[mpo]` / `[trpo]` (the agents' keyword arguments with
their defaults), `EvalConfig` `[eval]`, `CheckpointConfig` `[checkpoint]`; the top-level keys are
fields of `Preset`. Validation, the TOML written to run directories and the schema tables in
presets/README.md (`python -m rltui.presets --update-readme`) are all made from these declarations.

Every problem with a preset becomes a `PresetError` whose text is one line naming where the bad
value came from (a file, a `--set` override or a flag such as `--device`), the `[section] key`,
what was expected and what was got. Values are bounded above as well as below, so an absurd number
(`10**20` layers, threads, samples...) is refused here rather than deep inside torch or numpy.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import inspect
import itertools
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_type_hints

import tomli_w

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

import rltui

if TYPE_CHECKING:
    from rltui.envs import EnvSpec

ALGOS = ("mpo", "trpo")
# The preset each algorithm starts from (Pendulum-v1 ships with gymnasium, no extra needed).
DEFAULT_PRESETS = {"mpo": "pendulum-mpo", "trpo": "pendulum-trpo"}

# Limits on the shape of preset files; no real preset comes near them.
MAX_EXTENDS_DEPTH = 32  # a file, its base, the base's base, ...
MAX_NESTING = 32  # tables and arrays inside one another, counted from the top of a preset
MAX_HIDDEN_LAYERS = 64  # per network
MAX_LAYER_SIZE = 65_536
MAX_HIDDEN_WEIGHTS = 100_000_000  # per network, between hidden layers (400 MB of float32)

_SHOWN_CHARS = 60  # values and keys longer than this are cut short in messages


class PresetError(Exception):
    """A bad preset or override. `str()` is one line: `origin: [section] key: problem`."""

    def __init__(self, origin: str, where: str, problem: str) -> None:
        self.origin = origin
        self.where = where
        self.problem = " ".join(problem.split("\n"))
        super().__init__(": ".join(part for part in (origin, where, self.problem) if part))


# --------------------------------------------------------------------------------------------
# How a setting is declared


@dataclass(frozen=True)
class Setting:
    """The range and doc of one key; its type and default are those of the dataclass field."""

    doc: str
    low: float | None = None
    low_open: bool = False
    high: float | None = None  # a limit of the value's domain (what an RNG takes): always stated
    high_open: bool = False
    cap: float | None = None  # a limit against absurd values, far above any real run
    choices: tuple[str, ...] = ()
    pattern: re.Pattern[str] | None = None
    expect: str = ""  # what a valid value looks like, where bounds and choices do not say it
    algo: str | None = None  # the key only applies to this algo
    at_least: str | None = None  # another key of the same table this value may not be below
    defaults_by_algo: Mapping[str, Any] = field(default_factory=dict)  # where the default depends on algo
    default_doc: str = ""  # the default in words, where it is not a plain value
    range_doc: str = ""  # more about the range, for the README
    has_effect: bool = True  # False: accepted (the agent's signature has it) but ignored
    # What `rltui resume --set` may do with it: "applies" (from the next step on), "fixed" (what the
    # checkpoint is made of: networks, optimisers, environments, the seed) or "starts" (only a
    # starting value, which the checkpoint has replaced). See rltui.resume.
    on_resume: Literal["applies", "fixed", "starts"] = "applies"


def setting(default: Any = MISSING, doc: str = "", *, factory: Callable[[], Any] | None = None,
            **rules: Any) -> Any:
    """A dataclass field declaring a preset setting: `default` (or `factory`; neither = required),
    a one-line `doc` and the `Setting` rules (low, cap, choices, ...)."""
    metadata = {"setting": Setting(doc, **rules)}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    if default is MISSING:
        return field(metadata=metadata)
    return field(default=default, metadata=metadata)


_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:[0-9]+)?")
_DEVICE_EXPECT = '"auto", "cpu", "cuda" or "cuda:N"'
_SMALL_NETWORKS = {"trpo": (64, 64)}


def _optimizer_type(doc: str) -> Any:
    return setting("adam", doc, choices=("adam", "sgd"), on_resume="fixed")


def _sgd_momentum() -> Any:
    return setting(0.9, 'momentum when `optimizer_type = "sgd"`', low=0, high=1, high_open=True)


# --------------------------------------------------------------------------------------------
# The settings, one table per dataclass


@dataclass(frozen=True)
class EnvConfig:
    """The environment: `gymnasium.make(id, **kwargs)`, `num_envs` copies for training."""

    id: str = setting(doc="passed to `gymnasium.make`", expect='a Gymnasium environment id such as "Pendulum-v1"',
                      range_doc="a registered Gymnasium id with a `Box` action space", on_resume="fixed")
    kwargs: Mapping[str, Any] = setting(factory=dict, doc="keyword arguments for `gymnasium.make(id, **kwargs)`",
                                     expect="a table of gymnasium.make keyword arguments",
                                     range_doc="strings, numbers, booleans, arrays, tables")
    num_envs: int = setting(1, "training environments, stepped in turn", low=1, cap=1_024, on_resume="fixed")
    normalize_obs: bool = setting(False, "running mean/variance observation normalisation (frozen for "
                                         "evaluation, saved in checkpoints)", on_resume="fixed")
    normalize_reward: bool = setting(False, "scale rewards by the running std of the discounted return", algo="trpo")
    clip_obs: float = setting(10.0, "clip normalised observations to [-clip_obs, clip_obs]", low=0, low_open=True)


@dataclass(frozen=True)
class TrainConfig:
    """The training loop. Steps count environment transitions summed over all `num_envs`
    environments."""

    total_steps: int = setting(100_000, "environment steps to train for", low=1, cap=10**12)
    seed: int = setting(0, "seeds the RNGs and training environments (evaluation environments get "
                           "disjoint seeds)", low=0, high=2**32 - 1, on_resume="fixed")
    device: str = setting("auto", '`"auto"` = CUDA when available, else CPU', pattern=_DEVICE_PATTERN,
                          expect=_DEVICE_EXPECT)
    threads: int = setting(1, "torch threads for this trainer", low=1, cap=1_024)
    replay_size: int = setting(1_000_000, "replay capacity in transitions (preallocated)", low=1, cap=10**9,
                               at_least="update_after", range_doc="fits in this machine's memory", algo="mpo")
    update_after: int = setting(1_000, "transitions stored before the first update", low=1, cap=10**9,
                                at_least="batch_size", algo="mpo")
    batch_size: int = setting(256, "transitions (or Retrace sequences) per update", low=1, cap=1_048_576,
                              algo="mpo")
    updates_per_step: float = setting(1.0, "updates per environment step: 1 = one per step, 0.25 = one per "
                                           "4 steps, 2 = two per step", low=0, low_open=True, cap=1_000,
                                      algo="mpo")
    rollout_steps: int = setting(1_024, "steps per environment per rollout (a batch is "
                                        "`rollout_steps * num_envs`)", low=1, cap=1_048_576,
                                 range_doc="with its update, fits in this machine's memory", algo="trpo")


@dataclass(frozen=True)
class NetworkConfig:
    """Hidden layers of the agent's networks."""

    policy_layer_sizes: tuple[int, ...] = setting((256, 256), "hidden layers of the policy", low=1,
                                                  cap=MAX_LAYER_SIZE, defaults_by_algo=_SMALL_NETWORKS,
                                                  on_resume="fixed")
    critic_layer_sizes: tuple[int, ...] = setting((256, 256), "hidden layers of the Q network (mpo) or value "
                                                              "network (trpo)", low=1, cap=MAX_LAYER_SIZE,
                                                  defaults_by_algo=_SMALL_NETWORKS, on_resume="fixed")


@dataclass(frozen=True)
class MPOConfig:
    """Keyword arguments of `agents.mpo.MPOAgent`, with its defaults; only with `algo = "mpo"`.
    The resolved preset lists all of them."""

    gamma: float = setting(0.99, "discount", low=0, low_open=True, high=1)
    target_networks_update_period: int = setting(100, "updates between hard copies to the target networks", low=1)
    policy_lr: float = setting(3e-4, "policy learning rate", low=0, low_open=True)
    q_lr: float = setting(3e-4, "critic learning rate", low=0, low_open=True)
    kl_epsilon: float = setting(0.1, "E-step KL bound (temperature dual)", low=0, low_open=True)
    mstep_kl_epsilon: float = setting(0.1, "M-step KL bound, per action dimension, for the mean and the std",
                                      low=0, low_open=True)
    temperature_init: float = setting(1.0, "initial temperature eta", low=0, low_open=True, on_resume="starts")
    temperature_lr: float = setting(3e-4, "learning rate of the temperature dual(s)", low=0, low_open=True)
    lambda_init: float = setting(1.0, "unused (kept for the seed API; the agent warns when it is not 1.0); "
                                      "see `init_log_alpha_mean`", low=0, low_open=True, has_effect=False,
                                      on_resume="starts")
    lambda_lr: float = setting(3e-4, "learning rate of the M-step duals alpha_mean / alpha_std", low=0,
                               low_open=True)
    epsilon_penalty: float = setting(0.001, "action-penalisation KL bound; 0 turns penalisation off", low=0)
    max_grad_norm: float = setting(1.0, "gradient-norm clip", low=0, low_open=True)
    action_samples: int = setting(20, "actions sampled per state for the E-step and the bootstrap", low=1,
                                  cap=4_096)
    use_retrace: bool = setting(False, "Retrace critic targets over sequences instead of 1-step targets")
    retrace_steps: int = setting(2, "Retrace sequence length", low=1, cap=1_024)
    retrace_mc_actions: int = setting(8, "samples estimating V(s') in Retrace", low=1, cap=4_096)
    retrace_lambda: float = setting(0.95, "Retrace trace decay", low=0, high=1)
    optimizer_type: str = _optimizer_type("optimiser")
    sgd_momentum: float = _sgd_momentum()
    init_log_alpha_mean: float = setting(10.0, "initial raw (pre-softplus) alpha_mean dual", on_resume="starts")
    init_log_alpha_stddev: float = setting(1000.0, "initial raw (pre-softplus) alpha_std dual", on_resume="starts")
    m_steps: int = setting(1, "policy steps per update", low=1, cap=1_000)


@dataclass(frozen=True)
class TRPOConfig:
    """Keyword arguments of `agents.trpo.TRPOAgent`, with its defaults; only with `algo = "trpo"`.
    The resolved preset lists all of them."""

    gamma: float = setting(0.99, "discount", low=0, low_open=True, high=1)
    gae_lambda: float = setting(0.95, "GAE lambda", low=0, high=1)
    target_kl: float = setting(0.01, "KL bound of the policy step", low=0, low_open=True)
    cg_iters: int = setting(10, "conjugate-gradient iterations", low=1, cap=1_000)
    cg_damping: float = setting(0.1, "Fisher damping", low=0)
    backtrack_coeff: float = setting(0.8, "line-search shrink factor", low=0, low_open=True, high=1, high_open=True)
    backtrack_iters: int = setting(10, "line-search steps", low=1, cap=1_000)
    value_lr: float = setting(3e-4, "value-network learning rate", low=0, low_open=True)
    value_epochs: int = setting(10, "value-regression epochs per update", low=1, cap=1_000)
    value_minibatch_size: int = setting(256, "value-regression minibatch", low=1, cap=1_048_576)
    max_grad_norm: float = setting(0.5, "value gradient-norm clip", low=0, low_open=True)
    normalize_advantages: bool = setting(True, "normalise advantages per batch")
    optimizer_type: str = _optimizer_type("value optimiser")
    sgd_momentum: float = _sgd_momentum()


@dataclass(frozen=True)
class EvalConfig:
    """Deterministic evaluations, on environments seeded apart from training."""

    interval: int = setting(10_000, "environment steps between deterministic evaluations; 0 = never (on "
                                    "request only)", low=0)
    episodes: int = setting(10, "episodes per evaluation", low=1, cap=10_000)


@dataclass(frozen=True)
class CheckpointConfig:
    """Checkpoints, in the run directory's `checkpoints/step-<N>/`."""

    interval: int = setting(50_000, "environment steps between checkpoints; 0 = only on request and at the end",
                            low=0)
    keep: int = setting(3, "how many of the latest checkpoints to keep", low=1)
    save_replay: bool = setting(True, "include the replay buffer, so a resumed run continues exactly", algo="mpo")


@dataclass(frozen=True, kw_only=True)
class Preset:
    """A validated preset: the top-level keys, then one config per table."""

    name: str = setting("preset", "the run name: runs go to `saves/<name>-<YYYYmmdd-HHMMSS>/`",
                        pattern=_NAME_PATTERN, expect="a name of letters, digits, '.', '_' and '-'",
                        default_doc="the file name without `.toml`")
    description: str = setting("", "one line shown by `rltui presets`; say where the settings come from")
    algo: str = setting(doc="the algorithm; selects the `[mpo]` or `[trpo]` table", choices=ALGOS,
                        on_resume="fixed")
    env: EnvConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    # The [mpo] or [trpo] table: keyword arguments for MPOAgent / TRPOAgent, every one filled in.
    agent: dict[str, Any] = field(default_factory=dict)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    # Where the preset came from (a display path or "<text>"), and which file or override set each
    # key path where that is not `source`; neither is part of equality.
    source: str = field(default="<text>", compare=False)
    provenance: Mapping[tuple[str, ...], str] = field(default_factory=dict, compare=False, repr=False)

    def origin_of(self, *path: str) -> str:
        """The file, `--set` override or flag that set the value at `path`, e.g. ("train", "device")."""
        return _Origins.lookup(self.provenance, self.source, path)


@dataclass(frozen=True)
class PresetInfo:
    """One row of `list_presets()`. `name` is what `find_preset` / `load_preset` accept."""

    name: str
    algo: str
    env_id: str
    description: str
    path: Path
    error: str | None = None  # set (and algo/env_id are "?") when the file does not validate


@dataclass(frozen=True)
class Override:
    """A value from the command line, labelled with where it came from for errors: `--set
    section.key=value` (see `parse_override`) or a flag such as `--device` or `--seed`."""

    label: str
    path: tuple[str, ...]
    value: Any


# --------------------------------------------------------------------------------------------
# The declarations, read once

Kind = Literal["int", "float", "bool", "str", "layers", "table"]
_KINDS: dict[Any, Kind] = {bool: "bool", int: "int", float: "float", str: "str", tuple[int, ...]: "layers",
                           Mapping[str, Any]: "table"}
_KIND_NAMES: dict[Kind, str] = {"int": "integer", "float": "number", "bool": "boolean", "str": "string",
                                "layers": "array of integers", "table": "table"}


@dataclass(frozen=True)
class _Key:
    """One declared key: its table ("" at the top level), name, kind, default and Setting."""

    table: str
    name: str
    kind: Kind
    default: Any  # MISSING when the key is required
    setting: Setting

    @property
    def path(self) -> tuple[str, ...]:
        return (self.table, self.name) if self.table else (self.name,)

    @property
    def required(self) -> bool:
        return self.default is MISSING

    def applies_to(self, algo: str | None) -> bool:
        return self.setting.algo is None or algo is None or self.setting.algo == algo

    def default_for(self, algo: str | None) -> Any:
        return copy.deepcopy(self.setting.defaults_by_algo.get(algo or "", self.default))

    def bounds(self, *, with_cap: bool, grouped: bool = False) -> str:
        """">= 1", "(0, 1]", "[1, 4096]" (the cap only `with_cap`), or "" when unbounded; `grouped`
        writes large numbers as 1_000_000."""
        rule = self.setting
        high = rule.high if rule.high is not None or not with_cap else rule.cap
        low_text, high_text = _number_text(rule.low, grouped), _number_text(high, grouped)
        if rule.low is None and high is None:
            return ""
        if high is None:
            return f"{'>' if rule.low_open else '>='} {low_text}"
        if rule.low is None:
            return f"{'<' if rule.high_open else '<='} {high_text}"
        return f"{'(' if rule.low_open else '['}{low_text}, {high_text}{')' if rule.high_open else ']'}"

    def expect(self, *, with_cap: bool = False) -> str:
        """What a valid value looks like, for messages ("an integer >= 1")."""
        rule = self.setting
        if rule.expect:
            return rule.expect
        if self.kind in ("int", "float"):
            bounds = self.bounds(with_cap=with_cap)
            noun = "an integer" if self.kind == "int" else "a number"
            if not bounds:
                return noun
            return f"{noun} {'in ' if bounds[0] in '[(' else ''}{bounds}"
        if self.kind == "bool":
            return "true or false"
        if self.kind == "str":
            return _either([f'"{choice}"' for choice in rule.choices]) if rule.choices else "a string"
        if self.kind == "layers":
            if with_cap:
                return (f"a non-empty array of at most {MAX_HIDDEN_LAYERS} integers in "
                        f"[{_number_text(rule.low)}, {_number_text(rule.cap)}]")
            return f"a non-empty array of integers >= {_number_text(rule.low)}"
        return "a table"


def _number_text(value: float | None, grouped: bool = False) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        return f"{value:_}" if grouped and value >= 10_000 else str(value)
    return f"{value:g}"


def _either(options: list[str]) -> str:
    return " or ".join(options) if len(options) <= 2 else "one of " + ", ".join(options)


def _declared_keys(cls: type, table: str) -> dict[str, _Key]:
    hints = get_type_hints(cls)
    keys: dict[str, _Key] = {}
    for declared in fields(cls):
        if "setting" in declared.metadata:
            keys[declared.name] = _Key(table, declared.name, _KINDS[hints[declared.name]], _default_of(declared),
                                       declared.metadata["setting"])
    return keys


def _default_of(declared: Field[Any]) -> Any:
    if declared.default_factory is not MISSING:
        return declared.default_factory()
    return declared.default


_TOP_KEYS = _declared_keys(Preset, "")
AGENT_CONFIGS: dict[str, type] = {"mpo": MPOConfig, "trpo": TRPOConfig}
_TABLE_CLASSES: dict[str, type] = {
    "env": EnvConfig, "train": TrainConfig, "network": NetworkConfig, **AGENT_CONFIGS,
    "eval": EvalConfig, "checkpoint": CheckpointConfig,
}
_TABLES: dict[str, dict[str, _Key]] = {table: _declared_keys(cls, table) for table, cls in _TABLE_CLASSES.items()}


def settings_held_on_resume(algo: str) -> list[tuple[str, str, Callable[[Preset], Any]]]:
    """(`[table] key`, "fixed" or "starts", how to read it from a Preset) for every setting of
    `algo`'s presets that a resume may not change (their `on_resume`)."""
    held: list[tuple[str, str, Callable[[Preset], Any]]] = []
    for key in [*_TOP_KEYS.values(), *(key for table in _TABLES.values() for key in table.values())]:
        own_table = key.table not in AGENT_CONFIGS or key.table == algo
        if key.setting.on_resume != "applies" and own_table and key.applies_to(algo):
            held.append((_where(key.path), key.setting.on_resume, _reader(key)))
    return held


def _reader(key: _Key) -> Callable[[Preset], Any]:
    if not key.table:
        return lambda preset: getattr(preset, key.name)
    if key.table in AGENT_CONFIGS:
        return lambda preset: preset.agent.get(key.name)
    return lambda preset: getattr(getattr(preset, key.table), key.name)


def agent_settings_in_effect(preset: Preset) -> dict[str, Any]:
    """The [mpo]/[trpo] values that change what the agent does (keys it ignores left out)."""
    keys = _TABLES[preset.algo]
    return {name: value for name, value in preset.agent.items() if keys[name].setting.has_effect}


# --------------------------------------------------------------------------------------------
# Showing values and keys in messages


def _printable(text: str) -> str:
    """`text` with control characters and undecodable bytes (surrogate escapes) spelled out."""
    return "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii") for char in text)


def _shorten(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"


def _show(value: Any) -> str:
    """A value as TOML writes it, on one line and cut short, for messages."""
    if isinstance(value, Mapping):
        return "{}" if not value else "a table"
    if isinstance(value, (list, tuple)):
        return _shorten("[" + ", ".join(_show(item) for item in value[:_SHOWN_CHARS]) + "]")
    try:
        text = tomli_w.dumps({"v": value}).removeprefix("v = ").rstrip("\n")
    except TypeError:
        text = str(value)
    return _shorten(_printable(text))


def _where(path: tuple[str, ...]) -> str:
    """`("mpo", "kl_epsilon")` -> `[mpo] kl_epsilon`; `("algo",)` -> `algo`; `("env",)` -> `[env]`."""
    if len(path) == 1:
        return f"[{path[0]}]" if path[0] in _TABLES else path[0]
    return _shorten(f"[{path[0]}] " + ".".join(path[1:]))


def _did_you_mean(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _unknown_key(name: str, here: Iterable[str], table: str = "") -> str:
    """"unknown key", with the closest key where it was written, else the table it belongs in
    (`total_steps` at the top level or under [mpo]: "train.total_steps")."""
    elsewhere = [f"{other}.{key}" for other, keys in _TABLES.items() if other != table for key in keys]
    exact = [dotted for dotted in elsewhere if dotted.split(".", 1)[1] == name]
    if exact:
        return f'unknown key (did you mean "{exact[0]}"?)'
    hint = _did_you_mean(name, here)
    if not hint:
        close = difflib.get_close_matches(name, [d.split(".", 1)[1] for d in elsewhere], n=1, cutoff=0.8)
        hint = next((f' (did you mean "{d}"?)' for d in elsewhere if close and d.endswith("." + close[0])), "")
    return "unknown key" + hint


# --------------------------------------------------------------------------------------------
# Reading files, `extends` and provenance


def _display_path(path: Path) -> str:
    try:
        shown = os.path.relpath(path) if path.resolve().is_relative_to(Path.cwd().resolve()) else str(path)
    except ValueError:  # a different drive on Windows
        shown = str(path)
    return _printable(shown)


class _Origins:
    """Remembers which file or override set each key path, so errors name the right one."""

    def __init__(self, default: str, by_path: dict[tuple[str, ...], str] | None = None) -> None:
        self.default = default
        self.by_path: dict[tuple[str, ...], str] = by_path if by_path is not None else {}

    def of(self, path: tuple[str, ...]) -> str:
        return self.lookup(self.by_path, self.default, path)

    @staticmethod
    def lookup(by_path: Mapping[tuple[str, ...], str], default: str, path: tuple[str, ...]) -> str:
        """The origin of `path` or of the nearest table above it that has one, else `default`."""
        for end in range(len(path), 0, -1):
            if path[:end] in by_path:
                return by_path[path[:end]]
        return default


def _deep_merge(base: dict[str, Any], update: Mapping[str, Any], origins: _Origins, update_origins: _Origins,
                prefix: tuple[str, ...] = ()) -> None:
    """Merge `update` into `base` in place: tables merge key by key, anything else is replaced.
    Time is linear in the size of `update`."""
    for key, value in update.items():
        path = prefix + (key,)
        origins.by_path[path] = update_origins.of(path)
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value, origins, update_origins, path)
        else:
            base[key] = copy.deepcopy(value)
            _copy_origins(value, path, origins, update_origins)


def _copy_origins(value: Any, path: tuple[str, ...], origins: _Origins, update_origins: _Origins) -> None:
    if isinstance(value, dict):
        for key, child in value.items():
            origins.by_path[path + (key,)] = update_origins.of(path + (key,))
            _copy_origins(child, path + (key,), origins, update_origins)


def _first_too_deep(value: Any, path: tuple[str, ...], depth: int) -> tuple[str, ...] | None:
    """The first three keys of the path to a table or array nested deeper than MAX_NESTING below
    `value` (which is at `path`, `depth` levels down), else None. Iterative and linear in the size
    of `value`, so any depth is safe to look at."""
    stack = [(value, path[:3], depth)]
    while stack:
        node, node_path, node_depth = stack.pop()
        if isinstance(node, (dict, list)) and node_depth > MAX_NESTING:
            return node_path
        if isinstance(node, dict):
            stack.extend((child, (node_path + (key,))[:3], node_depth + 1) for key, child in node.items())
        elif isinstance(node, list):
            stack.extend((child, node_path, node_depth + 1) for child in node)
    return None


_TOO_DEEP = f"tables and arrays nested more than {MAX_NESTING} levels deep"


def _parse_toml(text: str, origin: str) -> dict[str, Any]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise PresetError(origin, "", f"invalid TOML: {error}") from None
    except RecursionError:
        raise PresetError(origin, "", f"invalid TOML: {_TOO_DEEP}") from None
    except ValueError as error:  # an integer of more digits than Python converts
        raise PresetError(origin, "", f"invalid TOML: {str(error).partition(';')[0]}") from None
    too_deep = _first_too_deep(data, (), 0)
    if too_deep is not None:
        raise PresetError(origin, _where(too_deep), _TOO_DEEP)
    return data


def _read_text(path: Path, origin: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PresetError(origin, "", "no such file") from None
    except IsADirectoryError:
        raise PresetError(origin, "", "is a directory, not a preset file") from None
    except UnicodeDecodeError:
        raise PresetError(origin, "", "is not UTF-8 text") from None
    except OSError as error:
        raise PresetError(origin, "", f"cannot read: {error.strerror}") from None


class _PresetFiles:
    """The files of one load: each is read, parsed and merged with its bases once, so a base named
    many times (a diamond of `extends`) costs its size once, not once per path to it."""

    def __init__(self) -> None:
        self._resolved: dict[Path, tuple[dict[str, Any], _Origins]] = {}

    def resolve(self, path: Path, chain: tuple[Path, ...] = ()) -> tuple[dict[str, Any], _Origins]:
        """`path` merged over its bases. The result may be shared: merge it, do not change it."""
        key = path.resolve()
        if key not in self._resolved:
            origin = _display_path(path)
            data = _parse_toml(_read_text(path, origin), origin)
            self._resolved[key] = self.merge_bases(data, path.parent, origin, chain + (key,))
        return self._resolved[key]

    def merge_bases(self, data: dict[str, Any], base_dir: Path, origin: str,
                    chain: tuple[Path, ...]) -> tuple[dict[str, Any], _Origins]:
        """Merge the `extends` bases (in order) under `data`; returns the merged table and origins.
        `chain` holds the resolved paths of the files that lead here, the last being `data`'s."""
        extends = data.pop("extends", [])
        bases = [extends] if isinstance(extends, str) else extends
        if not isinstance(bases, list) or not all(isinstance(b, str) and b for b in bases):
            raise PresetError(origin, "extends", f"expected a path or an array of paths, got {_show(extends)}")
        merged: dict[str, Any] = {}
        origins = _Origins(origin)
        for base in bases:
            base_path = base_dir / base
            if not base_path.is_file():
                named = _named_base(base)
                if named is None:
                    raise PresetError(origin, "extends", f"no such file {_show(_display_path(base_path))}"
                                                         f" and no preset named {_show(base)}")
                base_path = named
            if base_path.resolve() in chain:
                names = [_display_path(p) for p in chain[chain.index(base_path.resolve()):]]
                raise PresetError(origin, "extends", "cycle: " + " -> ".join(names + [_display_path(base_path)]))
            if len(chain) >= MAX_EXTENDS_DEPTH:
                raise PresetError(origin, "extends", f"a chain of bases longer than {MAX_EXTENDS_DEPTH} files "
                                                     f"(from {_display_path(chain[0])})")
            base_data, base_origins = self.resolve(base_path, chain)
            _deep_merge(merged, base_data, origins, base_origins)
        _deep_merge(merged, data, origins, _Origins(origin))
        return merged, origins


# --------------------------------------------------------------------------------------------
# Validation


def _first_unsupported(value: Any, path: tuple[str, ...]) -> tuple[tuple[str, ...], Any] | None:
    """(path, value) of the first value in a table that is not a string, number, boolean, array or
    table (TOML dates and times), or None. Iterative (tables are bounded by MAX_NESTING anyway)."""
    stack = [(value, path)]
    while stack:
        node, node_path = stack.pop()
        if isinstance(node, dict):
            stack.extend(reversed([(child, node_path + (key,)) for key, child in node.items()]))
        elif isinstance(node, list):
            stack.extend(reversed([(child, node_path) for child in node]))
        elif not isinstance(node, (str, int, float, bool)):
            return node_path, node
    return None


def _coerce(key: _Key, value: Any) -> Any:
    """The validated value of `key`, or ValueError(problem) naming what was expected and what was got."""
    rule = key.setting

    def wrong(*, with_cap: bool = False, expected: str = "") -> ValueError:
        return ValueError(f"expected {expected or key.expect(with_cap=with_cap)}, got {_show(value)}")

    if key.kind in ("int", "float"):
        number_types = int if key.kind == "int" else (int, float)
        if isinstance(value, bool) or not isinstance(value, number_types):
            raise wrong()
        if key.kind == "float" and not math.isfinite(_as_float(value)):
            raise wrong(expected=key.expect().replace("a number", "a finite number", 1))
        if not _within(value, rule):
            raise wrong()
        if rule.cap is not None and value > rule.cap:
            raise wrong(with_cap=True)
        return float(value) if key.kind == "float" else value
    if key.kind == "bool":
        if not isinstance(value, bool):
            raise wrong()
        return value
    if key.kind == "str":
        if not isinstance(value, str):
            raise wrong()
        if (rule.choices and value not in rule.choices) or (rule.pattern and not rule.pattern.fullmatch(value)):
            raise wrong()
        return value
    if key.kind == "layers":
        if (not isinstance(value, list) or not value
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)):
            raise wrong()
        if len(value) > MAX_HIDDEN_LAYERS or max(value) > (rule.cap or math.inf):
            raise wrong(with_cap=True)
        weights = sum(a * b for a, b in itertools.pairwise(value))
        if weights > MAX_HIDDEN_WEIGHTS:
            raise ValueError(f"expected at most {MAX_HIDDEN_WEIGHTS} weights between hidden layers, got "
                             f"{_show(value)} ({weights} weights)")
        return tuple(value)
    if not isinstance(value, dict):
        raise wrong()
    return copy.deepcopy(value)


def _as_float(value: float) -> float:
    try:
        return float(value)
    except OverflowError:  # an integer beyond the range of floats
        return math.inf


def _within(value: float, rule: Setting) -> bool:
    above = rule.low is None or (value > rule.low if rule.low_open else value >= rule.low)
    below = rule.high is None or (value < rule.high if rule.high_open else value <= rule.high)
    return above and below


def _validate(raw: Mapping[str, Any], origins: _Origins, fallback_name: str, *, partial: bool = False) -> Preset | None:
    """The Preset `raw` describes, or PresetError. With `partial` (a base for `extends`), keys that
    are missing and checks that need other files' values are skipped, and None is returned."""

    def fail(path: tuple[str, ...], problem: str) -> PresetError:
        return PresetError(origins.of(path), _where(path), problem)

    known_top = list(_TOP_KEYS) + list(_TABLES)
    for name, value in raw.items():
        if name == "extends":
            raise fail((name,), "only allowed in a preset file")
        if name not in known_top:
            where = f"[{name}]" if isinstance(value, dict) else name
            raise PresetError(origins.of((name,)), _shorten(where), _unknown_key(name, known_top))
        if name in _TABLES and not isinstance(value, dict):
            raise fail((name,), f"expected a table, got {_show(value)}")

    algo_key = _TOP_KEYS["algo"]
    if "algo" not in raw and not partial:
        raise fail(("algo",), f"missing (expected {algo_key.expect()})")
    top: dict[str, Any] = {}
    for name, key in _TOP_KEYS.items():
        if name in raw:
            try:
                top[name] = _coerce(key, raw[name])
            except ValueError as error:
                raise fail(key.path, str(error)) from None
    algo: str | None = top.get("algo")

    tables: dict[str, dict[str, Any]] = {}
    for table, keys in _TABLES.items():
        if table in ALGOS and algo is not None and table != algo and table in raw:
            raise fail((table,), f'this table is for algo "{table}", but the preset has algo "{algo}"')
        values: dict[str, Any] = {}
        for name, value in raw.get(table, {}).items():
            path = (table, name)
            if name not in keys:
                raise fail(path, _unknown_key(name, keys, table))
            key = keys[name]
            if not key.applies_to(algo):
                raise fail(path, f'only used by algo "{key.setting.algo}", but the preset has algo "{algo}"')
            try:
                values[name] = _coerce(key, value)
            except ValueError as error:
                raise fail(path, str(error)) from None
        for name, key in keys.items():
            if name in values or not key.applies_to(algo) or (partial and key.required):
                continue
            if key.required:
                raise fail(key.path, f"missing (expected {key.expect()})")
            values[name] = key.default_for(algo)
        tables[table] = {name: values[name] for name in keys if name in values}  # declaration order

    env = tables["env"]
    bad = _first_unsupported(env["kwargs"], ("env", "kwargs"))
    if bad:
        raise fail(bad[0], f"expected a string, number, boolean, array or table, got {_show(bad[1])}")
    if "id" in env:
        from rltui.envs import EnvError, check_env_id

        try:
            check_env_id(env["id"])
        except EnvError as error:
            raise fail(("env", "id"), error.problem) from None
    if partial:
        return None
    for table, keys in _TABLES.items():
        _check_at_least(tables[table], keys, fail)
    assert algo is not None
    if algo == "mpo" and tables["mpo"]["use_retrace"]:
        rows = tables["train"]["replay_size"] // env["num_envs"]
        if tables["mpo"]["retrace_steps"] > rows:  # no sequence would ever fit: the run would never learn
            raise fail(("mpo", "retrace_steps"),
                       f"expected an integer <= the replay's {rows} steps per environment ([train] replay_size "
                       f"{tables['train']['replay_size']} / [env] num_envs {env['num_envs']}), "
                       f"got {tables['mpo']['retrace_steps']}")

    return Preset(
        name=top.get("name")
        or (fallback_name if _NAME_PATTERN.fullmatch(fallback_name) else _TOP_KEYS["name"].default),
        description=top.get("description", _TOP_KEYS["description"].default),
        algo=algo,
        env=EnvConfig(**env),
        train=TrainConfig(**tables["train"]),
        network=NetworkConfig(**tables["network"]),
        agent=tables[algo],
        eval=EvalConfig(**tables["eval"]),
        checkpoint=CheckpointConfig(**tables["checkpoint"]),
        source=origins.default,
        provenance=dict(origins.by_path),
    )


def _check_at_least(values: dict[str, Any], keys: dict[str, _Key],
                    fail: Callable[[tuple[str, ...], str], PresetError]) -> None:
    for name, key in keys.items():
        other = key.setting.at_least
        if other is not None and name in values and other in values and values[name] < values[other]:
            noun = "an integer" if key.kind == "int" else "a number"
            raise fail(key.path, f"expected {noun} >= [{key.table}] {other} ({values[other]}), got {values[name]}")


# --------------------------------------------------------------------------------------------
# Overrides

_BARE_KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]+")


def _is_string_key(path: tuple[str, ...]) -> bool:
    if len(path) == 1:
        key = _TOP_KEYS.get(path[0])
    else:
        key = _TABLES.get(path[0], {}).get(path[1]) if len(path) == 2 else None
    return key is not None and key.kind == "str"


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # surrogate escapes: bytes in argv that were not UTF-8
        return False
    return True


def parse_override(text: str) -> Override:
    """`--set section.key=value`: the value is parsed as a TOML value, never evaluated; text that
    is not TOML is a bare string, and string keys always take the text as written."""
    key, equals, value_text = text.partition("=")
    key = key.strip()
    label = f"--set {_shorten(_printable(key or text))}"
    if not _is_utf8(text):
        raise PresetError(label, "", "not UTF-8 text (the command line held bytes that are not UTF-8)")
    path = tuple(key.split("."))
    if not equals or not all(_BARE_KEY_PATTERN.fullmatch(part) for part in path):
        raise PresetError(label, "", f"expected section.key=value, got {_show(text)}")
    if len(path) > MAX_NESTING:
        raise PresetError(label, "", f"expected a key at most {MAX_NESTING} levels deep, got {len(path)} levels")
    string_key = _is_string_key(path)
    try:
        parsed = tomllib.loads(f"v = {value_text}")
        value = parsed["v"] if list(parsed) == ["v"] else value_text.strip()
    except (tomllib.TOMLDecodeError, ValueError):  # ValueError: an integer of too many digits
        value = value_text.strip()  # a bare word: only a string key will accept it
    except RecursionError:
        if not string_key:
            raise PresetError(label, _where(path), _TOO_DEEP) from None
        value = value_text.strip()
    if string_key and not isinstance(value, str):
        value = value_text.strip()
    if _first_too_deep(value, path, len(path)) is not None:
        raise PresetError(label, _where(path), _TOO_DEEP)
    return Override(label, path, value)


def _as_override(override: str | Override) -> Override:
    return override if isinstance(override, Override) else parse_override(override)


def _apply_override(raw: dict[str, Any], origins: _Origins, override: Override) -> None:
    node = raw
    for depth, part in enumerate(override.path[:-1]):
        if part not in node:
            node[part] = {}
            origins.by_path[override.path[: depth + 1]] = override.label  # a table the override brings in
        child = node[part]
        if not isinstance(child, dict):
            raise PresetError(override.label, _where(override.path[: depth + 1]), f"is {_show(child)}, not a table")
        node = child
    _deep_merge(node, {override.path[-1]: override.value}, origins, _Origins(override.label), override.path[:-1])


def _preset_to_raw(preset: Preset) -> dict[str, Any]:
    """The resolved preset as a TOML-shaped dict (only the keys that apply to its algo)."""
    raw: dict[str, Any] = {name: getattr(preset, name) for name in _TOP_KEYS}
    for table, keys in _TABLES.items():
        if table in ALGOS:
            if table == preset.algo:
                raw[table] = copy.deepcopy(preset.agent)
            continue
        config = getattr(preset, table)
        raw[table] = {
            name: list(value) if isinstance(value, tuple) else copy.deepcopy(value)
            for name, key in keys.items()
            if key.applies_to(preset.algo)
            for value in [getattr(config, name)]
        }
    return raw


def apply_overrides(preset: Preset, overrides: Iterable[str | Override]) -> Preset:
    """Apply overrides (`--set` strings or `Override`s) to a preset and validate the result."""
    raw = _preset_to_raw(preset)
    origins = _Origins(preset.source, dict(preset.provenance))
    for override in overrides:
        _apply_override(raw, origins, _as_override(override))
    validated = _validate(raw, origins, preset.name)
    assert validated is not None
    return validated


# --------------------------------------------------------------------------------------------
# What this machine can run: the environment, memory for the replay buffer, the device


def physical_memory_bytes() -> int | None:
    """This machine's physical memory, or None where the OS does not say (then only the caps on
    `[train] replay_size` apply)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows) or no such name
        return None
    return total if total > 0 else None


def _bytes_text(count: int) -> str:
    return f"{count} bytes ({count / 2**30:.1f} GiB)"


def check_environment(preset: Preset) -> EnvSpec:
    """Make the environment once (the id exists, MuJoCo is installed if needed, gymnasium.make takes
    the kwargs, the action space is a Box), return its spec, and `check_memory`. Errors name the
    file or override that set the value at fault."""
    from rltui.envs import EnvError, check_env

    try:
        spec = check_env(preset.env)
    except EnvError as error:
        key_path = tuple(error.key.split(".")) if error.key else ()
        raise PresetError(_env_origin(preset, key_path), _where(("env",) + key_path), error.problem) from None
    check_memory(preset, spec)
    return spec


def check_memory(preset: Preset, spec: EnvSpec) -> None:
    """An MPO replay buffer, or a TRPO rollout and its update, must fit in this machine's memory."""
    from rltui.replay import replay_bytes
    from rltui.rollout import rollout_bytes

    train, env = preset.train, preset.env
    if preset.algo == "mpo":
        needed = replay_bytes(train.replay_size, env.num_envs, spec.obs_dim, spec.act_dim)
        _check_fits_in_memory(needed, preset, "replay_size", f"{train.replay_size} transitions of {env.id}")
    if preset.algo == "trpo":
        needed = rollout_bytes(train.rollout_steps, env.num_envs, spec.obs_dim, spec.act_dim,
                               preset.network.policy_layer_sizes, preset.agent["value_epochs"])
        _check_fits_in_memory(needed, preset, "rollout_steps", f"{train.rollout_steps} steps x {env.num_envs} "
                              f"environments of {env.id}", " (the rollout and its update)")


def _check_fits_in_memory(needed: int, preset: Preset, train_key: str, what: str, why: str = "") -> None:
    """A PresetError naming [train] `train_key` when `needed` bytes exceed this machine's memory."""
    available = physical_memory_bytes()
    if available is not None and needed > available:
        raise PresetError(preset.origin_of("train", train_key), f"[train] {train_key}",
                          f"{what} need {_bytes_text(needed)} of memory{why}; "
                          f"this machine has {_bytes_text(available)}")


def _env_origin(preset: Preset, key_path: tuple[str, ...]) -> str:
    """Who set the [env] value at fault; for the kwargs table as a whole, everyone who set one."""
    if key_path != ("kwargs",):
        return preset.origin_of("env", *key_path)
    setters = dict.fromkeys(preset.origin_of("env", "kwargs", name) for name in preset.env.kwargs)
    return ", ".join(setters) or preset.origin_of("env", "kwargs")


def resolve_device(spec: str, origin: str = "") -> str:
    """"auto" -> "cuda" when CUDA is available, else "cpu"; "cuda[:N]" is checked to exist.
    Errors name `origin` (the file or flag that set `[train] device`)."""
    if not isinstance(spec, str) or not _DEVICE_PATTERN.fullmatch(spec):
        raise PresetError(origin, "[train] device", f"expected {_DEVICE_EXPECT}, got {_show(spec)}")
    if spec == "cpu":
        return spec
    import torch

    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise PresetError(origin, "[train] device", f'"{spec}" was requested but CUDA is not available; '
                                                    'use "auto" or "cpu"')
    index = int(spec.partition(":")[2] or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise PresetError(origin, "[train] device", f'"{spec}" was requested but there are only {count} '
                                                    "CUDA device(s)")
    return spec


def preset_device(preset: Preset) -> str:
    """The device the preset trains on (`resolve_device`), naming the file or flag that chose it."""
    return resolve_device(preset.train.device, preset.origin_of("train", "device"))


# --------------------------------------------------------------------------------------------
# Public loading API


def preset_from_toml_text(text: str, source: str = "<text>") -> Preset:
    """Validate preset TOML text; `extends` paths are relative to `source`'s folder."""
    data = _parse_toml(text, source)
    raw, origins = _PresetFiles().merge_bases(data, Path(source).parent, source, ())
    preset = _validate(raw, origins, Path(source).stem)
    assert preset is not None
    return preset


def bundled_presets_dir() -> Path:
    """The presets shipped with rltui: inside the package (wheels), else the repo's presets/."""
    package_dir = Path(rltui.__file__).resolve().parent
    inside = package_dir / "bundled_presets"
    return inside if inside.is_dir() else package_dir.parent / "presets"


def _search_dirs() -> list[Path]:
    dirs: list[Path] = []
    for directory in (Path.cwd() / "presets", bundled_presets_dir()):
        if directory.is_dir() and all(directory.resolve() != d.resolve() for d in dirs):
            dirs.append(directory)
    return dirs


def _named_base(name: str) -> Path | None:
    """`extends = "pendulum-mpo"` (or "_mujoco-mpo", with or without ".toml") from a file anywhere:
    the preset of that name in ./presets or the bundled ones; None if `name` is a path or unknown."""
    if "/" in name or os.sep in name or name in (".", ".."):
        return None
    file_name = name if name.endswith(".toml") else f"{name}.toml"
    for directory in _search_dirs():
        if (directory / file_name).is_file():
            return directory / file_name
    return None


def is_base_file(path: str | os.PathLike[str]) -> bool:
    """Files whose name starts with "_" are bases for `extends`, not presets to run."""
    return Path(path).name.startswith("_")


def _preset_files() -> dict[str, Path]:
    """Listable presets by name (not bases), ./presets shadowing bundled ones."""
    files: dict[str, Path] = {}
    for directory in _search_dirs():
        for path in sorted(directory.glob("*.toml")):
            if not is_base_file(path):
                files.setdefault(path.stem, path)
    return files


def find_preset(name: str) -> Path:
    """The file of the preset called `name`: ./presets/<name>.toml, else the bundled one."""
    for directory in _search_dirs():
        path = directory / f"{name}.toml"
        if path.is_file():
            return path
    searched = ", ".join(_display_path(d) for d in _search_dirs()) or "no preset folder found"
    raise PresetError("", "", f"no preset named {_show(name)}{_did_you_mean(name, _preset_files())}; "
                              f"searched {searched}")


def _locate(path_or_name: str | os.PathLike[str]) -> Path:
    text = os.fspath(path_or_name)
    if not text:
        raise PresetError("", "", "expected a preset name or a file, got an empty string")
    path = Path(text)
    if path.is_file():
        return path
    if path.exists():  # a directory, a device, a FIFO (opening one would block)
        kind = "is a directory" if path.is_dir() else "is not a regular file"
        raise PresetError(_display_path(path), "", f"{kind} (expected a preset file)")
    if "/" in text or os.sep in text or text.endswith(".toml"):
        raise PresetError(_display_path(path), "", "no such file")
    return find_preset(text)


def load_preset(path_or_name: str | os.PathLike[str], overrides: Iterable[str | Override] = (), *,
                check_env: bool = True, check_device: bool = False) -> Preset:
    """Load a preset file (any path) or a preset name, apply overrides and validate it all.

    `overrides` are `--set` strings or `Override`s (flags), applied in order. With `check_env`, the
    environment is made once and the replay buffer or rollout must fit in memory (`check_environment`); with
    `check_device`, `[train] device` must exist on this machine (`preset_device`). Errors name the
    file, override or flag that set the value at fault.
    """
    path = _locate(path_or_name)
    raw, origins = _PresetFiles().resolve(path)  # this load's own copy: the overrides may change it
    for override in overrides:
        _apply_override(raw, origins, _as_override(override))
    preset = _validate(raw, origins, path.stem)
    assert preset is not None
    if check_env:
        check_environment(preset)
    if check_device:
        preset_device(preset)
    return preset


def check_base_file(path: str | os.PathLike[str]) -> None:
    """Check a base for `extends` (a partial preset): every key it sets must be known and valid,
    but keys may be missing and the environment is not made. PresetError if not."""
    raw, origins = _PresetFiles().resolve(Path(path))
    _validate(raw, origins, Path(path).stem, partial=True)


def list_presets() -> list[PresetInfo]:
    """Every preset in ./presets and the bundled folder, sorted by name (environments not made)."""
    infos = []
    for name, path in sorted(_preset_files().items()):
        try:
            preset = load_preset(path, check_env=False)
        except PresetError as error:
            infos.append(PresetInfo(name, "?", "?", "", path, error=str(error)))
        else:
            infos.append(PresetInfo(name, preset.algo, preset.env.id, preset.description, path))
    return infos


def preset_to_toml(preset: Preset) -> str:
    """The resolved preset as TOML text; `preset_from_toml_text` of it gives an equal Preset."""
    return f"# Resolved rltui preset (from {_printable(preset.source)}).\n" + tomli_w.dumps(_preset_to_raw(preset))


# --------------------------------------------------------------------------------------------
# The schema tables of presets/README.md

SCHEMA_BEGIN = "<!-- schema: generated from rltui/presets.py by `python -m rltui.presets --update-readme` -->"
SCHEMA_END = "<!-- end of the generated schema -->"
UPDATE_README_COMMAND = "python -m rltui.presets --update-readme"
_EXTENDS_ROW = ("| `extends` | string or array of strings | none | paths relative to the file, or preset names "
                "| base files, see [`extends`](#extends) |")


def _range_doc(key: _Key) -> str:
    rule = key.setting
    parts = []
    if key.kind == "layers":
        parts.append(f"1 to {MAX_HIDDEN_LAYERS} layers, each in [{_number_text(rule.low)}, "
                     f"{_number_text(rule.cap, grouped=True)}], at most {MAX_HIDDEN_WEIGHTS:_} weights between them")
    elif key.kind in ("int", "float"):
        parts.append(key.bounds(with_cap=True, grouped=True) or "finite")
    elif rule.choices:
        parts.append(_either([f'`"{choice}"`' for choice in rule.choices]))
    elif rule.pattern is not None:
        parts.append(rule.expect)
    if rule.at_least:
        parts.append(f">= `{rule.at_least}`")
    if rule.range_doc:
        parts.append(rule.range_doc)
    if rule.algo:
        parts.append(f"{rule.algo.upper()} only")
    return "; ".join(parts)


def _default_doc(key: _Key) -> str:
    rule = key.setting
    if rule.default_doc:
        return rule.default_doc
    if key.required:
        return "required"
    if rule.defaults_by_algo:
        return ", ".join(f"`{_show(rule.defaults_by_algo.get(algo, key.default))}` ({algo})" for algo in ALGOS)
    if key.kind == "int":
        return f"`{_number_text(key.default, grouped=True)}`"
    return f"`{_show(key.default)}`"


_RESUME_NOTES = {
    "applies": "",
    "fixed": "; fixed for the run: `rltui resume` cannot change it",
    "starts": "; a starting value only: `rltui resume` cannot change it",
}


def _table_markdown(keys: Iterable[_Key], extra_rows: Iterable[str] = ()) -> str:
    rows = ["| Key | Type | Default | Range | Meaning |", "|---|---|---|---|---|"]
    rows += [f"| `{key.name}` | {_KIND_NAMES[key.kind]} | {_default_doc(key)} | {_range_doc(key)} | "
             f"{key.setting.doc}{_RESUME_NOTES[key.setting.on_resume]} |" for key in keys]
    return "\n".join([*rows, *extra_rows])


def schema_markdown() -> str:
    """The schema section of presets/README.md (without the markers), from the declarations."""
    limits = ("Upper bounds on counts and sizes (environments, threads, layers, batches, samples, iterations, "
              "episodes) are caps against absurd values, such as a few zeros too many, far above any real run; "
              "they stop such a value before it allocates anything. In a file or a `--set` value, tables and "
              f"arrays nest at most {MAX_NESTING} levels deep, and a chain of `extends` is at most "
              f"{MAX_EXTENDS_DEPTH} files long.")
    parts = [
        limits,
        "### Top level",
        _table_markdown(_TOP_KEYS.values(), [_EXTENDS_ROW]),
    ]
    for table, cls in _TABLE_CLASSES.items():
        parts += [f"### `[{table}]`", inspect.cleandoc(cls.__doc__ or "").replace("\n", " "),
                  _table_markdown(_TABLES[table].values())]
    return "\n\n".join(parts) + "\n"


def readme_with_schema(readme: str) -> str:
    """`readme` with the text between SCHEMA_BEGIN and SCHEMA_END replaced by `schema_markdown()`."""
    begin, end = readme.find(SCHEMA_BEGIN), readme.find(SCHEMA_END)
    if begin < 0 or end < begin:
        raise ValueError(f"the README has no {SCHEMA_BEGIN!r} ... {SCHEMA_END!r} markers")
    return readme[: begin + len(SCHEMA_BEGIN)] + "\n\n" + schema_markdown() + "\n" + readme[end:]


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rltui.presets",
                                     description="The preset schema, made from the declarations in rltui/presets.py.")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--schema-markdown", action="store_true", help="print the schema tables as Markdown")
    action.add_argument("--update-readme", action="store_true",
                        help="rewrite the schema tables of the presets README (presets/README.md in a checkout)")
    args = parser.parse_args(argv)
    if args.schema_markdown:
        print(schema_markdown(), end="")
        return 0
    readme = bundled_presets_dir() / "README.md"
    readme.write_text(readme_with_schema(readme.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"updated {readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
