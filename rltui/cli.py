"""Command-line entry point (`rltui`, `python -m rltui`).

    rltui                                   preset picker, then the dashboard
    rltui train PRESET [--set k=v]... [--seed N] [--device D] [--saves DIR] [--headless]
    rltui resume RUN_DIR [--headless] [--set k=v]...
    rltui eval RUN_DIR|CHECKPOINT_DIR [--episodes N] [--stochastic] [--seed N] [--json] [--best]
    rltui presets [--check FILE...]
    rltui watch RUN_DIR
    rltui ps [DIR] [--json]
    rltui runs [DIR...]
    rltui compare RUN_DIR...
    rltui export RUN_OR_DIR... [--out FILE]
    rltui report RUN_OR_DIR... --out DIR
    rltui sweep PRESET [--seeds 0-4] [--grid section.key=v1,v2]... [--set k=v]... [--scheduler fifo|asha] ...
    rltui sweep --resume SWEEP_DIR

Exit status: 0 ok, 2 bad input (preset, override, path, checkpoint, flag), 1 training failure.
Errors are one line on stderr, `error: <message>`, without a traceback.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, Protocol, TextIO

from rltui import __version__
from rltui.commands import Stop
from rltui.events import Event, RunState

if TYPE_CHECKING:
    from rltui.engine import Engine
    from rltui.history import MetricsHistory

DEFAULT_REFRESH_HZ = 4.0
TTY_REDRAW_S = 0.25
PLAIN_LINE_FRACTION = 0.05
RECENT_RETURNS = 10  # episodes the progress line and the summary average the return over
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class UsageError(Exception):
    """Bad input found by the CLI itself; str() is the one-line message."""


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (exit status 2, as argparse does)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see '{self.prog} --help')\n")


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= `minimum`, else a one-line error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value

    return parse


MIN_REFRESH_HZ, MAX_REFRESH_HZ = 0.1, 60.0


def _refresh_hz(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (MIN_REFRESH_HZ <= value <= MAX_REFRESH_HZ):
        raise argparse.ArgumentTypeError(
            f"expected a number in [{MIN_REFRESH_HZ:g}, {MAX_REFRESH_HZ:g}], got {_shown(text)}")
    return value


def _path_arg(text: str) -> Path:
    """An argparse type: a non-empty path (Path("") would silently mean the current directory)."""
    if not text:
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    return Path(text)


def _shown(text: str, limit: int = 40) -> str:
    """repr() of a command-line value for an error message, cut to `limit` characters."""
    shown = repr(os.fsencode(text).decode("utf-8", "backslashreplace"))
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def _add_ui_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--refresh-hz", type=_refresh_hz, default=DEFAULT_REFRESH_HZ, metavar="HZ",
                        help=f"dashboard redraws per second (default {DEFAULT_REFRESH_HZ:g})")
    parser.add_argument("--no-mouse", action="store_true", help="do not capture the mouse in the dashboard")


def _add_set_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=None, metavar="SECTION.KEY=VALUE",
                        help="override a preset value (a TOML literal); repeatable")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rltui", description="Train MPO and TRPO agents and watch them live in the terminal.")
    parser.add_argument("--version", action="version", version=f"rltui {__version__}")
    parser.add_argument("--saves", type=_path_arg, default=Path("saves"), metavar="DIR",
                        help="where new runs are created (default ./saves)")
    _add_ui_options(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = commands.add_parser("train", help="start a new run from a preset")
    train.add_argument("preset", metavar="PRESET", help="preset name (see `rltui presets`) or path to a .toml file")
    _add_set_option(train)
    train.add_argument("--seed", type=_int_at_least(0), help="sets [train] seed (like --set train.seed=N)")
    train.add_argument("--device", help="sets [train] device: auto, cpu, cuda, cuda:N (checked to exist)")
    train.add_argument("--saves", type=_path_arg, default=argparse.SUPPRESS, metavar="DIR",
                       help="where the run directory is created (default ./saves)")
    train.add_argument("--headless", action="store_true", help="no dashboard: a progress line on stderr")
    _add_detach_options(train)
    _add_ui_options(train)

    resume = commands.add_parser("resume", help="continue a run from its latest checkpoint")
    resume.add_argument("run_dir", type=_path_arg, metavar="RUN_DIR")
    _add_set_option(resume)
    resume.add_argument("--headless", action="store_true", help="no dashboard: a progress line on stderr")
    _add_detach_options(resume)
    _add_ui_options(resume)

    evaluate = commands.add_parser("eval", help="evaluate a saved agent")
    evaluate.add_argument("path", type=_path_arg, metavar="RUN_DIR|CHECKPOINT_DIR")
    evaluate.add_argument("--episodes", type=_int_between(1, MAX_EVAL_EPISODES), default=10,
                          help=f"episodes to run (default 10, at most {MAX_EVAL_EPISODES})")
    evaluate.add_argument("--stochastic", action="store_true", help="sample actions instead of the mean action")
    evaluate.add_argument("--seed", type=_int_between(0, MAX_EVAL_SEED),
                          help="base seed (default: the run's seed, i.e. the episodes of its evaluations)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--best", action="store_true",
                          help="evaluate the run's best checkpoint (checkpoints/best) instead of its latest")
    evaluate.add_argument("--video", type=_path_arg, metavar="FILE.mp4|FILE.gif",
                          help="record the episodes' rendered frames (extra `video`; MuJoCo: MUJOCO_GL=egl or osmesa)")

    presets = commands.add_parser("presets", help="list the presets, or check preset files")
    presets.add_argument("--check", nargs="+", type=_path_arg, metavar="FILE", help="validate these files")

    watch = commands.add_parser("watch", help="follow a run's metrics.jsonl in the dashboard (read-only)")
    watch.add_argument("run_dir", type=_path_arg, metavar="RUN_DIR")
    _add_ui_options(watch)

    attach = commands.add_parser("attach", help="the full dashboard of a run owned by another process")
    attach.add_argument("run_dir", nargs="?", type=_path_arg, metavar="RUN_DIR",
                        help="a live run (default: the only live run under --saves, or a choice among them)")
    attach.add_argument("--saves", type=_path_arg, default=argparse.SUPPRESS, metavar="DIR",
                        help="where to look for live runs without RUN_DIR (default ./saves)")
    _add_ui_options(attach)

    ps = commands.add_parser("ps", help="list the live runs (those whose control socket answers)")
    ps.add_argument("dir", nargs="?", type=_path_arg, default=Path("saves"), metavar="DIR",
                    help="where to look, recursively (default ./saves; a run directory works too)")
    ps.add_argument("--json", action="store_true", help="print a JSON array of the runs' status")
    _add_browser_commands(commands)
    _add_export_and_report(commands)
    _add_sweep_parser(commands)
    return parser


def _add_browser_commands(commands: argparse._SubParsersAction) -> None:
    runs = commands.add_parser("runs", help="browse, sort, filter, open and compare the runs under directories")
    runs.add_argument("dirs", nargs="*", type=_path_arg, metavar="DIR",
                      help="where to look, recursively (default ./saves; a run directory works too)")
    _add_ui_options(runs)
    compare = commands.add_parser("compare", help="several runs' charts overlaid (live runs keep moving)")
    compare.add_argument("run_dirs", nargs="+", type=_path_arg, metavar="RUN_DIR")
    _add_ui_options(compare)


def _add_export_and_report(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser("export", help="runs' metrics as one tidy CSV (run, step, time, event, metric, value)")
    export.add_argument("paths", nargs="+", type=_path_arg, metavar="RUN_OR_DIR",
                        help="a run directory, or a directory searched for runs")
    export.add_argument("--out", type=_path_arg, metavar="FILE", help="write the CSV to FILE (default: stdout)")
    report = commands.add_parser("report", help="a Markdown table and a plot of runs' evaluation returns, "
                                                "seeds grouped (needs the 'report' extra)")
    report.add_argument("paths", nargs="+", type=_path_arg, metavar="RUN_OR_DIR",
                        help="a run directory, or a directory searched for runs")
    report.add_argument("--out", type=_path_arg, required=True, metavar="DIR",
                        help="where report.md and eval_returns.png are written (created if missing)")


def _add_detach_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--detach", action="store_true",
                        help="run headless in the background (output to RUN_DIR/output.log) and return at once")
    parser.add_argument("--detached-child", type=int, default=None, help=argparse.SUPPRESS)  # (the background side)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    args.command_line = _command_line(sys.argv[1:] if argv is None else argv)
    handlers = {
        None: _cmd_default, "train": _cmd_train, "resume": _cmd_resume, "eval": _cmd_eval,
        "presets": _cmd_presets, "watch": _cmd_watch, "ps": _cmd_ps, "attach": _cmd_attach,
        "compare": _cmd_compare, "runs": _cmd_runs,
        "export": _cmd_export, "report": _cmd_report,
        "sweep": _cmd_sweep,
    }
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every error ends as one line
        text = _printable(" ".join(_error_text(exc).split()))
        if _is_bad_input(exc):
            print(f"error: {text or type(exc).__name__}", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(f"error: {type(exc).__name__}: {text}", file=sys.stderr)
        return EXIT_FAILED


def _command_line(argv: list[str]) -> list[str]:
    """The command as run.json records it: `rltui` and its arguments, without the internal option
    of a detached run's background side."""
    return ["rltui", *(arg for arg in argv if not arg.startswith("--detached-child"))]


