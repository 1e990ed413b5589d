"""Training presets: TOML files validated strictly into frozen dataclasses.

The schema (every key, type, default and range) is documented in presets/README.md. Every
problem with a preset becomes a `PresetError` whose text is one line naming where the bad value
came from (a file or a `--set` override), the `[section] key`, what was expected and what was got.
"""

from __future__ import annotations

import copy
import difflib
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

import rltui

ALGOS = ("mpo", "trpo")
# The preset each algorithm starts from (Pendulum-v1 ships with gymnasium, no extra needed).
DEFAULT_PRESETS = {"mpo": "pendulum-mpo", "trpo": "pendulum-trpo"}
MUJOCO_EXTRA_HINT = "pip install 'rltui[mujoco]'"


class PresetError(Exception):
    """A bad preset or override. `str()` is one line: `origin: [section] key: problem`."""

    def __init__(self, origin: str, where: str, problem: str) -> None:
        self.origin = origin
        self.where = where
        self.problem = " ".join(problem.split("\n"))
        super().__init__(": ".join(part for part in (origin, where, self.problem) if part))


# --------------------------------------------------------------------------------------------
# The validated preset


@dataclass(frozen=True)
class EnvConfig:
    id: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    num_envs: int = 1
    normalize_obs: bool = False
    normalize_reward: bool = False
    clip_obs: float = 10.0


@dataclass(frozen=True)
class TrainConfig:
    total_steps: int = 100_000
    seed: int = 0
    device: str = "auto"
    threads: int = 1
    replay_size: int = 1_000_000
    update_after: int = 1_000
    batch_size: int = 256
    updates_per_step: float = 1.0
    rollout_steps: int = 1_024


@dataclass(frozen=True)
class NetworkConfig:
    policy_layer_sizes: tuple[int, ...] = (256, 256)
    critic_layer_sizes: tuple[int, ...] = (256, 256)


@dataclass(frozen=True)
class EvalConfig:
    interval: int = 10_000
    episodes: int = 10


@dataclass(frozen=True)
class CheckpointConfig:
    interval: int = 50_000
    keep: int = 3
    save_replay: bool = True


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    algo: str
    env: EnvConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    # Keyword arguments for MPOAgent / TRPOAgent: every parameter of the table, defaults filled in.
    agent: dict[str, Any] = field(default_factory=dict)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    # Where the preset came from (a display path or "<text>"); not part of equality.
    source: str = field(default="<text>", compare=False)


@dataclass(frozen=True)
class PresetInfo:
    """One row of `list_presets()`. `name` is what `find_preset` / `load_preset` accept."""

    name: str
    algo: str
    env_id: str
    description: str
    path: Path
    error: str | None = None  # set (and algo/env_id are "?") when the file does not validate


# --------------------------------------------------------------------------------------------
# Schema


@dataclass(frozen=True)
class _Param:
    kind: str  # "int" | "float" | "bool" | "str" | "layers" | "table"
    default: Any  # a value, or a {algo: value} dict for kind "layers"
    expect: str  # what a valid value looks like, for error messages
    in_range: Callable[[Any], bool] = lambda value: True
    algo: str | None = None  # the key only applies to this algo
    required: bool = False

    def default_for(self, algo: str) -> Any:
        return self.default[algo] if self.kind == "layers" else self.default


def _int(default: int, low: int = 0, high: int | None = None, algo: str | None = None) -> _Param:
    expect = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
    return _Param("int", default, expect, lambda v: v >= low and (high is None or v <= high), algo)


def _number(
    default: float,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    algo: str | None = None,
) -> _Param:
    def in_range(v: float) -> bool:
        above = low is None or (v > low if low_open else v >= low)
        below = high is None or (v < high if high_open else v <= high)
        return above and below

    if low is None and high is None:
        expect = "a number"
    elif high is None:
        expect = f"a number {'>' if low_open else '>='} {low:g}"
    elif low is None:
        expect = f"a number {'<' if high_open else '<='} {high:g}"
    else:
        expect = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    return _Param("float", float(default), expect, in_range, algo)


