"""The quickstart documents run as written: their python blocks with ``exec``, their bash
blocks through the command line, in order, in an empty folder."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from coreset_meg.anomaly.cli import main

DOCS = Path(__file__).resolve().parents[1] / "docs"
QUICKSTARTS = sorted(DOCS.glob("quickstart-*.md"))
BLOCK = re.compile(r"^```(python|bash)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def code_blocks(path: Path) -> list[tuple[str, str]]:
    """``(language, code)`` of each python and bash block of a Markdown file, in order."""
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(path.read_text())]


def test_there_are_three_quickstarts():
    names = {p.name for p in QUICKSTARTS}
    assert {"quickstart-table.md", "quickstart-images.md", "quickstart-python.md"} <= names


@pytest.mark.parametrize("path", QUICKSTARTS, ids=lambda p: p.name)
def test_quickstart_runs_as_written(path, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    blocks = code_blocks(path)
    assert blocks, f"{path.name} has no code blocks"
    namespace: dict = {"__name__": "__quickstart__"}
    for language, code in blocks:
        if language == "python":
            exec(compile(code, str(path), "exec"), namespace)
            continue
        for line in code.splitlines():
            line = line.split("  #")[0].strip()
            if not line or line.startswith("#"):
                continue
            argv = shlex.split(line)
            assert argv[0] == "anomaly", f"{path.name}: {line!r} is not an anomaly command"
            code_ = main(argv[1:])
            out, err = capsys.readouterr()
            assert code_ == 0, f"{path.name}: {line!r} failed: {err}"
