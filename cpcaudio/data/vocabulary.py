"""Dataset-wide frame label ids: a fixed set given by the reader, or an open one stored sorted."""

from __future__ import annotations

from typing import Optional

import numpy as np

from cpcaudio.data.alignment import NO_LABEL


class LabelVocabulary:
    """Maps per-utterance symbol codes to dataset-wide label ids (fixed set, or open and sorted at the end)."""

    def __init__(self, fixed: Optional[list[str]]) -> None:
        self.is_open = fixed is None
        self._symbols: list[str] = list(fixed) if fixed is not None else []
        self._ids = {symbol: i for i, symbol in enumerate(self._symbols)}

    def to_ids(self, codes: Optional[np.ndarray], symbols: Optional[list[str]]) -> np.ndarray:
        """Dataset ids of one utterance's frame labels.

        Args:
            codes: int ``(label frames,)``: ids already (``symbols`` is None), or codes into ``symbols``;
                -1 = no label.
            symbols: the utterance's own symbols, or None.

        Returns:
            int64 ``(label frames,)`` dataset ids, -1 = no label (new symbols join an open set).
        """
        if codes is None:
            raise AssertionError("frame labels missing for a dataset with frame labels")
        if symbols is None:
            return codes
        table = np.empty(len(symbols) + 1, dtype=np.int64)
        table[0] = NO_LABEL
        for code, symbol in enumerate(symbols):
            if symbol not in self._ids:
                if not self.is_open:
                    raise AssertionError(f"symbol {symbol!r} outside a fixed set passed the worker's check")
                self._ids[symbol] = len(self._symbols)
                self._symbols.append(symbol)
            table[code + 1] = self._ids[symbol]
        return table[codes + 1]

    def sorted_remap(self) -> np.ndarray:
        """Table ``new_id[old_id + 1]`` (``-1 -> -1``) that sorts an open vocabulary."""
        order = sorted(range(len(self._symbols)), key=lambda i: self._symbols[i])
        table = np.full(len(self._symbols) + 1, NO_LABEL, dtype=np.int64)
        for new_id, old_id in enumerate(order):
            table[old_id + 1] = new_id
        self._symbols = [self._symbols[i] for i in order]
        self._ids = {symbol: i for i, symbol in enumerate(self._symbols)}
        return table

    def symbols(self) -> list[str]:
        """The symbols, index = id."""
        return list(self._symbols)