def _bool(default: bool, algo: str | None = None) -> _Param:
    return _Param("bool", default, "true or false", algo=algo)


def _choice(default: str, choices: tuple[str, ...]) -> _Param:
    quoted = [f'"{c}"' for c in choices]
    expect = " or ".join(quoted) if len(quoted) == 2 else "one of " + ", ".join(quoted)
    return _Param("str", default, expect, lambda v: v in choices)


_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_DEVICE_RE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")
_DEVICE_EXPECT = '"auto", "cpu", "cuda" or "cuda:N"'

_TOP: dict[str, _Param] = {
    "name": _Param("str", None, "a name of letters, digits, '.', '_' and '-'", lambda v: bool(_NAME_RE.fullmatch(v))),
    "description": _Param("str", "", "a string"),
    "algo": _Param("str", None, '"mpo" or "trpo"', lambda v: v in ALGOS, required=True),
}

_AGENT_COMMON: dict[str, _Param] = {
    "optimizer_type": _choice("adam", ("adam", "sgd")),
    "sgd_momentum": _number(0.9, 0.0, 1.0, high_open=True),
}

# MPOAgent / TRPOAgent keyword arguments (the seed signatures), minus obs_dim, act_dim,
# action_low, action_high, device (from the environment and [train]) and the layer sizes
# (from [network]).
_AGENT_PARAMS: dict[str, dict[str, _Param]] = {
    "mpo": {
        "gamma": _number(0.99, 0.0, 1.0, low_open=True),
        "target_networks_update_period": _int(100, 1),
        "policy_lr": _number(3e-4, 0.0, low_open=True),
        "q_lr": _number(3e-4, 0.0, low_open=True),
        "kl_epsilon": _number(0.1, 0.0, low_open=True),
        "mstep_kl_epsilon": _number(0.1, 0.0, low_open=True),
        "temperature_init": _number(1.0, 0.0, low_open=True),
        "temperature_lr": _number(3e-4, 0.0, low_open=True),
        "lambda_init": _number(1.0, 0.0, low_open=True),
        "lambda_lr": _number(3e-4, 0.0, low_open=True),
        "epsilon_penalty": _number(0.001, 0.0),
        "max_grad_norm": _number(1.0, 0.0, low_open=True),
        "action_samples": _int(20, 1),
        "use_retrace": _bool(False),
        "retrace_steps": _int(2, 1),
        "retrace_mc_actions": _int(8, 1),
        "retrace_lambda": _number(0.95, 0.0, 1.0),
        **_AGENT_COMMON,
        "init_log_alpha_mean": _number(10.0),
        "init_log_alpha_stddev": _number(1000.0),
        "m_steps": _int(1, 1),
    },
    "trpo": {
        "gamma": _number(0.99, 0.0, 1.0, low_open=True),
        "gae_lambda": _number(0.95, 0.0, 1.0),
        "target_kl": _number(0.01, 0.0, low_open=True),
        "cg_iters": _int(10, 1),
        "cg_damping": _number(0.1, 0.0),
        "backtrack_coeff": _number(0.8, 0.0, 1.0, low_open=True, high_open=True),
        "backtrack_iters": _int(10, 1),
        "value_lr": _number(3e-4, 0.0, low_open=True),
        "value_epochs": _int(10, 1),
        "value_minibatch_size": _int(256, 1),
        "max_grad_norm": _number(0.5, 0.0, low_open=True),
        "normalize_advantages": _bool(True),
        **_AGENT_COMMON,
    },
}

