"""Item lists: the libri-light .item reader, items from frame labels, and the frames of each item."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cpcaudio.errors import DataError, UsageError
from cpcaudio.evaluate.abx.items import frame_spans, item_codes, items_from_dataset, read_item_file, write_item_file

LIBRI_LIGHT_ITEMS = """#file onset offset #phone prev-phone next-phone speaker
6295-244435-0000 0.3225 0.4125 AH SIL N 6295
6295-244435-0000 0.4125 0.5025 N AH D 6295
84-121123-0002 1.0125 1.1425 AH SIL N 84

84-121123-0002 1.1425 1.2125 N AH T 84
"""


def test_reads_a_libri_light_item_file(tmp_path: Path) -> None:
    path = tmp_path / "dev-clean.item"
    path.write_text(LIBRI_LIGHT_ITEMS)
    items = read_item_file(path)
    assert len(items) == 4  # header skipped, blank line ignored
    assert items.files[2] == "84-121123-0002" and items.speakers[2] == "84"
    np.testing.assert_allclose(items.onsets, [0.3225, 0.4125, 1.0125, 1.1425])
    np.testing.assert_allclose(items.offsets, [0.4125, 0.5025, 1.1425, 1.2125])
    assert (items.phones, items.previous, items.following) == (
        ["AH", "N", "AH", "N"], ["SIL", "AH", "SIL", "AH"], ["N", "D", "N", "T"]
    )
    codes = item_codes(items, "within")
    assert codes.contexts == ["AH+D", "AH+T", "SIL+N"] and codes.context.tolist() == [2, 0, 2, 1]
    assert item_codes(items, "any").context.tolist() == [0, 0, 0, 0]
    write_item_file(items, tmp_path / "again.item")
    again = read_item_file(tmp_path / "again.item")
    assert again.files == items.files and np.allclose(again.onsets, items.onsets)


@pytest.mark.parametrize(
    "line, message",
    [("a 0.1 0.2 AH SIL N", "expected 7 columns"), ("a x 0.2 AH SIL N 1", "must be seconds"),
     ("a 0.3 0.2 AH SIL N 1", "must come after")],
)
def test_bad_item_lines_are_data_errors(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.item"
    path.write_text("#file onset offset #phone prev-phone next-phone speaker\n" + line + "\n")
    with pytest.raises(DataError, match=message):
        read_item_file(path)


class _Labelled:
    """The few attributes of a prepared dataset that items_from_dataset reads."""

    path = "fake"
    has_frame_labels = True
    phone_vocabulary = ["a", "b", "sil"]
    label_hop = 160
    sample_rate = 16000
    utterance_ids = ["u0"]
    speakers = ["s0"]
    lengths = np.array([10 * 160 - 40])

    def frame_labels(self, index: int) -> np.ndarray:
        return np.array([2, 2, 0, 0, 0, -1, 1, 1, 0, 2])


def test_items_from_frame_labels() -> None:
    items = items_from_dataset(_Labelled())
    # runs: sil(0-2) a(2-5) [gap] b(6-8) a(8-9) sil(9-10): silences are context only, the gap is skipped
    assert items.phones == ["a", "b", "a"]
    assert items.previous == ["sil", "a", "b"] and items.following == ["b", "a", "sil"]
    np.testing.assert_allclose(items.onsets, [0.02, 0.06, 0.08])
    np.testing.assert_allclose(items.offsets, [0.05, 0.08, 0.09])


def test_items_need_frame_labels() -> None:
    dataset = _Labelled()
    dataset.has_frame_labels = False
    with pytest.raises(DataError, match="no frame labels"):
        items_from_dataset(dataset)


def test_center_and_librilight_slicing() -> None:
    hop = 0.01
    centers = (np.arange(100) + 0.5) * hop  # libri-light's assumed timing
    onsets, offsets = np.array([0.10, 0.2025, 0.30]), np.array([0.15, 0.2525, 0.31])
    starts, stops = frame_spans(onsets, offsets, centers, hop, "center")
    assert (stops - starts).tolist() == [5, 5, 1]  # centres .105 .. .145; .205 .. .245; .305
    ll_starts, ll_stops = frame_spans(onsets, offsets, centers, hop, "librilight")
    assert ll_starts.tolist() == starts.tolist()
    assert (ll_stops - ll_starts).tolist() == [4, 4, 0]  # one frame fewer: the 10 ms phone is lost
    # MFCC-like timing (frame t centred at t * hop): a centre exactly on the onset belongs to the item
    starts, stops = frame_spans(np.array([0.05]), np.array([0.08]), np.arange(100) * hop, hop, "center")
    assert (starts.tolist(), stops.tolist()) == ([5], [8])
    with pytest.raises(UsageError):
        frame_spans(onsets, offsets, centers, hop, "nearest")
