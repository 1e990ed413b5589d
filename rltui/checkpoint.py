"""Checkpoints: one directory per save, written atomically, loaded without executing anything.

Layout of `<run_dir>/checkpoints/step-<N>/` (N = env steps at save time):

    agent.pt      agent.state_dict(): networks, target networks, optimisers, duals, update counter
    state.pt      engine state: counters (env steps, episodes, updates, skipped updates, update credit,
                  evaluation episodes), normaliser statistics, RNG states (torch, numpy, python
                  `random`, the engine's replay-sampling generator), algo, env id, obs/act sizes
    preset.toml   the resolved preset the run used at save time
    replay.npz    MPO replay buffer, only when `[checkpoint] save_replay` (numpy, no pickled objects)
    meta.json     written last: format tag, format version, rltui version, step, save time, SHA-256
                  of the preset text and of every file above

Both .pt files hold only tensors and plain Python containers and are read with
`torch.load(..., weights_only=True)`; meta.json's checksums are checked before that, so a truncated,
modified or foreign file gives a one-line `CheckpointError` and nothing in it runs.

Atomicity: everything is written (and fsync'ed) into `step-<N>.tmp-<pid>` and renamed to `step-<N>`;
a process killed at any moment leaves at worst a temp directory, which readers ignore and the next
owner of the run removes. Saving again at an existing step first renames the old copy aside to
`step-<N>.old-<pid>`, then renames the new one in, then removes the old one: a kill between the two
renames leaves the complete old copy, which readers use in place of the missing `step-<N>` and
`recover_checkpoints` (run by the next owner of the run, under its lock) renames back. After a save
only the newest `keep` checkpoints are kept; names in `checkpoints/` that are not ours are left alone.

The best model: `<run_dir>/checkpoints/best/` is a complete checkpoint like the others, the one with
the best mean return of the run's scheduled evaluations so far (deterministic policy); its meta.json
also holds that evaluation (`"evaluation": {"return_mean", "return_std", "episodes"}`), so a resumed
run knows the return to beat. It is written like a re-saved step (`best.tmp-<pid>`, the old copy set
aside as `best.old-<pid>` and standing in until recovered), never pruned, and not a step checkpoint:
`list_checkpoints` and `latest_checkpoint` (what a resume starts from) never return it.

The engine state also holds the training environments' state where it can be captured
(`rltui.env_state`), the observation they were last at, and TRPO's rollout in progress, so a resume
continues the very episodes and rollout that were interrupted.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rltui import __version__
from rltui.replay import ReplayBuffer

CHECKPOINT_FORMAT = "rltui-checkpoint"
FORMAT_VERSION = 1
AGENT_FILE = "agent.pt"
STATE_FILE = "state.pt"
PRESET_FILE = "preset.toml"
REPLAY_FILE = "replay.npz"
META_FILE = "meta.json"
_FINAL_NAME = re.compile(r"^step-(0|[1-9][0-9]{0,18})$")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
BEST_NAME = "best"
# A temporary or set-aside copy of a step or of the best checkpoint: (name, "tmp" | "old", pid).
_LEFTOVER_NAME = re.compile(r"^(step-(?:0|[1-9][0-9]{0,18})|best)\.(tmp|old)-([0-9]{1,10})$")


class CheckpointError(Exception):
    """A checkpoint that cannot be written or used; str() is a one-line message."""


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int
    agent_state: dict[str, Any]
    engine_state: dict[str, Any]
    preset_text: str
    replay_path: Path | None


def checkpoints_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run as (step, path), oldest first.

    A `step-<N>.old-<pid>` copy stands in for a missing `step-<N>` (a re-save killed between its
    two renames); temp directories, symlinks and names that are not ours are ignored.
    """
    root = checkpoints_dir(run_dir)
    finals: dict[int, Path] = {}
    asides: dict[int, Path] = {}
    for child in _children(root):
        final, leftover = _FINAL_NAME.match(child.name), _LEFTOVER_NAME.match(child.name)
        if not _is_complete(child):
            continue
        if final:
            finals[int(final.group(1))] = child
        elif leftover and leftover.group(2) == "old" and leftover.group(1) != BEST_NAME:
            asides.setdefault(int(leftover.group(1).removeprefix("step-")), child)
    return sorted({**asides, **finals}.items())