def _printable(text: str) -> str:
    """Bytes of non-UTF-8 file names (surrogate escapes in str) shown as \\xNN."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that is no escaped byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _error_text(exc: Exception) -> str:
    """An OSError as `PATH: reason` (not Python's `[Errno N] Reason: 'PATH'`), anything else as is."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{os.fsdecode(exc.filename)}: {exc.strerror[0].lower()}{exc.strerror[1:]}"
    return str(exc)


# Errors that mean bad input (exit 2), by module: an error can only come from a module that was
# imported, so the check imports nothing (rltui.checkpoint would pull in torch on every error exit).
_BAD_INPUT_ERRORS = {
    "rltui.checkpoint": "CheckpointError", "rltui.envs": "EnvError", "rltui.presets": "PresetError",
    "rltui.replay": "ReplayError", "rltui.resume": "ResumeError", "rltui.rundir": "RunLockedError",
    "rltui.video": "VideoError",
    "rltui.sweep.plan": "SweepError",
}


def _is_bad_input(exc: Exception) -> bool:
    if isinstance(exc, (UsageError, OSError)):
        return True
    return any(
        module in sys.modules and isinstance(exc, getattr(sys.modules[module], name))
        for module, name in _BAD_INPUT_ERRORS.items()
    )


# --------------------------------------------------------------------------------------- commands


def _cmd_default(args: argparse.Namespace) -> int:
    from rltui.app import run_picker

    return int(run_picker(refresh_hz=args.refresh_hz, mouse=not args.no_mouse, saves_root=args.saves))


def _cmd_train(args: argparse.Namespace) -> int:
    from rltui.presets import Override, load_preset
    from rltui.rundir import create_run_dir

    overrides: list[str | Override] = list(args.overrides or [])
    if args.seed is not None:
        overrides.append(Override("--seed", ("train", "seed"), args.seed))
    if args.device is not None:
        overrides.append(Override("--device", ("train", "device"), args.device))
    preset = load_preset(args.preset, overrides, check_device=True)
    if args.detach:
        return _detach(["train", *_forwarded_options(args), f"--saves={args.saves}", "--", args.preset])
    from rltui.engine import Engine  # torch: only once the input is known to be good

    run_dir = create_run_dir(preset, args.saves)
    try:
        engine = Engine(preset, run_dir, command=args.command_line)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)  # nothing ran: leave no empty run behind
        raise
    return _run(engine, args)


