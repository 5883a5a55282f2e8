"""What the crash-and-resume stories of the examples share: printing, running a
child process of the example, reading its digest, and starting from no file."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Collection
from pathlib import Path

DIGEST_PREFIX = "report sha256: "


def say(message: str) -> None:
    # Flush every line: a crashing process leaves through os._exit, which skips buffers.
    print(message, flush=True)


def child(script: str, db: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run ``script --db DB EXTRA...`` in a new interpreter, echoing its output indented."""
    cmd = [sys.executable, str(Path(script).resolve()), "--db", str(db), *extra]
    say(f"$ python {' '.join(cmd[1:])}")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    for line in (proc.stdout + proc.stderr).splitlines():
        say(f"    {line}")
    say(f"  -> exit code {proc.returncode}")
    return proc


def story_parser(
    doc: str | None, default_db: str, stages: Collection[str], *, crash_help: str | None = None
) -> argparse.ArgumentParser:
    """The options every story example takes: ``--db``, ``--crash-at STAGE``, ``--story``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    parser.add_argument("--db", type=Path, default=Path(default_db), help="SQLite file")
    parser.add_argument("--crash-at", choices=stages,
                        help=crash_help or "kill the process in this stage")  # fmt: skip
    parser.add_argument("--story", action="store_true", help="crash, resume, compare (PASS/FAIL)")
    return parser


def pitstop_cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``pitstop --store DB ARGS...`` in a new interpreter, echoing its last lines."""
    cmd = [sys.executable, "-m", "pitstop", "--store", str(db), *args]
    say(f"$ pitstop {' '.join(args)}")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    for line in (proc.stdout + proc.stderr).splitlines()[-8:]:
        say(f"    {line}")
    return proc


def digest_in(output: str) -> str | None:
    """The X of a ``report sha256: X`` line, None when the run printed none."""
    for line in output.splitlines():
        if line.startswith(DIGEST_PREFIX):
            return line.removeprefix(DIGEST_PREFIX)
    return None


def fresh(db: Path) -> None:
    """Remove a SQLite file and its companions, so the story starts from nothing."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


def verdict(checks: dict[str, bool]) -> int:
    """Print each check and PASS or FAIL; return the exit status (0 on PASS)."""
    say("== result")
    for text, ok in checks.items():
        say(f"  [{'ok' if ok else 'FAILED'}] {text}")
    passed = all(checks.values())
    say("PASS" if passed else "FAIL")
    return 0 if passed else 1
