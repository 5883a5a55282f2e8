"""README promises: two fresh-machine commands, CI runs the test one, the snippet works."""

import re
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def sh_blocks() -> list[str]:
    return [b.strip() for b in re.findall(r"```sh\n(.*?)```", README, flags=re.S)]


def test_readme_shows_exactly_two_setup_commands() -> None:
    blocks = sh_blocks()
    assert len(blocks) == 2
    demo, tests = blocks
    assert "examples/pipeline_demo.py" in demo and "pip install" in demo
    assert tests.endswith("pytest") and '".[dev]"' in tests


def test_ci_runs_the_readme_test_command() -> None:
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert sh_blocks()[1] in ci_lines


def test_readme_python_snippet_runs_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = re.findall(r"```python\n(.*?)```", README, flags=re.S)[0]
    script = tmp_path / "snippet.py"
    script.write_text(code)
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(script), run_name="__main__")
    assert (tmp_path / "etl.db").exists()
    runpy.run_path(str(script), run_name="__main__")  # second run resumes: all skipped
    import sqlite3

    with sqlite3.connect(tmp_path / "etl.db") as db:
        rows = db.execute("select count(*) from pitstop_checkpoints").fetchone()
    assert rows[0] == 2  # first run saved after each node; the resumed run ran nothing
