"""What a corpus reader declares about itself: its name, its options, and what ``prepare`` hands it.

Every reader module in :mod:`cpcaudio.data.sources` ends with one :class:`SourceKind`. The options are
plain data (:class:`SourceOption`): :func:`cpcaudio.data.prepare` checks keyword options against them,
and ``cpcaudio prepare`` builds its flags and ``--help`` from them (``cli/prepare_cmd.py``), so a new
option is declared once, in the reader that uses it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Optional

from cpcaudio.data.splits import DEFAULT_TEST_FRACTION
from cpcaudio.errors import UsageError

@dataclass(frozen=True)
class SourceOption:
    """One option of a corpus reader.

    Attributes:
        name: the keyword of the reader's ``discover`` (and of ``prepare(kind, ..., **options)``).
        type: ``bool`` (a flag, off by default), ``int``, ``float``, ``str`` or ``Path``: what the command
            line parses.
        default: the reader's default, shown in ``--help`` (``None``: none, or looked up by the reader).
        help: one sentence for ``--help``.
        flag: the command-line spelling (default: ``--`` + ``name`` with ``-`` for ``_``).
        multiple: the flag may be repeated; the values arrive as a list.
        parse: turns the command-line value into the keyword's value (e.g. ``NAME=FILE`` strings into a
            dict); ``None``: passed as parsed. Raises :class:`~cpcaudio.errors.UsageError` on bad input.
    """

    name: str
    type: type
    default: Any = None
    help: str = ""
    flag: Optional[str] = None
    multiple: bool = False
    parse: Optional[Callable[[Any], Any]] = None

    @property
    def cli_flag(self) -> str:
        """The flag on the command line, e.g. ``--fold-39``."""
        return self.flag or "--" + self.name.replace("_", "-")

    def from_cli(self, value: Any) -> Any:
        """The keyword value for a value the command line parsed."""
        return self.parse(value) if self.parse is not None else value


@dataclass(frozen=True)
class SourceKind:
    """A corpus kind: the ``KIND`` of ``cpcaudio prepare KIND SRC OUT``.

    Attributes:
        name: the kind's name (``timit``, ``fsdd``, ...).
        discover: ``discover(src, **options) -> SourcePlan``: lists the corpus (never decodes audio).
        summary: one line for ``cpcaudio prepare --help``.
        options: the keyword options of ``discover`` that users set.
        source: what ``src`` is: ``path`` (a folder that must exist), ``path-or-name`` (a path, or a name
            the reader resolves itself when no such path exists) or ``none`` (nothing is read: the corpus
            is generated, ``cpcaudio prepare KIND OUT``).
        receives: settings of ``prepare`` that ``discover`` also takes as keywords: ``sample_rate`` (when
            given) and ``scratch_dir`` (a folder inside the output directory for generated source files,
            removed afterwards; the output directory is made ready before ``discover`` runs).
    """

    name: str
    discover: Callable[..., Any]
    summary: str
    options: tuple[SourceOption, ...] = ()
    source: Literal["path", "path-or-name", "none"] = "path"
    receives: tuple[Literal["sample_rate", "scratch_dir"], ...] = ()

    def option_names(self) -> list[str]:
        """Names of the keyword options users may pass."""
        return [option.name for option in self.options]

    def check_options(self, options: dict[str, Any]) -> None:
        """Refuse keyword options this kind does not declare.

        Raises:
            UsageError: naming the first unknown option and listing the kind's own.
        """
        accepted = self.option_names()
        for name in options:
            if name not in accepted:
                raise UsageError(
                    f"option {name!r} does not apply to the {self.name} kind "
                    f"(its options: {', '.join(accepted) or 'none'})"
                )


# ---- options several readers share ----------------------------------------------------------------------

TEST_FRACTION = SourceOption(
    "test_fraction", float, DEFAULT_TEST_FRACTION, "Share of each speaker's utterances held out as test."
)
SPEAKER_PATTERN = SourceOption(
    "speaker_pattern", str, None,
    "Regex with a group (?P<speaker>...) on the relative path (default: the parent folder's name).",
)