_LAYERS_EXPECT = "a non-empty array of integers >= 1"
_SECTIONS: dict[str, dict[str, _Param]] = {
    "env": {
        "id": _Param("str", None, "a Gymnasium environment id such as \"Pendulum-v1\"", bool, required=True),
        "kwargs": _Param("table", {}, "a table of gymnasium.make keyword arguments"),
        "num_envs": _int(1, 1),
        "normalize_obs": _bool(False),
        "normalize_reward": _bool(False, algo="trpo"),
        "clip_obs": _number(10.0, 0.0, low_open=True),
    },
    "train": {
        "total_steps": _int(100_000, 1),
        "seed": _int(0, 0, 2**32 - 1),
        "device": _Param("str", "auto", _DEVICE_EXPECT, lambda v: bool(_DEVICE_RE.fullmatch(v))),
        "threads": _int(1, 1),
        "replay_size": _int(1_000_000, 1, algo="mpo"),
        "update_after": _int(1_000, 1, algo="mpo"),
        "batch_size": _int(256, 1, algo="mpo"),
        "updates_per_step": _number(1.0, 0.0, low_open=True, algo="mpo"),
        "rollout_steps": _int(1_024, 1, algo="trpo"),
    },
    "network": {
        "policy_layer_sizes": _Param("layers", {"mpo": (256, 256), "trpo": (64, 64)}, _LAYERS_EXPECT),
        "critic_layer_sizes": _Param("layers", {"mpo": (256, 256), "trpo": (64, 64)}, _LAYERS_EXPECT),
    },
    "mpo": _AGENT_PARAMS["mpo"],
    "trpo": _AGENT_PARAMS["trpo"],
    "eval": {
        "interval": _int(10_000, 0),
        "episodes": _int(10, 1),
    },
    "checkpoint": {
        "interval": _int(50_000, 0),
        "keep": _int(3, 1),
        "save_replay": _bool(True, algo="mpo"),
    },
}
_DATACLASSES = {"env": EnvConfig, "train": TrainConfig, "network": NetworkConfig, "eval": EvalConfig,
                "checkpoint": CheckpointConfig}


# --------------------------------------------------------------------------------------------
# TOML writing (the value types presets use: str, int, float, bool, arrays, inline tables)

_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")
_STRING_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_string(text: str) -> str:
    def escape(char: str) -> str:
        if char in _STRING_ESCAPES:
            return _STRING_ESCAPES[char]
        return f"\\u{ord(char):04X}" if ord(char) < 0x20 or ord(char) == 0x7F else char

    return '"' + "".join(escape(c) for c in text) + '"'


def _toml_key(key: str) -> str:
    return key if _BARE_KEY_RE.fullmatch(key) else _toml_string(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:_}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _show(value: Any) -> str:
    """A value as it would be written in TOML, for error messages."""
    try:
        return _toml_value(value)
    except TypeError:
        return str(value)


# --------------------------------------------------------------------------------------------
# Reading files, `extends` and provenance


def _display_path(path: Path) -> str:
    try:
        return os.path.relpath(path) if path.resolve().is_relative_to(Path.cwd().resolve()) else str(path)
    except ValueError:  # a different drive on Windows
        return str(path)


class _Origins:
    """Remembers which file or override set each key path, so errors name the right one."""

    def __init__(self, default: str) -> None:
        self.default = default
        self.by_path: dict[tuple[str, ...], str] = {}

    def mark(self, path: tuple[str, ...], value: Any, origin: str) -> None:
        self.by_path[path] = origin
        if isinstance(value, dict):
            for key, child in value.items():
                self.mark(path + (key,), child, origin)

    def of(self, path: tuple[str, ...]) -> str:
        for end in range(len(path), 0, -1):
            if path[:end] in self.by_path:
                return self.by_path[path[:end]]
        return self.default


def _where(path: tuple[str, ...]) -> str:
    """`("mpo", "kl_epsilon")` -> `[mpo] kl_epsilon`; `("algo",)` -> `algo`; `("env",)` -> `[env]`."""
    if len(path) == 1:
        return f"[{path[0]}]" if path[0] in _SECTIONS else path[0]
    return f"[{path[0]}] " + ".".join(path[1:])


