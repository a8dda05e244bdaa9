"""Named config presets shipped inside the package (``cpcaudio/configs/NAME.yaml``), and how a
``--config`` value picks one.

A ``--config`` value that is a bare name (no path separator, no extension) and not an existing file names
a preset: ``cpcaudio train DATA RUN --config paper`` reads ``cpcaudio/configs/paper.yaml``. Anything
else is a path to a YAML or JSON file. A preset is an ordinary config file: read it with
``CPCConfig.load(preset_path("paper"))``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Union

from cpcaudio.errors import ConfigError

if TYPE_CHECKING:
    from cpcaudio.config import CPCConfig

PRESET_DIR = Path(__file__).resolve().parent / "configs"  # installed as package data (pyproject.toml)
PRESET_SUFFIX = ".yaml"

PathLike = Union[str, os.PathLike]


def available_presets() -> list[str]:
    """The names of the shipped presets, sorted (e.g. ``["paper"]``)."""
    if not PRESET_DIR.is_dir():
        return []
    return sorted(path.stem for path in PRESET_DIR.glob(f"*{PRESET_SUFFIX}") if path.is_file())


def preset_path(name: str) -> Path:
    """The file of preset ``name``.

    Raises:
        ConfigError: no preset has that name (the message lists the available ones).
    """
    path = PRESET_DIR / f"{name}{PRESET_SUFFIX}"
    if not _is_bare_name(name) or not path.is_file():
        raise ConfigError(
            f"unknown config preset '{name}'; available presets: {', '.join(available_presets()) or 'none'} "
            "(or give the path of a YAML/JSON config file)"
        )
    return path


def is_preset_name(value: PathLike) -> bool:
    """Whether ``value`` reads as a preset name: no path separator, no extension, not an existing file."""
    return _is_bare_name(os.fspath(value)) and not Path(value).exists()


def _is_bare_name(text: str) -> bool:
    separators = {"/", os.sep, os.altsep or os.sep}
    return text not in ("", ".", "..") and not any(s in text for s in separators) and not Path(text).suffix


def resolve_config_file(value: PathLike) -> Path:
    """The file a ``--config`` value means: the preset's file for a preset name, else ``value`` itself.

    Raises:
        ConfigError: ``value`` reads as a preset name but no preset has it.
    """
    return preset_path(os.fspath(value)) if is_preset_name(value) else Path(value)


def load_preset(name: str, overrides: Optional[Mapping[str, Mapping[str, Any]]] = None) -> "CPCConfig":
    """The config of preset ``name`` with ``overrides`` (nested sections, e.g. ``{"data": {"batch_size": 64}}``)
    merged over it, validated; e.g. ``load_preset("paper")`` is the CPC paper's configuration.

    Raises:
        ConfigError: no preset has that name, or an override is invalid.
    """
    from cpcaudio.config import CPCConfig

    data = CPCConfig.load(preset_path(name)).to_dict()
    for section, values in (overrides or {}).items():
        data[section] = {**data.get(section, {}), **dict(values)}
    return CPCConfig.from_dict(data)
