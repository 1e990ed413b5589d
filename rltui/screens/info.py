"""Run information (`i` in the dashboard): the run's run.json in readable form, over the dashboard.

What it shows is read from the run directory when the screen opens: run.json (rltui.runmeta) and
the preset name and seed of preset.toml, so a live run, an attached one and a watched one show the
same thing, and a run made before run.json existed still shows its directory, preset and seed.
`info_rows` turns those into (label, text) rows; it is pure and reads nothing.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from rltui.runlog import display_path
from rltui.runmeta import RUN_META_FILE, read_run_meta

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

PRESET_FILE = "preset.toml"
NONE = "—"
VERSION_ORDER = ("rltui", "python", "torch", "gymnasium", "numpy", "mujoco")


@dataclass(frozen=True)
class RunFacts:
    """What the info screen shows of one run, as read from its directory."""

    run_dir: Path
    meta: Mapping[str, Any] | None  # run.json; None when absent or unreadable
    meta_present: bool  # a run.json file exists (None above then means it is unreadable)
    preset: Mapping[str, Any]  # name, algo, env_id, seed: from preset.toml, else run.json, else {}


def read_run_facts(run_dir: Path, name: str | None = None) -> RunFacts:
    """run.json and preset.toml of `run_dir` (`name`: the preset name to show when neither says it)."""
    run_dir = Path(run_dir)
    meta = read_run_meta(run_dir)
    preset: dict[str, Any] = {}
    if meta is not None and isinstance(meta.get("preset"), Mapping):
        preset.update(meta["preset"])
    preset.update(_preset_toml_facts(run_dir / PRESET_FILE))
    if name and not preset.get("name"):
        preset["name"] = name
    return RunFacts(run_dir, meta, (run_dir / RUN_META_FILE).exists(), preset)


def _preset_toml_facts(path: Path) -> dict[str, Any]:
    """name, algo, env_id and seed of a resolved preset.toml ({} when it cannot be read)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}
    env, train = data.get("env"), data.get("train")
    facts = {
        "name": data.get("name"),
        "algo": data.get("algo"),
        "env_id": env.get("id") if isinstance(env, dict) else None,
        "seed": train.get("seed") if isinstance(train, dict) else None,
    }
    return {key: value for key, value in facts.items() if value is not None}


def info_rows(facts: RunFacts) -> list[tuple[str, str]]:
    """(label, text) rows: the run, then its creation, then each resume."""
    preset = facts.preset
    what = ", ".join(_text(preset[key]) for key in ("algo", "env_id") if preset.get(key) is not None)
    rows = [
        ("run directory", display_path(facts.run_dir)),
        ("preset", _text(preset.get("name")) + (f" ({what})" if what else "")),
        ("seed", _text(preset.get("seed"))),
    ]
    meta = facts.meta
    if meta is None:
        why = ("unreadable (not a run.json)" if facts.meta_present
               else "none (this run was made before rltui recorded one)")
        return [*rows, (RUN_META_FILE, why)]
    rows += _session_rows(meta, started="started")
    if meta.get("resumed_from") is not None:
        rows.append(("started from", _json(meta["resumed_from"])))
    rows.append(("sweep", NONE if meta.get("sweep") is None else _json(meta["sweep"])))
    resumes = meta.get("resumes")
    resumes = resumes if isinstance(resumes, list) else []
    rows.append(("resumes", str(len(resumes)) if resumes else "none"))
    for number, resume in enumerate(resumes, 1):
        if not isinstance(resume, Mapping):
            continue
        source = f"{_text(resume.get('checkpoint'))} (step {_step(resume.get('step'))})"
        rows.append((f"resume {number}", f"from {source}"))
        rows += [("", f"{label}: {text}") for label, text in _session_rows(resume, started="at")]
    rows.append(("schema", _text(meta.get("schema"))))
    return rows


def _session_rows(session: Mapping[str, Any], started: str) -> list[tuple[str, str]]:
    """The rows of one process that started or resumed the run (the session keys of run.json)."""
    device = _text(session.get("device"))
    if session.get("gpu"):
        device += f" ({_text(session['gpu'])})"
    return [
        (started, _text(session.get("start_time"))),
        ("host", _text(session.get("hostname"))),
        ("device", device),
        ("command", _command(session.get("command"))),
        ("directory", _text(session.get("cwd"))),
        ("git", _git(session.get("git"))),
        ("versions", _versions(session.get("versions"))),
    ]


def _text(value: Any) -> str:
    if value is None:
        return NONE
    return value if isinstance(value, str) else _json(value)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _step(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else _text(value)


def _command(command: Any) -> str:
    if isinstance(command, list) and all(isinstance(part, str) for part in command):
        return shlex.join(command)
    return _text(command)


def _git(git: Any) -> str:
    if git is None:
        return "not a git repository (or git unavailable)"
    if not isinstance(git, Mapping):
        return _text(git)
    dirty = git.get("dirty")
    state = " (dirty: uncommitted changes)" if dirty is True else " (clean)" if dirty is False else ""
    return _text(git.get("commit")) + state


def _versions(versions: Any) -> str:
    if not isinstance(versions, Mapping):
        return _text(versions)
    names = [n for n in VERSION_ORDER if n in versions] + sorted(set(versions) - set(VERSION_ORDER))
    return ", ".join(f"{name} {_text(versions[name])}" for name in names)


class InfoScreen(ModalScreen[None]):
    """The run's information (see the module doc); Esc or `i` closes it."""

    CSS_PATH = "info.tcss"
    BINDINGS = [
        Binding("escape", "dismiss", "Close"),
        Binding("i", "dismiss", "Close", show=False),
        Binding("q", "dismiss", "Close", show=False),
    ]

    def __init__(self, facts: RunFacts) -> None:
        super().__init__()
        self.facts = facts

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True)
        table.add_column(overflow="fold")
        for label, text in info_rows(self.facts):
            table.add_row(label, text)
        with VerticalScroll(id="info-box"):
            yield Static("Run information", id="info-title")
            yield Static(table, id="info-rows")
            yield Static(f"From {RUN_META_FILE} and {PRESET_FILE} in the run directory. Esc closes.", id="info-foot")
