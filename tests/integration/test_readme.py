"""The README's tested command blocks run as written.

A fenced ``bash`` or ``python`` block that follows the line ``<!-- test -->`` is run, in README order, in
one temporary folder (so later blocks see the files earlier ones made), with this environment's
``cpcaudio`` and ``python`` first on ``PATH``. Lines starting with ``#`` in bash blocks are comments.
Blocks without the marker (downloads, GPUs, hours of training) are shown but not run; the README says
which are tested.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- test -->"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def marked_blocks(text: str) -> list[tuple[str, str]]:
    """``(language, code)`` of every fenced block whose previous non-blank line is the test marker."""
    blocks = []
    for match in BLOCK.finditer(text):
        before = text[: match.start()].rstrip().splitlines()
        if before and before[-1].strip() == MARKER:
            blocks.append((match.group(1), match.group(2)))
    return blocks


def test_marker_finds_only_marked_blocks():
    text = (
        f"intro\n\n{MARKER}\n```bash\necho one\n```\n\n```bash\necho two\n```\n"
        f"{MARKER}\n\n```python\nprint(3)\n```\n"
    )
    assert marked_blocks(text) == [("bash", "echo one\n"), ("python", "print(3)\n")]


@pytest.mark.slow
def test_readme_blocks_run(tmp_path):
    blocks = marked_blocks(README.read_text())
    assert len(blocks) >= 5, "the README should mark its tour blocks with <!-- test -->"
    environment = dict(os.environ)
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}"
    environment.setdefault("OMP_NUM_THREADS", "1")
    for number, (language, code) in enumerate(blocks, start=1):
        if language == "python":
            command = [sys.executable, "-c", code]
        elif language in ("bash", "sh", "console", ""):
            command = ["bash", "-euo", "pipefail", "-c", code]
        else:
            pytest.fail(f"tested README block {number} has language {language!r}; use bash or python")
        completed = subprocess.run(
            command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300
        )
        assert completed.returncode == 0, (
            f"README block {number} ({language}) failed with exit code {completed.returncode}:\n{code}\n"
            f"--- stdout ---\n{completed.stdout[-3000:]}\n--- stderr ---\n{completed.stderr[-3000:]}"
        )