def _deep_merge(base: dict, update: Mapping, origins: _Origins, update_origins: _Origins,
                prefix: tuple[str, ...] = ()) -> None:
    """Merge `update` into `base` in place: tables merge key by key, anything else is replaced."""
    for key, value in update.items():
        path = prefix + (key,)
        origins.by_path[path] = update_origins.of(path)
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value, origins, update_origins, path)
        else:
            base[key] = copy.deepcopy(value)
            origins.by_path.update({p: o for p, o in update_origins.by_path.items() if p[: len(path)] == path})


def _parse_toml(text: str, origin: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise PresetError(origin, "", f"invalid TOML: {error}") from None


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


def _resolve_extends(data: dict[str, Any], base_dir: Path, origin: str,
                     chain: tuple[Path, ...]) -> tuple[dict[str, Any], _Origins]:
    """Merge the `extends` bases (in order) under `data`; returns the merged table and origins."""
    extends = data.pop("extends", [])
    bases = [extends] if isinstance(extends, str) else extends
    if not isinstance(bases, list) or not all(isinstance(b, str) and b for b in bases):
        raise PresetError(origin, "extends", f"expected a path or an array of paths, got {_show(extends)}")
    merged: dict[str, Any] = {}
    origins = _Origins(origin)
    for base in bases:
        base_path = base_dir / base
        if not base_path.is_file():
            raise PresetError(origin, "extends", f"no such file {_toml_string(_display_path(base_path))}")
        if base_path.resolve() in chain:
            names = [_display_path(p) for p in chain[chain.index(base_path.resolve()):]]
            cycle = " -> ".join(names + [_display_path(base_path)])
            raise PresetError(origin, "extends", f"cycle: {cycle}")
        base_data, base_origins = _load_file_raw(base_path, chain)
        _deep_merge(merged, base_data, origins, base_origins)
    own_origins = _Origins(origin)
    own_origins.mark((), data, origin)
    _deep_merge(merged, data, origins, own_origins)
    return merged, origins


def _load_file_raw(path: Path, chain: tuple[Path, ...] = ()) -> tuple[dict[str, Any], _Origins]:
    origin = _display_path(path)
    data = _parse_toml(_read_text(path, origin), origin)
    return _resolve_extends(data, path.parent, origin, chain + (path.resolve(),))


# --------------------------------------------------------------------------------------------
# Validation


def _did_you_mean(word: str, candidates: Iterable[str], most: int = 1) -> str:
    close = [_toml_string(c) for c in difflib.get_close_matches(word, list(candidates), n=most, cutoff=0.6)]
    if not close:
        return ""
    listed = close[0] if len(close) == 1 else ", ".join(close[:-1]) + " or " + close[-1]
    return f" (did you mean {listed}?)"


def _first_unsupported(value: Any, path: tuple[str, ...]) -> tuple[tuple[str, ...], Any] | None:
    """(path, value) of the first value in a table that is not a string, number, boolean, array or
    table (TOML dates and times), or None."""
    if isinstance(value, dict):
        for key, child in value.items():
            bad = _first_unsupported(child, path + (key,))
            if bad:
                return bad
        return None
    if isinstance(value, list):
        for child in value:
            bad = _first_unsupported(child, path)
            if bad:
                return bad
        return None
    return None if isinstance(value, (str, int, float, bool)) else (path, value)


def _coerce(param: _Param, value: Any) -> Any:
    """The validated value, or ValueError(problem) naming what was expected and what was got."""
    got = f", got {_show(value)}"
    if param.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int) or not param.in_range(value):
            raise ValueError(f"expected {param.expect}{got}")
        return value
    if param.kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"expected {param.expect}{got}")
        if not math.isfinite(value):
            raise ValueError(f"expected {param.expect.replace('a number', 'a finite number', 1)}{got}")
        if not param.in_range(value):
            raise ValueError(f"expected {param.expect}{got}")
        return float(value)
    if param.kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"expected {param.expect}{got}")
        return value
    if param.kind == "str":
        if not isinstance(value, str) or not param.in_range(value):
            raise ValueError(f"expected {param.expect}{got}")
        return value
    if param.kind == "layers":
        if (not isinstance(value, list) or not value
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)):
            raise ValueError(f"expected {param.expect}{got}")
        return tuple(value)
    if param.kind == "table":
        if not isinstance(value, dict):
            raise ValueError(f"expected {param.expect}{got}")
        return copy.deepcopy(value)
    raise AssertionError(param.kind)


