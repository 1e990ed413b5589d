"""`rltui report`: report.md's tables against the runs' metrics.jsonl (each run's final and best
evaluation, each group's mean and sample std over its seeds, computed here with numpy), the PNG
read back, the message without matplotlib (a real process in which it cannot be imported), and
bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_summaries import record

from rltui.cli import main
from rltui.events import EvalResult
from rltui.runlog import read_events

matplotlib_image = pytest.importorskip("matplotlib.image", reason="the 'report' extra (make test installs it)")

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def saves(tmp_path_factory) -> Path:
    saves = tmp_path_factory.mktemp("saves")
    for seed in (4, 5, 6):
        record(saves, "trpo", {"train": {"seed": seed}})
    record(saves, "trpo", {"trpo": {"gamma": 0.95}})
    record(saves, "mpo", {"train": {"total_steps": 150}, "eval": {"interval": 0}})  # no evaluation
    return saves


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def evaluations(run_dir: Path) -> list[EvalResult]:
    events, _ = read_events(run_dir / "metrics.jsonl")
    return [e for e in events if isinstance(e, EvalResult)]


def table(text: str, heading: str) -> list[list[str]]:
    """The rows (cells stripped) of the Markdown table under `heading`."""
    lines = text.split(f"## {heading}\n", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def test_the_tables_match_the_logs_and_the_plot_opens(saves, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", str(saves), "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"{out / 'report.md'}, {out / 'eval_returns.png'}: 5 runs\n"
    text = (out / "report.md").read_text()
    runs = sorted(saves.iterdir())

    rows = {row[0]: row for row in table(text, "Runs")}
    assert set(rows) == {str(r) for r in runs}
    finals: dict[str, list[float]] = {}
    bests: dict[str, list[float]] = {}
    groups = {row[1]: row for row in table(text, "Groups")}  # by group label
    number = {row[0]: row[1] for row in groups.values()}  # "1" -> label
    for run_dir in runs:
        row = rows[str(run_dir)]
        evals = evaluations(run_dir)
        group = number[row[1].lstrip("#")]
        assert row[3] == "finished"
        if not evals:
            assert row[5] == row[6] == "-"
            continue
        best = max(evals, key=lambda e: e.return_mean)
        assert row[5] == f"{evals[-1].return_mean:.2f} (step {evals[-1].step:,})"
        assert row[6] == f"{best.return_mean:.2f} (step {best.step:,})"
        finals.setdefault(group, []).append(evals[-1].return_mean)
        bests.setdefault(group, []).append(best.return_mean)

    seeds = "tiny-trpo trpo.gamma=0.9"
    assert set(groups) == {seeds, "tiny-trpo trpo.gamma=0.95", "tiny-mpo"}
    assert groups[seeds][3] == "3" and groups[seeds][6] == "4, 5, 6"
    assert groups[seeds][4] == f"{np.mean(finals[seeds]):.2f} ± {np.std(finals[seeds], ddof=1):.2f}"
    assert groups[seeds][5] == f"{np.mean(bests[seeds]):.2f} ± {np.std(bests[seeds], ddof=1):.2f}"
    alone = groups["tiny-trpo trpo.gamma=0.95"]
    assert alone[3] == "1" and alone[4] == f"{finals['tiny-trpo trpo.gamma=0.95'][0]:.2f}"  # no std of one
    assert groups["tiny-mpo"][3:6] == ["0", "-", "-"]

    png = out / "eval_returns.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib_image.imread(png)
    assert pixels.ndim == 3 and pixels.shape[0] > 300 and pixels.shape[1] > 600
    assert np.ptp(pixels[..., :3]) > 0.5  # something is drawn
    assert sorted(p.name for p in out.iterdir()) == ["eval_returns.png", "report.md"]  # no temporary files


def test_without_matplotlib_report_names_the_extra(saves, tmp_path):
    out = tmp_path / "report"
    blocked = ("import sys; sys.modules['matplotlib'] = None  # import matplotlib raises ImportError\n"
               "from rltui.cli import main; raise SystemExit(main(sys.argv[1:]))")
    result = subprocess.run([sys.executable, "-c", blocked, "report", str(saves), "--out", str(out)],
                            capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 2
    assert result.stderr == ("error: rltui report draws with matplotlib, which is not installed: "
                             "pip install 'rltui[report]'\n")
    assert not out.exists()


def test_bad_input_is_one_line_and_exit_2(saves, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["report", str(saves), "--out", str(tmp_path / "file")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'file'}: not a directory (expected where to write the report)\n"
    (tmp_path / "nothing").mkdir()
    assert main(["report", str(tmp_path / "nothing"), "--out", str(tmp_path / "out")]) == 2
    assert "no runs found" in capsys.readouterr().err and not (tmp_path / "out").exists()
    assert main(["report", str(saves)]) == 2  # --out is required
    assert capsys.readouterr().err.startswith("error: the following arguments are required: --out")
