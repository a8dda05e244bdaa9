"""The package list in pyproject.toml names every package of the tree (a forgotten one would be missing
from a regular, non-editable install while every test here still passes)."""

from __future__ import annotations

import pytest

from helpers import PROJECT

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")


def test_pyproject_lists_every_package():
    config = tomllib.loads((PROJECT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {
        ".".join(init.parent.relative_to(PROJECT).parts) for init in (PROJECT / "cpcaudio").rglob("__init__.py")
    }
    found.add("cpcaudio.cli")
    assert (PROJECT / "cli" / "__init__.py").exists()
    assert listed == found, f"missing: {sorted(found - listed)}, not packages: {sorted(listed - found)}"
    assert config["package-dir"] == {"cpcaudio": "cpcaudio", "cpcaudio.cli": "cli"}
