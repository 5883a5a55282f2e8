"""README promises: two fresh-machine commands, CI runs the test one, the snippet works."""

import re
import runpy
from pathlib import Path

import pytest

from pitstop import RunStatus, SyncCheckpointManager

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


def test_readme_python_snippet_resumes_after_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code = re.findall(r"```python\n(.*?)```", README, flags=re.S)[0]
    work = "def work(node: str, inputs: list[str]) -> str:  # your real work\n"
    assert work in code
    crashing = code.replace(work, work + "    if node == 'load':\n        raise OSError('crash')\n")
    (tmp_path / "crash.py").write_text(crashing)
    (tmp_path / "snippet.py").write_text(code)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OSError, match="crash"):
        runpy.run_path(str(tmp_path / "crash.py"), run_name="__main__")
    runpy.run_path(str(tmp_path / "snippet.py"), run_name="__main__")  # resumes
    assert capsys.readouterr().out.strip() == "load(transform(extract()))"
    with SyncCheckpointManager("nightly-etl", store="etl.db", enabled=True) as mgr:
        run = mgr.run_info()
        assert run is not None and run.status is RunStatus.SUCCEEDED and run.attempt == 2
        last = mgr.load_checkpoint()
        # extract and transform ran once, in the first process; load ran twice
        assert last.attempts == {"extract": 1, "transform": 1, "load": 2}
        assert [i.trigger for i in mgr.list_checkpoints()] == [
            "every_n_nodes", "every_n_nodes", "run_failed", "every_n_nodes"
        ]  # fmt: skip
