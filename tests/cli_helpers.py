"""Running the installed `onnxwootz` command from tests, and the one-clear-line error contract."""

from __future__ import annotations

import shutil
import subprocess

CLI = shutil.which("onnxwootz")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], capture_output=True, text=True)


def one_clean_line(result: subprocess.CompletedProcess, code: int, needle: str) -> None:
    """Exit `code`, and stderr is one line that contains `needle`, with no traceback."""
    assert result.returncode == code, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr
