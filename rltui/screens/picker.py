"""Preset picker (`rltui` with no arguments): algorithm, preset or file, resolved values, Start.

Presets are previewed without making their environment (fast); Start validates fully
(including the environment) and posts `PickerScreen.StartRequested` with the preset. The app
creates the run off the UI thread and reports a failure back through `show_error`. Every error
lands in the preview pane as one line; nothing here raises into the app.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from pathlib import Path

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, OptionList, RadioButton, RadioSet, Static
from textual.widgets.option_list import Option

from rltui.presets import (
    DEFAULT_PRESETS,
    Preset,
    PresetError,
    PresetInfo,
    agent_settings_in_effect,
    list_presets,
    load_preset,
    resolve_device,
)

ALGOS = ("mpo", "trpo")
PresetLoader = Callable[..., Preset]  # (path_or_name, overrides: list[str], *, check_env: bool) -> Preset


def _layers(sizes: tuple[int, ...]) -> str:
    return "×".join(str(n) for n in sizes) or "linear"


def toml_value(value: object) -> str:
    """A value as a preset file spells it: true, 0.001, "adam", [64, 64], { g = 9.0 }."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }" if value else "{}"
    return str(value)


def _on_off(flag: bool) -> str:
    return "on" if flag else "off"


def describe_preset(preset: Preset, path: str, device: str) -> Group:
    """The resolved values shown in the picker's preview pane."""
    env, train = preset.env, preset.train
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    table.add_row("file", path)
    table.add_row(
        "env",
        f"{env.id} ×{env.num_envs}  obs-norm {_on_off(env.normalize_obs)}"
        f"  reward-norm {_on_off(env.normalize_reward)}"
        + (f"  kwargs {toml_value(dict(env.kwargs))}" if env.kwargs else ""),
    )
    table.add_row("steps", f"{train.total_steps:,}  seed {train.seed}  threads {train.threads}")
    table.add_row("device", device)
    table.add_row(
        "network",
        f"policy {_layers(preset.network.policy_layer_sizes)}  critic {_layers(preset.network.critic_layer_sizes)}",
    )
    if preset.algo == "mpo":
        table.add_row(
            "updates",
            f"batch {train.batch_size}  replay {train.replay_size:,}  after {train.update_after:,}"
            f"  {train.updates_per_step:g}/step",
        )
    else:
        table.add_row("rollout", f"{train.rollout_steps:,} steps × {env.num_envs} env per update")
    table.add_row("eval", f"every {preset.eval.interval:,} steps, {preset.eval.episodes} episodes")
    ck = preset.checkpoint
    replay = f", replay {'yes' if ck.save_replay else 'no'}" if preset.algo == "mpo" else ""  # TRPO has none
    table.add_row("checkpoint", f"every {ck.interval:,} steps, keep {ck.keep}{replay}")
    agent = Table.grid(padding=(0, 2))
    agent.add_column(overflow="fold")
    agent.add_column(no_wrap=True)
    for key, value in sorted(agent_settings_in_effect(preset).items()):  # lambda_init is ignored: not shown
        agent.add_row(key, toml_value(value))
    return Group(table, Text(f"\n[{preset.algo}]", style="bold"), agent)


