"""`rltui export`: the CSV of runs recorded by the real engine, read back and compared with their
metrics.jsonl line by line; stdout (a real process, and one whose reader stops early) and --out;
bad paths."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_summaries import record

from rltui.cli import main

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def saves(tmp_path_factory) -> Path:
    saves = tmp_path_factory.mktemp("saves")
    record(saves, "trpo")
    record(saves / "sweep", "mpo", {"train": {"total_steps": 300}})
    return saves


def expected_rows(run_dir: Path, run: str) -> list[dict[str, str]]:
    """The rows the module docstring promises, straight from the log's JSON lines."""
    rows = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        event = json.loads(line)
        kind = event["event"]
        if kind == "run_started":
            values = [("total_steps", event["total_steps"])]
        elif kind == "episode":
            values = [("episode_return", event["episode_return"]), ("episode_length", event["episode_length"])]
        elif kind == "update":
            values = [("updates", event["updates"]), *event["metrics"].items()]
        elif kind == "eval":
            values = [(k, event[k]) for k in ("return_mean", "return_std", "length_mean", "episodes")]
            values += [(f"returns[{i}]", v) for i, v in enumerate(event["returns"])]
        else:
            values = []
        for metric, value in values:
            rows.append({"run": run, "step": str(event["step"]), "time": repr(event["time"]), "event": kind,
                         "metric": metric, "value": "" if value is None else repr(value)})
    return rows


def check_csv(text: str, saves: Path, prefix: str) -> None:
    runs = sorted(p.parent for p in saves.rglob("metrics.jsonl"))
    assert len(runs) == 2
    want = [row for run_dir in runs for row in expected_rows(run_dir, f"{prefix}/{run_dir.relative_to(saves)}")]
    got = list(csv.DictReader(io.StringIO(text)))
    assert text.splitlines()[0] == "run,step,time,event,metric,value"
    assert got == want
    assert {r["event"] for r in got} == {"run_started", "episode", "update", "eval"}
    assert {r["metric"] for r in got} >= {"loss/q", "dual/temperature", "kl/mean", "policy/kl", "returns[0]"}
    for row in got:  # every cell reads back as the log's number, exactly
        if row["value"]:
            assert math.isfinite(float(row["value"]))


def test_export_to_stdout_matches_the_logs(saves):
    result = subprocess.run([sys.executable, "-m", "rltui", "export", saves.name], cwd=saves.parent,
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert result.returncode == 0 and result.stderr == ""
    check_csv(result.stdout, saves, saves.name)


def test_export_out_writes_the_file_whole(saves, tmp_path, capsys):
    out = tmp_path / "runs.csv"
    assert main(["export", str(saves), "--out", str(out)]) == 0
    check_csv(out.read_text(), saves, str(saves))
    rows = len(out.read_text().splitlines()) - 1
    assert capsys.readouterr().err == f"{out}: {rows:,} rows from 2 runs\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.csv"]  # no temporary file left


def test_a_run_directory_given_twice_is_exported_once(saves, capsys):
    run_dir = next(saves.glob("tiny-trpo-*"))
    assert main(["export", str(run_dir), str(saves)]) == 0
    got = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["run"] for r in got] == [str(run_dir)] * len(expected_rows(run_dir, "")) + [
        str(p) for p in sorted(saves.glob("sweep/*")) for _ in expected_rows(p, "")]


def test_a_reader_that_stops_early_ends_the_export_quietly(saves, tmp_path):
    many = tmp_path / "many"
    run_dir = next(saves.glob("tiny-trpo-*"))
    for i in range(30):  # far more than a pipe holds
        shutil.copytree(run_dir, many / f"run-{i}", ignore=shutil.ignore_patterns("checkpoints"))
    process = subprocess.Popen([sys.executable, "-m", "rltui", "export", str(many)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline() == b"run,step,time,event,metric,value\n"
    process.stdout.close()
    assert process.wait(timeout=60) == 0
    assert process.stderr.read() == b""


@pytest.mark.parametrize("what", ["missing", "file", "empty", "out_dir"])
def test_bad_paths_are_one_line_and_exit_2(saves, tmp_path, capsys, what):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    args = {"missing": [str(tmp_path / "missing")], "file": [str(tmp_path / "file")],
            "empty": [str(tmp_path / "empty")], "out_dir": [str(saves), "--out", str(tmp_path)]}[what]
    message = {
        "missing": f"{tmp_path / 'missing'}: no such file or directory",
        "file": f"{tmp_path / 'file'}: not a directory (expected a run directory or a directory of runs)",
        "empty": f"{tmp_path / 'empty'}: no runs found (expected a run directory, holding metrics.jsonl, "
                 "or a directory of them)",
        "out_dir": f"{tmp_path}: is a directory (expected the CSV file to write)",
    }[what]
    assert main(["export", *args]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"error: {message}\n" and captured.out == ""