def _children(root: Path) -> list[Path]:
    try:
        return list(root.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def _is_complete(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and (path / META_FILE).is_file()


def recover_checkpoints(run_dir: Path) -> None:
    """Tidy what a killed save left behind; only for the owner of the run (under its lock).

    A set-aside old copy (of a step, or of the best checkpoint) that has no complete successor is
    renamed back; every other leftover (temp directories, set-aside copies already replaced) is removed.
    """
    root = checkpoints_dir(run_dir)
    for child in sorted(_children(root), key=lambda path: path.name):
        leftover = _LEFTOVER_NAME.match(child.name)
        if not leftover or not child.is_dir() or child.is_symlink():
            continue
        final = root / leftover.group(1)
        if leftover.group(2) == "old" and _is_complete(child) and not _is_complete(final):
            if final.is_dir() and not final.is_symlink():
                shutil.rmtree(final)  # an incomplete final copy
            os.rename(child, final)
        else:
            shutil.rmtree(child, ignore_errors=True)


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def best_checkpoint(run_dir: Path) -> Path | None:
    """checkpoints/best/ when complete, else the complete copy a killed replacement set aside; None
    when the run has no best checkpoint (yet)."""
    root = checkpoints_dir(run_dir)
    if _is_complete(root / BEST_NAME):
        return root / BEST_NAME
    asides = sorted(child for child in _children(root)
                    if (m := _LEFTOVER_NAME.match(child.name)) and m.group(1) == BEST_NAME and m.group(2) == "old"
                    and _is_complete(child))
    return asides[0] if asides else None


def best_evaluation(path: Path) -> dict[str, Any]:
    """The evaluation a best checkpoint was kept for: {"return_mean", "return_std", "episodes"}, with
    the checkpoint's "step". Raises CheckpointError when its meta.json does not hold one."""
    meta = _read_meta(Path(path))
    evaluation = meta.get("evaluation")
    if not isinstance(evaluation, dict) or not _finite_number(evaluation.get("return_mean")):
        raise CheckpointError(f"{Path(path) / META_FILE}: holds no evaluation (expected a best checkpoint)")
    return {"return_mean": float(evaluation["return_mean"]), "return_std": evaluation.get("return_std"),
            "episodes": evaluation.get("episodes"), "step": int(meta["step"])}


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def resolve_checkpoint(path: Path) -> Path:
    """A run directory (its latest checkpoint) or a checkpoint directory -> the checkpoint directory."""
    path = Path(path)
    if (path / META_FILE).is_file():
        return path
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    latest = latest_checkpoint(path)
    if latest is None:
        raise CheckpointError(f"{path}: not a checkpoint directory and holds no checkpoints/step-<N>/")
    return latest


def preset_sha256(preset_text: str) -> str:
    return hashlib.sha256(preset_text.encode()).hexdigest()


def save_checkpoint(
    run_dir: Path,
    step: int,
    agent_state: dict[str, Any],
    engine_state: dict[str, Any],
    preset_text: str,
    replay: ReplayBuffer | None,
    keep: int,
) -> Path:
    """Write checkpoints/step-<step>/ atomically, prune to the newest `keep`, return its path."""
    final = _write_checkpoint(run_dir, f"step-{step}", step, agent_state, engine_state, preset_text, replay, {})
    prune_checkpoints(run_dir, keep)
    return final


def save_best_checkpoint(
    run_dir: Path,
    step: int,
    agent_state: dict[str, Any],
    engine_state: dict[str, Any],
    preset_text: str,
    replay: ReplayBuffer | None,
    evaluation: dict[str, Any],
) -> Path:
    """Write checkpoints/best/ atomically (replacing the previous best), with `evaluation`
    ({"return_mean", "return_std", "episodes"}, the reason it is the best) in its meta.json."""
    return _write_checkpoint(run_dir, BEST_NAME, step, agent_state, engine_state, preset_text, replay,
                             {"evaluation": dict(evaluation)})


def _write_checkpoint(
    run_dir: Path,
    name: str,
    step: int,
    agent_state: dict[str, Any],
    engine_state: dict[str, Any],
    preset_text: str,
    replay: ReplayBuffer | None,
    extra_meta: dict[str, Any],
) -> Path:
    """checkpoints/<name>/ written under a temporary name and renamed in (see the module doc)."""
    root = checkpoints_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    temp = root / f"{name}.tmp-{os.getpid()}"
    if temp.exists():
        shutil.rmtree(temp)
    temp.mkdir()
    try:
        _torch_save(agent_state, temp / AGENT_FILE)
        _torch_save(engine_state, temp / STATE_FILE)
        _write_bytes(temp / PRESET_FILE, preset_text.encode())
        if replay is not None:
            replay.save(temp / REPLAY_FILE)
            _fsync_path(temp / REPLAY_FILE)
        files = sorted(p.name for p in temp.iterdir())
        meta = {
            "format": CHECKPOINT_FORMAT,
            "format_version": FORMAT_VERSION,
            "rltui_version": __version__,
            "step": step,
            "saved_at": time.time(),
            "preset_sha256": preset_sha256(preset_text),
            "files": {file: _sha256(temp / file) for file in files},
            **extra_meta,
        }
        _write_bytes(temp / META_FILE, (json.dumps(meta, indent=2) + "\n").encode())
        _fsync_path(temp)
        if final.exists():
            aside = root / f"{name}.old-{os.getpid()}"
            os.rename(final, aside)
            os.rename(temp, final)
            shutil.rmtree(aside)
        else:
            os.rename(temp, final)
        _fsync_path(root)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return final


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Keep the newest `keep` checkpoints; remove temp directories of processes no longer alive."""
    for _, path in list_checkpoints(run_dir)[: -max(1, keep)]:
        shutil.rmtree(path, ignore_errors=True)
    for child in _children(checkpoints_dir(run_dir)):
        leftover = _LEFTOVER_NAME.match(child.name)
        if leftover and leftover.group(2) == "tmp" and child.is_dir() and not child.is_symlink() \
                and not _pid_alive(int(leftover.group(3))):
            shutil.rmtree(child, ignore_errors=True)


def load_checkpoint(path: Path) -> Checkpoint:
    """Read and verify a checkpoint directory. Raises CheckpointError with a one-line message."""
    path = Path(path)
    meta = _verified_meta(path)
    files: dict[str, str] = meta["files"]
    agent_state = _torch_load(path / AGENT_FILE)
    engine_state = _torch_load(path / STATE_FILE)
    try:
        preset_text = (path / PRESET_FILE).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CheckpointError(f"{path / PRESET_FILE}: not UTF-8 text") from None
    return Checkpoint(
        path=path,
        step=int(meta["step"]),
        agent_state=agent_state,
        engine_state=engine_state,
        preset_text=preset_text,
        replay_path=path / REPLAY_FILE if REPLAY_FILE in files else None,
    )


def _verified_meta(path: Path) -> dict[str, Any]:
    """meta.json of a checkpoint directory once every file it lists matches its checksum."""
    meta = _read_meta(path)
    files: dict[str, str] = meta["files"]
    for name in (AGENT_FILE, STATE_FILE, PRESET_FILE):
        if name not in files:
            raise CheckpointError(f"{path}: {META_FILE} lists no {name}")
    for name, digest in files.items():
        if "/" in name or name.startswith("."):
            raise CheckpointError(f"{path / META_FILE}: bad file name {name!r}")
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"{file}: missing")
        if _sha256(file) != digest:
            raise CheckpointError(f"{file}: checksum mismatch (the file was truncated or modified)")
    return meta


def load_latest_checkpoint(run_dir: Path, latest: Path, advice: Callable[[Path], str]) -> Checkpoint:
    """`load_checkpoint(latest)`, `latest` being the run's latest step checkpoint. When it cannot be
    loaded and an older one is intact, the CheckpointError goes on with `advice(that older one)`:
    what to do with it. Nothing falls back silently (a resume would lose the steps after it)."""
    try:
        return load_checkpoint(latest)
    except CheckpointError as exc:
        older = _newest_intact_before(run_dir, latest)
        if older is None:
            raise
        raise CheckpointError(f"{exc}; {advice(older)}") from None


def _newest_intact_before(run_dir: Path, broken: Path) -> Path | None:
    """The newest step checkpoint of the run older than `broken` whose files all match their
    checksums; None when there is none."""
    steps = [path for _, path in list_checkpoints(run_dir)]
    older = steps[: steps.index(broken)] if broken in steps else steps
    for path in reversed(older):
        try:
            _verified_meta(path)
        except CheckpointError:
            continue
        return path
    return None


def capture_rng(sampler: np.random.Generator) -> dict[str, Any]:
    """Every random state a run draws from (torch, CUDA, numpy's global and `sampler`, Python's
    `random`), as tensors and plain values, for `restore_rng`."""
    legacy = np.random.get_state(legacy=True)
    assert isinstance(legacy, tuple)
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "torch_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(legacy[1].astype(np.int64)), "pos": int(legacy[2]),
                  "has_gauss": int(legacy[3]), "cached_gaussian": float(legacy[4])},
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
        "sampler": sampler.bit_generator.state,
    }


def restore_rng(saved: dict[str, Any], sampler: np.random.Generator) -> None:
    """Put back what `capture_rng` saved (CUDA states only where CUDA is available)."""
    torch.set_rng_state(saved["torch"])
    if torch.cuda.is_available() and saved["torch_cuda"]:
        torch.cuda.set_rng_state_all(saved["torch_cuda"])
    legacy = saved["numpy"]
    np.random.set_state(("MT19937", legacy["keys"].numpy().astype(np.uint32), legacy["pos"],
                         legacy["has_gauss"], legacy["cached_gaussian"]))
    python = saved["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss"]))
    sampler.bit_generator.state = saved["sampler"]


def one_line(exc: BaseException, limit: int = 300) -> str:
    """`Type: message` on one line (a multi-line message joined), cut to `limit` characters."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _read_meta(path: Path) -> dict[str, Any]:
    file = path / META_FILE
    if not file.is_file():
        raise CheckpointError(f"{path}: not a checkpoint (no {META_FILE})")
    try:
        meta = json.loads(file.read_bytes())
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{file}: unreadable, not valid JSON ({type(exc).__name__})") from None
    except OSError as exc:
        raise CheckpointError(f"{file}: cannot read ({exc.strerror})") from None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not an rltui checkpoint")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {meta.get('format_version')!r}, this rltui reads {FORMAT_VERSION}"
        )
    step, files = meta.get("step"), meta.get("files")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"{file}: 'step' must be an integer >= 0, got {step!r:.40}")
    if not isinstance(files, dict) or not all(
        isinstance(name, str) and isinstance(digest, str) and _SHA256_HEX.fullmatch(digest)
        for name, digest in files.items()
    ):
        raise CheckpointError(f"{file}: 'files' must map file names to SHA-256 hex digests")
    return meta


def _torch_load(file: Path) -> dict[str, Any]:
    try:
        value = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for anything but tensors/containers, zip errors, EOF
        raise CheckpointError(f"{file}: refused or unreadable ({one_line(exc)})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{file}: expected a dict, got {type(value).__name__}")
    return value


def _torch_save(obj: Any, file: Path) -> None:
    with open(file, "wb") as handle:
        torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())


def _write_bytes(file: Path, data: bytes) -> None:
    with open(file, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError, ValueError):
        return False
    except PermissionError:
        return True
    return True