def _cmd_resume(args: argparse.Namespace) -> int:
    from rltui.presets import load_preset
    from rltui.rundir import PRESET_FILE

    run_dir: Path = args.run_dir
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir}: not a directory (expected a run directory)")
    if not (run_dir / PRESET_FILE).is_file():
        raise UsageError(f"{run_dir}: no {PRESET_FILE} (expected a run directory made by `rltui train`)")
    preset = load_preset(str(run_dir / PRESET_FILE), list(args.overrides or []))
    if args.detach:
        return _detach(["resume", *_forwarded_options(args), "--", str(run_dir)])
    from rltui.engine import Engine  # torch: only once the input is known to be good

    # (refuses a finished run or a change it cannot apply)
    engine = Engine(preset, run_dir, resume=True, command=args.command_line)
    return _run(engine, args, history_from=run_dir)


def _run(engine: Engine, args: argparse.Namespace, history_from: Path | None = None) -> int:
    """Train with the dashboard (which first shows `history_from`'s earlier events, for a resume)
    or headless."""
    from rltui import background

    if args.detached_child is not None:  # the background side of --detach: the engine is built
        background.announce_ready(args.detached_child, engine.run_dir)
    if not args.headless:
        from rltui.app import run_dashboard

        return background.run_dashboard_through_hangup(
            engine, lambda e, show_in: int(run_dashboard(e, refresh_hz=args.refresh_hz, mouse=not args.no_mouse,
                                                         history_from=history_from, on_app=show_in)))
    with background.OutputToLogOnHangup(engine.run_dir):
        return run_headless(engine)


def _forwarded_options(args: argparse.Namespace) -> list[str]:
    """The options of `train`/`resume` that the background run of --detach is started with."""
    options = [f"--set={override}" for override in args.overrides or []]
    if getattr(args, "seed", None) is not None:
        options.append(f"--seed={args.seed}")
    if getattr(args, "device", None) is not None:
        options.append(f"--device={args.device}")
    return [*options, "--headless"]


def _detach(argv: list[str]) -> int:
    from rltui.background import start_detached

    return start_detached(argv)


