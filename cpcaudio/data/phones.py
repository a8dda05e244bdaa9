"""Phone sets: TIMIT's 61 symbols and the standard 61 -> 39 folding of Lee & Hon (1989).

The folding merges allophones and closures as in K.-F. Lee and H.-W. Hon, "Speaker-independent phone
recognition using hidden Markov models", IEEE TASSP 37(11), 1989 (and Kaldi's ``timit`` recipe):

- ``aa ao -> aa``, ``ah ax ax-h -> ah``, ``er axr -> er``, ``hh hv -> hh``, ``ih ix -> ih``, ``l el -> l``,
  ``m em -> m``, ``n en nx -> n``, ``ng eng -> ng``, ``sh zh -> sh``, ``uw ux -> uw``;
- the closures ``bcl dcl gcl pcl tcl kcl`` and the silences ``h# pau epi`` -> ``sil``;
- the glottal stop ``q`` is deleted: its frames get no label (-1).
"""

from __future__ import annotations

from typing import Optional

TIMIT_61: tuple[str, ...] = (
    # stops, affricates
    "b", "d", "g", "p", "t", "k", "dx", "q", "jh", "ch",
    # fricatives
    "s", "sh", "z", "zh", "f", "th", "v", "dh",
    # nasals
    "m", "n", "ng", "em", "en", "eng", "nx",
    # semivowels and glides
    "l", "r", "w", "y", "hh", "hv", "el",
    # vowels
    "iy", "ih", "eh", "ey", "ae", "aa", "aw", "ay", "ah", "ao", "oy", "ow", "uh", "uw", "ux", "er", "ax",
    "ix", "axr", "ax-h",
    # closures and silences
    "bcl", "dcl", "gcl", "pcl", "tcl", "kcl", "pau", "epi", "h#",
)  # fmt: skip

_FOLDS: dict[str, Optional[str]] = {
    "ao": "aa",
    "ax": "ah",
    "ax-h": "ah",
    "axr": "er",
    "hv": "hh",
    "ix": "ih",
    "el": "l",
    "em": "m",
    "en": "n",
    "nx": "n",
    "eng": "ng",
    "zh": "sh",
    "ux": "uw",
    "bcl": "sil",
    "dcl": "sil",
    "gcl": "sil",
    "pcl": "sil",
    "tcl": "sil",
    "kcl": "sil",
    "h#": "sil",
    "pau": "sil",
    "epi": "sil",
    "q": None,
}

TIMIT_61_TO_39: dict[str, Optional[str]] = {phone: _FOLDS.get(phone, phone) for phone in TIMIT_61}
"""Map of every TIMIT symbol to its folded symbol (``None``: deleted, frames unlabelled)."""

TIMIT_39: tuple[str, ...] = tuple(sorted({p for p in TIMIT_61_TO_39.values() if p is not None}))

assert len(TIMIT_61) == 61 and len(set(TIMIT_61)) == 61
assert len(TIMIT_39) == 39


def timit_vocabulary(fold_39: bool) -> tuple[list[str], dict[str, Optional[str]]]:
    """The stored phone vocabulary and the symbol map for TIMIT-style ``.phn`` files.

    Args:
        fold_39: fold the 61 symbols into Lee & Hon's 39.

    Returns:
        ``(vocabulary, symbol_map)``: the sorted list of stored symbols (index = label id) and a map from
        every accepted source symbol to its stored symbol (``None`` = no label).
    """
    if fold_39:
        return list(TIMIT_39), dict(TIMIT_61_TO_39)
    return sorted(TIMIT_61), {phone: phone for phone in TIMIT_61}