def _validate(raw: Mapping[str, Any], origins: _Origins, fallback_name: str) -> Preset:
    def fail(path: tuple[str, ...], problem: str) -> PresetError:
        return PresetError(origins.of(path), _where(path), problem)

    known_top = list(_TOP) + list(_SECTIONS)
    for key, value in raw.items():
        if key == "extends":
            raise fail((key,), "only allowed in a preset file")
        if key not in known_top:
            where = f"[{key}]" if isinstance(value, dict) else key
            raise PresetError(origins.of((key,)), where, "unknown key" + _did_you_mean(key, known_top))
        if key in _SECTIONS and not isinstance(value, dict):
            raise fail((key,), f"expected a table, got {_show(value)}")

    if "algo" not in raw:
        raise fail(("algo",), f"missing (expected {_TOP['algo'].expect})")
    top: dict[str, Any] = {}
    for key, param in _TOP.items():
        if key in raw:
            try:
                top[key] = _coerce(param, raw[key])
            except ValueError as error:
                raise fail((key,), str(error)) from None
    algo = top["algo"]
    name = top.get("name") or (fallback_name if _NAME_RE.fullmatch(fallback_name) else "preset")

    sections: dict[str, dict[str, Any]] = {}
    for section, params in _SECTIONS.items():
        table = raw.get(section, {})
        if section in ALGOS and section != algo and section in raw:
            raise fail((section,), f'this table is for algo "{section}", but the preset has algo "{algo}"')
        values: dict[str, Any] = {}
        for key, value in table.items():
            path = (section, key)
            if key not in params:
                raise fail(path, "unknown key" + _did_you_mean(key, params))
            param = params[key]
            if param.algo is not None and param.algo != algo:
                raise fail(path, f'only used by algo "{param.algo}", but the preset has algo "{algo}"')
            try:
                values[key] = _coerce(param, value)
            except ValueError as error:
                raise fail(path, str(error)) from None
        for key, param in params.items():
            if key not in values and (param.algo is None or param.algo == algo):
                if param.required:
                    raise fail((section, key), f"missing (expected {param.expect})")
                values[key] = copy.deepcopy(param.default_for(algo))
        sections[section] = {key: values[key] for key in params if key in values}  # schema order

    env, train = sections["env"], sections["train"]
    bad = _first_unsupported(env["kwargs"], ("env", "kwargs"))
    if bad:
        raise fail(bad[0], f"expected a string, number, boolean, array or table, got {_show(bad[1])}")
    _check_env_id(env["id"], origins.of(("env", "id")))
    if algo == "mpo":
        if train["update_after"] < train["batch_size"]:
            raise fail(("train", "update_after"),
                       f"expected an integer >= [train] batch_size ({train['batch_size']}), got {train['update_after']}")
        if train["replay_size"] < train["update_after"]:
            raise fail(("train", "replay_size"),
                       f"expected an integer >= [train] update_after ({train['update_after']}), got {train['replay_size']}")

    return Preset(
        name=name,
        description=top.get("description", ""),
        algo=algo,
        env=EnvConfig(**env),
        train=TrainConfig(**train),
        network=NetworkConfig(**sections["network"]),
        agent=sections[algo],
        eval=EvalConfig(**sections["eval"]),
        checkpoint=CheckpointConfig(**sections["checkpoint"]),
        source=origins.default,
    )