class PickerScreen(Screen[None]):
    BINDINGS = [
        Binding("ctrl+s", "start", "Start", priority=True),
        Binding("ctrl+r", "runs", "Runs", priority=True, tooltip="browse and compare the runs under the saves folder"),
        Binding("escape", "app.quit", "Quit"),
    ]

    class RunsRequested(Message):
        """Show the runs browser (the runs under the saves directory)."""

    class StartRequested(Message):
        """Start a run of `preset` (validated, its environment made once)."""

        def __init__(self, preset: Preset) -> None:
            super().__init__()
            self.preset = preset

    def __init__(
        self,
        *,
        lister: Callable[[], list[PresetInfo]] = list_presets,
        loader: PresetLoader = load_preset,
        device_resolver: Callable[[str], str] = resolve_device,
    ) -> None:
        super().__init__()
        self._lister = lister
        self._loader = loader
        self._resolve_device = device_resolver
        self._infos: list[PresetInfo] = []
        self.algo = ALGOS[0]
        self.path: str | None = None  # what the preview shows, as typed or listed
        self.preset: Preset | None = None
        self.error: str | None = None  # the message the preview pane shows instead of a preset
        self.starting = False  # a run is being created: further starts are ignored
        self._typed_last = False  # the path box, not the list, was changed last
        self._devices: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        yield Static("rltui · choose MPO or TRPO, then a preset or a file · Enter starts", id="picker-title")
        with Horizontal(id="picker-body"):
            with Vertical(id="picker-left"):
                with RadioSet(id="algo", compact=True):
                    yield RadioButton("MPO", value=True)
                    yield RadioButton("TRPO")
                yield OptionList(id="presets", compact=True)
                yield Input(placeholder="or a preset file path (Enter)", id="path", compact=True)
                yield Input(placeholder="seed (the preset's)", id="seed", type="integer", compact=True)
                yield Input(placeholder="total steps (the preset's)", id="total-steps", type="integer",
                            compact=True)
                yield Input(placeholder="overrides: mpo.policy_lr=1e-4 …", id="overrides", compact=True)
                yield Button("Start", id="start", variant="primary", compact=True)
            with VerticalScroll(id="picker-right"):
                yield Static(id="preview")
        yield Footer()

    def on_mount(self) -> None:
        try:
            self._infos = self._lister()
        except Exception as error:  # a broken presets folder must not stop the picker
            self._infos = []
            self._show_error(f"cannot list presets: {error}")
        self._fill_list()
        self.query_one("#presets", OptionList).focus()

    # ---- choosing ---------------------------------------------------------------------------
    def _fill_list(self) -> None:
        options = self.query_one("#presets", OptionList)
        options.clear_options()
        default = 0
        for info in self._infos:
            if info.algo == self.algo or info.error:
                if info.name == DEFAULT_PRESETS[self.algo]:
                    default = options.option_count
                label = info.name if not info.error else f"{info.name} (invalid)"
                options.add_option(Option(label, id=str(info.path)))
        if options.option_count:
            options.highlighted = default
        else:
            self._show_error(f"no {self.algo.upper()} presets found in ./presets or the bundled folder")

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        self.algo = ALGOS[event.index]
        self._fill_list()
        self._preview_listed()  # (the highlighted index may not have changed: no event for it)

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self._typed_last = False  # the list was touched last: it is what Start starts
        if event.option.id is not None:
            self._preview(event.option.id, self._display_path(Path(event.option.id)))

    def _preview_listed(self) -> None:
        """Show the highlighted preset (after the list or the typed path changed)."""
        options = self.query_one("#presets", OptionList)
        if options.highlighted is not None:
            option_id = options.get_option_at_index(options.highlighted).id
            if option_id is not None:
                self._preview(option_id, self._display_path(Path(option_id)))

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "path":
            self._typed_last = bool(event.value.strip())
            if not event.value.strip() and self.path is not None and self.error is not None:
                self._preview_listed()  # the bad path was erased: its error goes with it
        elif self.path is not None:  # seed, total steps, overrides: the preview follows them
            self._preview(self.path, self._shown_path())

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.action_start()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "path":
            self.action_start()
            return
        path = event.value.strip()
        if path:
            self._preview(path, path)
            if self.preset is not None:
                self.query_one("#start", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "start":
            self.action_start()

    def action_runs(self) -> None:
        self.post_message(self.RunsRequested())

    @staticmethod
    def _display_path(path: Path) -> str:
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            return str(path)

    # ---- preview ----------------------------------------------------------------------------
    def overrides(self) -> list[str]:
        """What the seed, total steps and overrides boxes add, as `--set` strings."""
        values = []
        seed = self.query_one("#seed", Input).value.strip()
        if seed:
            values.append(f"train.seed={seed}")
        steps = self.query_one("#total-steps", Input).value.strip()
        if steps:
            values.append(f"train.total_steps={steps}")
        try:
            values += shlex.split(self.query_one("#overrides", Input).value)
        except ValueError as error:  # an unclosed quote: said as the others are
            values.append(f"--overrides: {error}")
        return values

    def _preview(self, path: str, shown: str) -> None:
        self.path = path
        try:
            preset = self._loader(path, self.overrides(), check_env=False)
        except PresetError as error:
            self.preset = None
            self._show_error(str(error))
            return
        except OSError as error:
            self.preset = None
            self._show_error(f"{shown}: {error.strerror or error}")
            return
        self.preset = preset
        self.error = None
        device = preset.train.device
        if device in self._devices:
            device_text = f"{device} → {self._devices[device]}"
        else:
            device_text = device
            self._resolve_in_background(device)
        title = Text()
        title.append(preset.name, "bold")
        title.append(f"  {preset.algo.upper()}\n", "bold cyan")
        title.append(preset.description + "\n", "italic")
        self.query_one("#preview", Static).update(Group(title, describe_preset(preset, shown, device_text)))

    @work(thread=True, exclusive=True, group="device")
    def _resolve_in_background(self, spec: str) -> None:
        """Resolving "auto" imports torch (a second or two): done off the UI thread."""
        try:
            resolved = self._resolve_device(spec)
        except PresetError as error:
            resolved = f"invalid: {error}"
        self.app.call_from_thread(self._device_resolved, spec, resolved)

    def _device_resolved(self, spec: str, resolved: str) -> None:
        self._devices[spec] = resolved
        if self.preset is not None and self.preset.train.device == spec and self.path is not None:
            self._preview(self.path, self._shown_path())

    def _shown_path(self) -> str:
        assert self.path is not None
        path = Path(self.path)
        return self._display_path(path) if path.is_absolute() else self.path

    def show_error(self, message: str) -> None:
        """Show `message` in the preview pane (also used by the app when creating the run fails)."""
        self.starting = False
        self._show_error(message)

    def _show_error(self, message: str) -> None:
        self.error = message
        self.query_one("#preview", Static).update(Text(message, style="bold red"))

    # ---- start ------------------------------------------------------------------------------
    def action_start(self) -> None:
        if self.starting:
            return
        typed = self.query_one("#path", Input).value.strip()
        if self._typed_last and typed and typed != self.path:  # Start starts what was typed, Enter or not
            self._preview(typed, typed)
        if self.path is None:
            self._show_error("choose a preset first")
            return
        try:
            preset = self._loader(self.path, self.overrides(), check_env=True)
        except PresetError as error:
            self._show_error(str(error))
            return
        except OSError as error:
            self._show_error(f"{self.path}: {error.strerror or error}")
            return
        self.starting = True
        self.query_one("#preview", Static).update(Text(f"creating the run for {preset.name}…", style="bold"))
        self.post_message(self.StartRequested(preset))
