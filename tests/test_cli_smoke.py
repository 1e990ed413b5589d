import subprocess
import sys


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "rltui", "--version"], capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout.startswith("rltui ")