def _check_env_id(env_id: str, origin: str) -> None:
    import gymnasium

    if env_id not in gymnasium.registry:
        raise PresetError(origin, "[env] id",
                          f"unknown environment {_toml_string(env_id)}" + _did_you_mean(env_id, gymnasium.registry, 3))


def _mujoco_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("mujoco") is not None


def _check_action_space(preset: Preset, origin: str) -> None:
    import gymnasium

    env_id = preset.env.id
    entry_point = gymnasium.spec(env_id).entry_point
    needs_mujoco = isinstance(entry_point, str) and entry_point.startswith("gymnasium.envs.mujoco")
    mujoco_missing = PresetError(origin, "[env] id", f"{_toml_string(env_id)} needs MuJoCo: {MUJOCO_EXTRA_HINT}")
    if needs_mujoco and not _mujoco_installed():
        raise mujoco_missing
    try:
        env = gymnasium.make(env_id, **preset.env.kwargs)
    except gymnasium.error.DependencyNotInstalled as error:
        if needs_mujoco or "mujoco" in str(error).lower():
            raise mujoco_missing from None
        raise PresetError(origin, "[env] id", f"cannot create {_toml_string(env_id)}: {error}") from None
    except Exception as error:  # noqa: BLE001 - any failure of a third-party constructor is bad input
        where = "[env] kwargs" if preset.env.kwargs else "[env] id"
        raise PresetError(origin, where, f"gymnasium.make({_toml_string(env_id)}) failed: "
                                         f"{type(error).__name__}: {error}") from None
    try:
        space = env.action_space
    finally:
        env.close()
    if not isinstance(space, gymnasium.spaces.Box):
        raise PresetError(origin, "[env] id", f"{_toml_string(env_id)} has a {type(space).__name__} action space; "
                                              "MPO and TRPO need a continuous (Box) action space")


def check_action_space(preset: Preset) -> None:
    """Make the environment once and check that its action space is a Box.

    Raises PresetError naming the `mujoco` extra when a MuJoCo id is used without it installed.
    """
    _check_action_space(preset, preset.source)


# --------------------------------------------------------------------------------------------
# Overrides


def _string_param(path: tuple[str, ...]) -> bool:
    if len(path) == 1:
        return path[0] in _TOP and _TOP[path[0]].kind == "str"
    param = _SECTIONS.get(path[0], {}).get(path[1])
    return len(path) == 2 and param is not None and param.kind == "str"


def _apply_override(raw: dict[str, Any], origins: _Origins, override: str) -> None:
    key, equals, text = override.partition("=")
    key = key.strip()
    label = f"--set {key or override}"
    path = tuple(key.split("."))
    if not equals or not all(_BARE_KEY_RE.fullmatch(part) for part in path):
        raise PresetError(label, "", f"expected section.key=value, got {_toml_string(override)}")
    try:
        parsed = tomllib.loads(f"v = {text}")
        value = parsed["v"] if list(parsed) == ["v"] else text.strip()
    except tomllib.TOMLDecodeError:
        value = text.strip()  # a bare word: only a string field will accept it
    if _string_param(path) and not isinstance(value, str):
        value = text.strip()

    node = raw
    for depth, part in enumerate(path[:-1]):
        if part not in node:
            node[part] = {}
            origins.by_path[path[: depth + 1]] = label  # a table the override brings in
        child = node[part]
        if not isinstance(child, dict):
            raise PresetError(label, _where(path[: depth + 1]), f"is {_show(child)}, not a table")
        node = child
    last = path[-1]
    if isinstance(value, dict) and isinstance(node.get(last), dict):
        update_origins = _Origins(label)
        update_origins.mark(path, value, label)
        _deep_merge(node[last], value, origins, update_origins, path)
    else:
        node[last] = value
    origins.mark(path, value, label)


