"""Source readers: one module per corpus kind, each ending with its :class:`SourceKind` declaration.

A reader lists a corpus (``discover(src, **options) -> SourcePlan``) and declares its options;
:func:`cpcaudio.data.prepare` and ``cpcaudio prepare`` take both from :data:`SOURCE_KINDS`. Adding a
corpus kind is one module here plus its line below (see ``docs/architecture.md``).
"""

from __future__ import annotations

from collections.abc import Callable

from cpcaudio.data.sources import folder, fsdd, librispeech, synthetic, textgrid, timit, uea
from cpcaudio.data.sources.base import LabelSource, SourcePlan, UtteranceItem
from cpcaudio.data.sources.spec import SourceKind, SourceOption
from cpcaudio.errors import UsageError

SOURCE_KINDS: dict[str, SourceKind] = {
    kind.name: kind
    for kind in (folder.KIND, librispeech.KIND, timit.KIND, textgrid.KIND, fsdd.KIND, uea.KIND, synthetic.KIND)
}
"""Kind name -> declaration, in the order ``cpcaudio prepare --help`` lists them."""

READERS: dict[str, Callable[..., SourcePlan]] = {name: kind.discover for name, kind in SOURCE_KINDS.items()}
"""Kind name -> reader (``discover``). The keys are the KIND argument of ``cpcaudio prepare``."""


def source_kind(name: str) -> SourceKind:
    """The declaration of kind ``name``.

    Raises:
        UsageError: for an unknown kind, listing the known ones.
    """
    if name not in SOURCE_KINDS:
        raise UsageError(f"unknown source kind {name!r}; choose one of {', '.join(SOURCE_KINDS)}")
    return SOURCE_KINDS[name]


__all__ = [
    "READERS",
    "SOURCE_KINDS",
    "LabelSource",
    "SourceKind",
    "SourceOption",
    "SourcePlan",
    "UtteranceItem",
    "source_kind",
]
