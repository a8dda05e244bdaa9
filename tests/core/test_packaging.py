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


def test_pyproject_ships_the_config_presets():
    """Every file of ``cpcaudio/configs`` (the ``--config NAME`` presets) matches a package-data pattern."""
    import fnmatch

    patterns = tomllib.loads((PROJECT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["cpcaudio"]
    presets = sorted((PROJECT / "cpcaudio" / "configs").iterdir())
    assert "paper.yaml" in [path.name for path in presets]
    for path in presets:
        relative = path.relative_to(PROJECT / "cpcaudio").as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), f"{relative} would not ship"


def test_a_built_wheel_holds_the_presets(tmp_path):
    """A regular (non-editable) build: the wheel holds ``cpcaudio/configs/paper.yaml`` next to the code."""
    import shutil
    import subprocess
    import sys
    import zipfile

    pytest.importorskip("setuptools", reason="building a wheel without network needs setuptools in the venv")
    pytest.importorskip("wheel", reason="building a wheel without network needs wheel in the venv")
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("cpcaudio", "cli"):
        shutil.copytree(PROJECT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PROJECT / name, source / name)
    command = [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q", "-w", tmp_path, source]
    subprocess.run([str(part) for part in command], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("cpcaudio-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "cpcaudio/configs/paper.yaml" in names and "cpcaudio/presets.py" in names
