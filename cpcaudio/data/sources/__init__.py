"""Source readers: one module per corpus kind, each with ``discover(src, **options) -> SourcePlan``."""

from __future__ import annotations

from cpcaudio.data.sources import folder, fsdd, librispeech, synthetic, textgrid, timit, uea
from cpcaudio.data.sources.base import LabelSource, SourcePlan, UtteranceItem

READERS = {
    "folder": folder.discover,
    "librispeech": librispeech.discover,
    "timit": timit.discover,
    "textgrid": textgrid.discover,
    "fsdd": fsdd.discover,
    "uea": uea.discover,
    "synthetic": synthetic.discover,
}
"""Source kind -> reader. The keys are the KIND argument of ``cpcaudio prepare``."""

__all__ = ["READERS", "LabelSource", "SourcePlan", "UtteranceItem"]