def _cmd_attach(args: argparse.Namespace) -> int:
    from rltui.app import run_attach
    from rltui.control import ControlError, NotLiveError, RemoteEngine
    from rltui.runs import probe_all, table
    from rltui.watch import display_path

    ui = {"refresh_hz": args.refresh_hz, "mouse": not args.no_mouse}
    if args.run_dir is not None:
        run_dir: Path = args.run_dir
        if not run_dir.is_dir():
            raise UsageError(f"{display_path(run_dir)}: not a directory (expected a run directory)")
        try:
            remote = RemoteEngine(run_dir)
        except NotLiveError:
            raise UsageError(f"{display_path(run_dir)}: not a live run (nothing answers on its control socket); "
                             f"`rltui watch {display_path(run_dir)}` shows a finished run") from None
        except ControlError as exc:
            raise UsageError(f"{display_path(run_dir)}: {exc}") from None
        return run_attach(remote, **ui)
    root: Path = args.saves
    live = [p for p in probe_all(root) if p.live] if root.is_dir() else []
    if not live:
        raise UsageError(f"no live runs under {display_path(root)} (start one with `rltui train PRESET --detach`)")
    if len(live) == 1:
        assert live[0].status is not None
        return _cmd_attach(argparse.Namespace(**{**vars(args), "run_dir": Path(live[0].status["run_dir"])}))
    return run_attach(None, ([p.status for p in live if p.status is not None], table(live)), **ui)


def _cmd_ps(args: argparse.Namespace) -> int:
    from rltui.runs import probe_all, relative, shown, table
    from rltui.watch import display_path

    root: Path = args.dir
    if not root.is_dir():
        raise UsageError(f"{display_path(root)}: not a directory (expected a directory of runs, e.g. ./saves)")
    probes = probe_all(root)
    live = [p for p in probes if p.live]
    if args.json:
        print(json.dumps([p.status for p in live], allow_nan=False))
    elif live:
        print("\n".join(table(live)))
    else:
        print(f"no live runs under {display_path(root)}")
    for p in probes:
        if not p.live:
            what = "stale (its run was killed; resuming the run replaces it)" if p.stale else shown(p.problem, 200)
            print(f"note: {display_path(relative(str(p.socket)))}: {what}", file=sys.stderr)
    return EXIT_OK


def _run_dirs(paths: list[Path]) -> list[Path]:
    from rltui.export import RunsNotFound, run_dirs_of

    try:
        return run_dirs_of(paths)
    except RunsNotFound as exc:
        raise UsageError(str(exc)) from None