def _preset_to_raw(preset: Preset) -> dict[str, Any]:
    """The resolved preset as a TOML-shaped dict (only the keys that apply to its algo)."""
    raw: dict[str, Any] = {"name": preset.name, "description": preset.description, "algo": preset.algo}
    for section, params in _SECTIONS.items():
        if section in ALGOS:
            if section == preset.algo:
                raw[section] = copy.deepcopy(preset.agent)
            continue
        config = getattr(preset, section)
        raw[section] = {
            key: list(getattr(config, key)) if param.kind == "layers" else copy.deepcopy(getattr(config, key))
            for key, param in params.items()
            if param.algo is None or param.algo == preset.algo
        }
    return raw


def apply_overrides(preset: Preset, overrides: Iterable[str]) -> Preset:
    """Apply `section.key=value` overrides (values parsed as TOML) and validate the result."""
    raw = _preset_to_raw(preset)
    origins = _Origins(preset.source)
    for override in overrides:
        _apply_override(raw, origins, override)
    return _validate(raw, origins, preset.name)


# --------------------------------------------------------------------------------------------
# Public loading API


def preset_from_toml_text(text: str, source: str = "<text>") -> Preset:
    """Validate preset TOML text; `extends` paths are relative to `source`'s folder."""
    data = _parse_toml(text, source)
    raw, origins = _resolve_extends(data, Path(source).parent, source, ())
    return _validate(raw, origins, Path(source).stem)


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


def _preset_files() -> dict[str, Path]:
    """Listable presets by name (files not starting with "_"), ./presets shadowing bundled ones."""
    files: dict[str, Path] = {}
    for directory in _search_dirs():
        for path in sorted(directory.glob("*.toml")):
            if not path.name.startswith("_"):
                files.setdefault(path.stem, path)
    return files


def find_preset(name: str) -> Path:
    """The file of the preset called `name`: ./presets/<name>.toml, else the bundled one."""
    for directory in _search_dirs():
        path = directory / f"{name}.toml"
        if path.is_file():
            return path
    searched = ", ".join(_display_path(d) for d in _search_dirs()) or "no preset folder found"
    raise PresetError("", "", f"no preset named {_toml_string(name)}"
                              f"{_did_you_mean(name, _preset_files())}; searched {searched}")


def load_preset(path_or_name: str | os.PathLike[str], overrides: Iterable[str] = (), *,
                check_env: bool = True) -> Preset:
    """Load a preset file (any path) or a preset name, apply overrides and validate it all.

    With `check_env`, the environment is made once to check its action space (see
    `check_action_space`).
    """
    text = os.fspath(path_or_name)
    path = Path(text)
    if not path.is_file():
        if "/" in text or os.sep in text or text.endswith(".toml"):
            raise PresetError(_display_path(path), "", "no such file")
        path = find_preset(text)
    raw, origins = _load_file_raw(path)
    for override in overrides:
        _apply_override(raw, origins, override)
    preset = _validate(raw, origins, path.stem)
    if check_env:
        _check_action_space(preset, origins.of(("env", "id")))
    return preset


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
    raw = _preset_to_raw(preset)
    lines = [f"# Resolved rltui preset (from {preset.source})."]
    lines += [f"{key} = {_toml_value(raw[key])}" for key in _TOP]
    for section in _SECTIONS:
        if section in raw:
            lines += ["", f"[{section}]"]
            lines += [f"{_toml_key(key)} = {_toml_value(value)}" for key, value in raw[section].items()]
    return "\n".join(lines) + "\n"


def resolve_device(spec: str) -> str:
    """"auto" -> "cuda" when CUDA is available, else "cpu"; "cuda[:N]" is checked to exist."""
    if not isinstance(spec, str) or not _DEVICE_RE.fullmatch(spec):
        raise PresetError("", "[train] device", f"expected {_DEVICE_EXPECT}, got {_show(spec)}")
    if spec == "cpu":
        return spec
    import torch

    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise PresetError("", "[train] device", f'"{spec}" was requested but CUDA is not available; use "auto" or "cpu"')
    index = int(spec.partition(":")[2] or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise PresetError("", "[train] device", f'"{spec}" was requested but there are only {count} CUDA device(s)')
    return spec
