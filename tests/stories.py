"""Running the examples as real processes: their stories crash and resume for real."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
STRICT_ENV = {**os.environ, "PYTHONWARNINGS": "error"}
"""Example processes run with warnings as errors too; their children inherit it."""


def example(
    script: str, *args: str, cwd: Path, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """``python examples/SCRIPT ARGS...`` in ``cwd``, output captured, never raising."""
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        cwd=cwd, env=STRICT_ENV, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