def _cmd_export(args: argparse.Namespace) -> int:
    from rltui.export import export_to_file, write_csv
    from rltui.runlog import display_path

    out: Path | None = args.out
    if out is not None and out.is_dir():
        raise UsageError(f"{display_path(out)}: is a directory (expected the CSV file to write)")
    run_dirs = _run_dirs(args.paths)
    if out is not None:
        rows = export_to_file(run_dirs, out)
        print(f"{display_path(out)}: {rows:,} rows from {len(run_dirs)} run{'s' * (len(run_dirs) != 1)}",
              file=sys.stderr)
        return EXIT_OK
    try:
        write_csv(run_dirs, sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:  # `rltui export saves | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from rltui.runlog import display_path

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("rltui report draws with matplotlib, which is not installed: "
                         "pip install 'rltui[report]'") from None
    from rltui.report import write_report
    from rltui.summaries import RunIndex

    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise UsageError(f"{display_path(out)}: not a directory (expected where to write the report)")
    _run_dirs(args.paths)  # each path names runs, or the one-line error says which does not
    summaries = RunIndex(args.paths).refresh()
    report, picture = write_report(summaries, out, [display_path(p) for p in args.paths])
    print(f"{display_path(report)}, {display_path(picture)}: {len(summaries)} run{'s' * (len(summaries) != 1)}")
    return EXIT_OK


MAX_EVAL_EPISODES = 100_000
MAX_EVAL_SEED = 2**32 - 1  # as [train] seed; episodes use seed + 1_000_000 + i, which every RNG takes


def _int_between(minimum: int, maximum: int) -> Callable[[str], int]:
    """An argparse type: an integer in [minimum, maximum], else a one-line error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:  # not an integer, or more digits than int() takes
            value = None
        if value is None or not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"expected an integer in [{minimum}, {maximum}], got {_shown(text)}")
        return value

    return parse


def _json_number(value: float) -> float | None:
    """NaN and infinities as None (JSON null), as metrics.jsonl writes them."""
    return value if math.isfinite(value) else None


def _cmd_eval(args: argparse.Namespace) -> int:
    from rltui.runlog import display_path

    try:  # a path the OS refuses (too long, a symlink loop, no permission) is bad input, said plainly
        os.stat(args.path)
    except OSError as exc:
        reason = "no such file or directory" if exc.errno == errno.ENOENT else (exc.strerror or str(exc)).lower()
        raise UsageError(f"{display_path(args.path)}: {reason}") from None
    if args.video is not None:  # before any episode runs: a bad path or a missing library loses nothing
        from rltui.video import VideoError, check_video_path

        try:
            check_video_path(args.video)
        except VideoError as exc:
            raise UsageError(str(exc)) from None
    from rltui.evaluation import evaluate_checkpoint

    path = _best_checkpoint_of(args.path) if args.best else args.path
    report = evaluate_checkpoint(path, args.episodes, deterministic=not args.stochastic, seed=args.seed,
                                 video=args.video)
    if args.json:
        out = {k: report[k] for k in ("return_mean", "return_std", "episodes", "step")}
        if args.video is not None:
            out["video"] = str(args.video)
        out["return_mean"], out["return_std"] = _json_number(out["return_mean"]), _json_number(out["return_std"])
        print(json.dumps(out, allow_nan=False))
    else:
        mode = "stochastic" if args.stochastic else "deterministic"
        print(f"{display_path(report['checkpoint'])} (step {report['step']}): return {report['return_mean']:.2f} "
              f"± {report['return_std']:.2f} over {report['episodes']} {mode} episodes "
              f"(mean length {report['length_mean']:.1f})")
        if args.video is not None:
            print(f"video: {display_path(args.video)}")
    return EXIT_OK


def _best_checkpoint_of(run_dir: Path) -> Path:
    """`eval --best`: the run's checkpoints/best, or a UsageError saying why there is none."""
    from rltui.checkpoint import META_FILE, best_checkpoint, checkpoints_dir
    from rltui.runlog import display_path

    shown = display_path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"{shown}: not a directory (--best takes a run directory)")
    if (run_dir / META_FILE).is_file():
        raise UsageError(f"{shown}: a checkpoint directory (--best takes the run directory holding checkpoints/)")
    if not checkpoints_dir(run_dir).is_dir():
        raise UsageError(f"{shown}: no checkpoints/ (expected a run directory made by `rltui train`)")
    best = best_checkpoint(run_dir)
    if best is None:
        raise UsageError(f"{shown}: no best checkpoint yet (checkpoints/best is saved after the run's first "
                         "scheduled evaluation; none with [eval] interval = 0)")
    return best


def _cmd_presets(args: argparse.Namespace) -> int:
    from rltui.presets import (
        PresetError,
        check_base_file,
        is_base_file,
        list_presets,
        load_preset,
        preset_device,
    )

    if args.check:
        from rltui.sweep.plan import SweepError, SweepFlags, build_plan, read_sweep_file

        failed = 0
        for file in args.check:
            try:
                # A preset with a [sweep] table (`rltui sweep FILE`). Only a regular file is read here:
                # a device or a FIFO could be endless or block; the preset loader says what it is.
                if file.is_file() and read_sweep_file(file) is not None:
                    plan = build_plan(str(file), [], SweepFlags(), None, check_device=False)
                    base = plan.base_preset()
                    settings = len({trial.setting for trial in plan.trials})
                    print(f"ok: {file} (a sweep of {base.name}, {base.algo}, {base.env.id}: {len(plan.trials)} "
                          f"trials, {settings} setting{'s' * (settings != 1)} x {len(plan.options.seeds)} "
                          f"seed{'s' * (len(plan.options.seeds) != 1)})")
                    continue
                if is_base_file(file):
                    check_base_file(file)
                    print(f'ok: {file} (a base for `extends`: its name starts with "_"; the keys it sets are valid, '
                          "the rest comes from the presets that extend it)")
                    continue
                preset = load_preset(str(file))
            except (PresetError, SweepError) as exc:
                failed += 1
                print(f"error: {exc}", file=sys.stderr)
                continue
            try:
                preset_device(preset)
            except PresetError as exc:  # the preset is fine; this machine cannot run it as it is
                print(f"warning: {exc}", file=sys.stderr)
            print(f"ok: {file} ({preset.name}, {preset.algo}, {preset.env.id})")
        return EXIT_BAD_INPUT if failed else EXIT_OK
    infos = list_presets()
    width = max((len(i.name) for i in infos), default=4)
    env_width = max((len(i.env_id) for i in infos), default=3)
    print(f"{'NAME':<{width}}  ALGO  {'ENV':<{env_width}}  DESCRIPTION")
    columns = shutil.get_terminal_size((120, 24)).columns
    for info in infos:
        description = f"invalid: {info.error}" if info.error else info.description
        line = f"{info.name:<{width}}  {info.algo:<4}  {info.env_id:<{env_width}}  {' '.join(description.split())}"
        print(line if len(line) <= columns or not sys.stdout.isatty() else line[: columns - 1] + "…")
    return EXIT_OK


def _cmd_runs(args: argparse.Namespace) -> int:
    from rltui.app import run_runs
    from rltui.runlog import display_path

    roots: list[Path] = args.dirs or [Path("saves")]
    for root in roots:
        if not root.is_dir():
            what = "not a directory" if root.exists() else "no such directory"
            raise UsageError(f"{display_path(root)}: {what} (expected a directory of runs, e.g. ./saves)")
    return run_runs(roots, refresh_hz=args.refresh_hz, mouse=not args.no_mouse)


def _cmd_compare(args: argparse.Namespace) -> int:
    from rltui.app import run_compare
    from rltui.comparison import ComparedRun
    from rltui.summaries import RunIndex
    from rltui.watch import WatchError, check_run_dir

    run_dirs: dict[Path, Path] = {}
    for run_dir in args.run_dirs:
        try:
            check_run_dir(run_dir)
        except WatchError as exc:
            raise UsageError(str(exc)) from None
        run_dirs.setdefault(run_dir.resolve(), run_dir)  # each run once
    # The groups (runs differing only by their seed) are found among the runs given.
    groups = {s.run_dir.resolve(): s.group for s in RunIndex(list(run_dirs.values()), use_cache=False).refresh()}
    runs = [ComparedRun(run_dir, resolved.name, groups.get(resolved, "")) for resolved, run_dir in run_dirs.items()]
    return run_compare(runs, refresh_hz=args.refresh_hz, mouse=not args.no_mouse)


def _cmd_watch(args: argparse.Namespace) -> int:
    from rltui.app import run_watch

    return int(run_watch(args.run_dir, refresh_hz=args.refresh_hz, mouse=not args.no_mouse))


# --------------------------------------------------------------------------------------- sweep


def _number_at_least(minimum: float, *, above: bool) -> Callable[[str], float]:
    """An argparse type: a finite number > `minimum` (`above`) or >= it, else a one-line error."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < minimum or (above and value == minimum):
            raise argparse.ArgumentTypeError(
                f"expected a number {'>' if above else '>='} {minimum:g}, got {_shown(text)}")
        return value

    return parse


def _add_sweep_parser(commands: argparse._SubParsersAction[_Parser]) -> None:
    sweep = commands.add_parser(
        "sweep", help="run a preset over seeds and settings on Ray Tune (the `sweep` extra)",
        description="One trial per (setting, seed), each an ordinary run under SAVES/NAME/; a results table "
                    "at the end. PRESET is a preset name, a preset file, or a sweep file (a preset with a "
                    "[sweep] table); flags override the file's [sweep] values.")
    sweep.add_argument("preset", nargs="?", metavar="PRESET", help="preset name, preset file or sweep file")
    sweep.add_argument("--resume", type=_path_arg, metavar="SWEEP_DIR",
                       help="go on with a sweep whose driver stopped (killed, interrupted)")
    sweep.add_argument("--seeds", metavar="SEEDS", help='seeds of every setting, e.g. "0-4" or "0,1,5" (default 0)')
    sweep.add_argument("--grid", action="append", default=None, metavar="SECTION.KEY=V1,V2,...",
                       help="values of a key to sweep (TOML literals); repeatable: every combination runs")
    _add_set_option(sweep)
    sweep.add_argument("--samples", type=_int_at_least(1), metavar="N",
                       help="draws of the sweep file's [sweep.random] values (default 1)")
    sweep.add_argument("--address", metavar="ADDR",
                       help="join a Ray cluster (auto, or ray://host:port); default: Ray on this machine")
    sweep.add_argument("--cpus-per-trial", type=_number_at_least(0, above=True), metavar="N",
                       help="CPUs Ray reserves per trial (default 1)")
    sweep.add_argument("--gpus-per-trial", type=_number_at_least(0, above=False), metavar="F",
                       help="GPUs per trial; a fraction shares a GPU among trials (default 0)")
    sweep.add_argument("--max-concurrent", type=_int_at_least(1), metavar="N",
                       help="trials at a time (default: as many as the resources allow)")
    sweep.add_argument("--scheduler", choices=("fifo", "asha"),
                       help="fifo runs every trial to the end; asha stops poor ones early (default fifo)")
    sweep.add_argument("--name", help="the sweep's directory under --saves (default PRESET-sweep-<time>)")
    sweep.add_argument("--saves", type=_path_arg, default=argparse.SUPPRESS, metavar="DIR",
                       help="where the sweep directory is created (default ./saves)")
    sweep.add_argument("--headless", action="store_true",
                       help="progress as plain lines (the default on a terminal is a live table)")


# What a sweep's plan is made of: fixed once it started (`--resume` refuses them), by argument name.
_SWEEP_PLAN_FLAGS = {
    "seeds": "--seeds", "grid": "--grid", "overrides": "--set", "samples": "--samples", "name": "--name",
    "cpus_per_trial": "--cpus-per-trial", "gpus_per_trial": "--gpus-per-trial",
    "max_concurrent": "--max-concurrent", "scheduler": "--scheduler",
}


def _cmd_sweep(args: argparse.Namespace) -> int:
    try:
        import ray.tune  # noqa: F401 - only to know it is there
    except ImportError as exc:
        raise UsageError(f"rltui sweep needs Ray Tune, the `sweep` extra: pip install 'rltui[sweep]' "
                         f"({exc})") from None
    from rltui.sweep.driver import run_sweep
    from rltui.sweep.plan import SweepFlags, build_plan, read_plan

    if args.resume is not None:
        given = ["PRESET"] if args.preset is not None else []
        given += [flag for name, flag in _SWEEP_PLAN_FLAGS.items() if getattr(args, name) is not None]
        if given:
            raise UsageError(f"--resume: {given[0]} cannot be given (the sweep goes on with the plan in its directory; "
                             "only --address and --headless apply)")
        sweep_dir: Path = args.resume
        if not sweep_dir.is_dir():
            raise UsageError(f"{sweep_dir}: not a directory (expected a sweep directory made by `rltui sweep`)")
        plan = read_plan(sweep_dir)
    else:
        if args.preset is None:
            raise UsageError("sweep: expected PRESET (a preset name, a preset file or a sweep file), "
                             "or --resume SWEEP_DIR")
        flags = SweepFlags(seeds=args.seeds, grid=tuple(args.grid or ()), samples=args.samples,
                           scheduler=args.scheduler, cpus_per_trial=args.cpus_per_trial,
                           gpus_per_trial=args.gpus_per_trial, max_concurrent=args.max_concurrent)
        plan = build_plan(args.preset, list(args.overrides or []), flags, args.name, check_device=args.address is None)
        sweep_dir = args.saves / plan.name
        if sweep_dir.exists():
            raise UsageError(f"{sweep_dir}: already exists (go on with it: rltui sweep --resume {sweep_dir}; "
                             "or choose another --name)")
    return run_sweep(plan, sweep_dir, address=args.address, headless=args.headless, resume=args.resume is not None,
                     stream=sys.stderr, out=sys.stdout)


# --------------------------------------------------------------------------------------- headless


def run_headless(engine: Engine, stream: TextIO | None = None) -> int:
    """Run on a thread with a progress line; Ctrl-C (or SIGTERM) stops with a final checkpoint."""
    progress = HeadlessProgress(engine.total_steps, engine.step, stream or sys.stderr)
    engine.subscribe(progress)
    interrupted = threading.Event()

    def request_stop(*_: object) -> None:
        if not interrupted.is_set():
            interrupted.set()
            progress.note("stopping: saving a final checkpoint (Ctrl-C again to abandon it)")
            engine.submit(Stop(final_checkpoint=True))
        else:
            raise KeyboardInterrupt

    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, request_stop) for sig in handled} if _main_thread() else {}
    thread = engine.start()
    try:
        while not engine.state.is_final and thread.is_alive():
            time.sleep(0.1)
        thread.join()
    except KeyboardInterrupt:
        progress.note("abandoned before the final checkpoint was written")
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    progress.finish(engine)
    return EXIT_FAILED if engine.state == RunState.FAILED else EXIT_OK


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class HeadlessProgress:
    """Event subscriber that draws steps, steps/s, recent return and ETA on `stream`.

    The events are folded through a MetricsHistory, like every other view's, and the line and the
    final summary are read from it. On a terminal the line is redrawn in place at most 4 times a
    second; otherwise (a log file, CI) one plain line is printed for every 5 % of progress.
    Warnings get their own lines as they come, an error its own line in the summary.
    """

    def __init__(
        self, total_steps: int, start_step: int, stream: TextIO, history: MetricsHistory | None = None
    ) -> None:
        """`total_steps`, `start_step`: what the engine says before its RunStarted (which then rules)."""
        self.total_steps = total_steps
        self.start_step = start_step
        self.stream = stream
        from rltui.history import TRAIN_RETURN, MetricsHistory  # numpy: not for every `rltui` command

        self.history = history if history is not None else MetricsHistory(capacity=16)  # no charts drawn
        self._returns = TRAIN_RETURN
        self.tty = stream.isatty()
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._next_plain = start_step
        self._log_next = 0  # the next event-log entry of the history to look at (for warnings)
        self._line_open = False
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        self.history(event)
        if self.history.log_count() > self._log_next:
            for entry in self.history.log_since(self._log_next):
                self._log_next = entry.index + 1
                if entry.level == "warning":
                    self.note(f"warning: {entry.text}")
        self._draw(event.step)

    def line(self) -> str:
        status = self.history.status()
        total_steps = status.total_steps or self.total_steps
        step = max(status.step, self.start_step)
        rate = status.steps_per_s
        parts = [f"step {step:,}/{total_steps:,} ({100 * min(step / max(total_steps, 1), 1):.0f}%)",
                 f"{rate:,.0f} steps/s" if rate is not None else "– steps/s"]
        returns = self.history.recent(self._returns, RECENT_RETURNS)
        if returns:
            parts.append(f"return {sum(returns) / len(returns):.1f} (last {len(returns)})")
        if status.last_eval is not None:
            parts.append(f"eval {status.last_eval.return_mean:.1f}")
        if status.eta_s is not None:
            parts.append(f"ETA {_duration(status.eta_s)}")
        return " | ".join(parts)

    def _draw(self, step: int) -> None:
        with self._lock:
            now = time.monotonic()
            if self.tty:
                if now - self._last_draw < TTY_REDRAW_S:
                    return
                self._last_draw = now
                width = shutil.get_terminal_size((100, 24)).columns - 1
                self.stream.write("\r" + self.line()[:width].ljust(width))
                self._line_open = True
            else:
                if step < self._next_plain:
                    return
                total_steps = self.history.status().total_steps or self.total_steps
                span = max(1, int(total_steps * PLAIN_LINE_FRACTION))
                self._next_plain = (step // span + 1) * span
                self.stream.write(self.line() + "\n")
            self.stream.flush()

    def note(self, message: str) -> None:
        with self._lock:
            if self._line_open:
                self.stream.write("\n")
                self._line_open = False
            self.stream.write(message + "\n")
            self.stream.flush()

    def finish(self, engine: RunOwner) -> None:
        """The final summary (the progress line ends first)."""
        self.note(run_summary(self.history, engine, self.start_step, time.monotonic() - self.started))


class RunOwner(Protocol):
    """What the end-of-run summary reads of the engine that ran the run (also `step` and
    `preset` where it has them)."""

    @property
    def state(self) -> RunState: ...

    @property
    def algo(self) -> str: ...

    @property
    def run_dir(self) -> Path: ...


def run_summary(history: MetricsHistory, engine: RunOwner, start_step: int, elapsed_s: float) -> str:
    """What a run prints when it ends, headless or once its dashboard has left the terminal: the
    error (if any), the verdict, step and time, the recent return, the last evaluation and
    checkpoint, and the run directory with the command that resumes it.

    `start_step`: the step this session started from; `elapsed_s`: how long the session ran.
    """
    status = history.status()
    state = status.state if status.state.is_final else engine.state  # no final event: run() raised
    step = max(status.step, start_step, getattr(engine, "step", 0))  # an engine without events too
    if status.info is not None:
        name, algo, env_id = status.info.name, status.info.algo, status.info.env_id
    else:  # the run ended before its first event
        preset = getattr(engine, "preset", None)
        name = preset.name if preset is not None else Path(engine.run_dir).name
        algo, env_id = engine.algo, preset.env.id if preset is not None else "?"
    lines = [f"error: {status.error}"] if status.error else []
    verdict = {RunState.FINISHED: "finished", RunState.FAILED: "FAILED"}.get(state, state.value)
    lines.append(f"{verdict}: {name} ({algo}, {env_id}) at step {step:,} after {_duration(elapsed_s)} "
                 f"({(step - start_step) / max(elapsed_s, 1e-9):,.0f} steps/s this session)")
    if status.message and state is RunState.FINISHED:
        lines[-1] += f"; {status.message}"
    from rltui.history import TRAIN_RETURN

    returns = history.recent(TRAIN_RETURN, RECENT_RETURNS)
    if returns:
        lines.append(f"  recent return {sum(returns) / len(returns):.1f} (last {len(returns)} episodes)")
    if status.last_eval is not None:
        e = status.last_eval
        lines.append(f"  evaluation at step {e.step:,}: {e.return_mean:.1f} ± {e.return_std:.1f} "
                     f"({e.episodes} episodes)")
    if status.last_checkpoint:
        lines.append(f"  checkpoint {status.last_checkpoint}")
    lines.append(f"  run dir {engine.run_dir} (resume: rltui resume {engine.run_dir})")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


