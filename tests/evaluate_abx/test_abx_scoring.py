"""ABX bookkeeping: hand-computed cases, within/across tasks on a tiny item list, libri-light's averaging."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cpcaudio.evaluate.abx.dtw import ItemFeatures
from cpcaudio.evaluate.abx.items import ItemList, item_codes
from cpcaudio.evaluate.abx.scoring import Tasks, abx_errors, aggregate, make_cells, within_tasks, across_tasks


def _items(rows: list[tuple[str, str, str, str, str]]) -> ItemList:
    """Items from (file, phone, previous, next, speaker) rows (times are irrelevant here)."""
    n = len(rows)
    return ItemList(
        [r[0] for r in rows], np.zeros(n), np.ones(n), [r[1] for r in rows], [r[2] for r in rows],
        [r[3] for r in rows], [r[4] for r in rows],
    )


def test_three_items_across_speakers_tie_gives_one_half() -> None:
    # A = 'a' of s1 (2 frames), B = 'b' of s1 (1 frame), X = 'a' of s2 (2 frames), one context.
    # d(A, X): distances [[0, .5], [0, .5]], best path (0,0)->(1,1), cost .5 over 2 cells = .25;
    # d(B, X): distances [[.5, 0]], cost .5 over 2 cells = .25: a tie, so the error is 1/2.
    items = _items([("u1", "a", "p", "n", "s1"), ("u1", "b", "p", "n", "s1"), ("u2", "a", "p", "n", "s2")])
    frames = [np.array([[1.0, 0.0], [1.0, 0.0]]), np.array([[0.0, 1.0]]), np.array([[1.0, 0.0], [0.0, 1.0]])]
    result = abx_errors(ItemFeatures.from_arrays(frames), item_codes(items, "within"), ("within", "across"))
    assert result["across"]["error"] == pytest.approx(0.5)
    assert result["across"]["tasks"] == 1 and result["across"]["triplets"] == 1
    assert math.isnan(result["within"]["error"]) and result["within"]["tasks"] == 0  # no A cell of 2 items


def test_three_items_within_speaker_by_hand() -> None:
    # A1 = (1, 0), A2 = (.8, .6), B = (.6, .8), one frame each, one speaker, one context.
    # X = A1: d(A2, X) = acos(.8)/pi = .205 < d(B, X) = acos(.6)/pi = .295: right.
    # X = A2: d(A1, X) = .205 > d(B, X) = acos(.96)/pi = .090: wrong. Error 1/2 over 2 triplets.
    items = _items([("u", "a", "p", "n", "s"), ("u", "a", "p", "n", "s"), ("u", "b", "p", "n", "s")])
    frames = [np.array([[1.0, 0.0]]), np.array([[0.8, 0.6]]), np.array([[0.6, 0.8]])]
    result = abx_errors(ItemFeatures.from_arrays(frames), item_codes(items, "within"), ("within",))
    assert result["within"]["error"] == pytest.approx(0.5)
    assert result["within"]["tasks"] == 1 and result["within"]["triplets"] == 2
    # move B away from A2: both triplets right
    frames[2] = np.array([[-1.0, 0.0]])
    assert abx_errors(ItemFeatures.from_arrays(frames), item_codes(items, "within"), ("within",))["within"]["error"] == 0.0


TINY = [  # file, phone, previous, next, speaker
    ("f1", "a", "x", "y", "s1"), ("f1", "a", "x", "y", "s1"), ("f1", "b", "x", "y", "s1"),  # context x+y
    ("f2", "a", "x", "y", "s2"), ("f2", "b", "x", "y", "s2"), ("f2", "b", "x", "y", "s2"),
    ("f3", "a", "x", "y", "s3"),
    ("f4", "a", "z", "z", "s1"), ("f4", "c", "z", "z", "s1"),  # context z+z
]


def test_within_and_across_tasks_on_a_tiny_item_list() -> None:
    codes = item_codes(_items(TINY), "within")
    cells = make_cells(codes, max_size_group=10, rng=np.random.default_rng(0))
    assert len(cells) == 7  # x+y: s1 a, s1 b, s2 a, s2 b, s3 a; z+z: s1 a, s1 c
    describe = lambda c: (codes.contexts[cells.context[c]], codes.speakers_vocabulary[cells.speaker[c]],  # noqa: E731
                          codes.phones[cells.phone[c]])
    within = within_tasks(cells)
    # (x+y, s1): A = a (2 items), B = b; (x+y, s2): A = b (2 items), B = a; (z+z, s1): both cells single.
    assert sorted((describe(a), describe(b)) for a, b in zip(within.a, within.b)) == [
        (("x+y", "s1", "a"), ("x+y", "s1", "b")), (("x+y", "s2", "b"), ("x+y", "s2", "a")),
    ]
    assert (within.x == within.a).all()
    across = across_tasks(cells, max_x_across=5, rng=np.random.default_rng(0))
    triples = sorted((describe(a)[1:], describe(b)[2], describe(x)[1]) for a, b, x in zip(across.a, across.b, across.x))
    assert triples == [
        (("s1", "a"), "b", "s2"), (("s1", "a"), "b", "s3"),  # X = 'a' of s2 and of s3
        (("s1", "b"), "a", "s2"),
        (("s2", "a"), "b", "s1"), (("s2", "a"), "b", "s3"),
        (("s2", "b"), "a", "s1"),
    ]  # nothing in z+z: no other speaker says 'a' or 'c' there
    limited = across_tasks(cells, max_x_across=1, rng=np.random.default_rng(0))
    assert len(limited) == 4


def test_any_context_pools_contexts() -> None:
    codes = item_codes(_items(TINY), "any")
    cells = make_cells(codes, 10, np.random.default_rng(0))
    assert len(cells) == 6  # (s1: a, b, c), (s2: a, b), (s3: a)
    assert int(cells.size.max()) == 3  # 'a' of s1: two in x+y and one in z+z


def test_subsampling_keeps_max_size_group_items_with_the_seed() -> None:
    rows = [("f", "a", "x", "y", "s")] * 25 + [("f", "b", "x", "y", "s")] * 3
    codes = item_codes(_items(rows), "within")
    first = make_cells(codes, 10, np.random.default_rng(3))
    again = make_cells(codes, 10, np.random.default_rng(3))
    assert (first.members == again.members).all()
    assert sorted((first.members >= 0).sum(axis=1).tolist()) == [3, 10]
    assert first.size.tolist() == [25, 3]


def test_libri_light_averaging_order() -> None:
    # Tasks of (speaker, A, B): (s1, a, b) in two contexts with errors 0 and 1, (s2, a, b) error 1,
    # (s1, b, a) error 0. Mean over contexts: s1 a-b .5; over speakers: a-b (.5 + 1) / 2 = .75, b-a 0;
    # over phone pairs: (.75 + 0) / 2.
    rows = [("f", "a", "c1", "c1", "s1"), ("f", "b", "c1", "c1", "s1"), ("f", "a", "c2", "c2", "s1"),
            ("f", "b", "c2", "c2", "s1"), ("f", "a", "c1", "c1", "s2"), ("f", "b", "c1", "c1", "s2")]
    codes = item_codes(_items(rows), "within")
    cells = make_cells(codes, 10, np.random.default_rng(0))
    key = {(codes.contexts[cells.context[c]], codes.speakers_vocabulary[cells.speaker[c]], codes.phones[cells.phone[c]]): c
           for c in range(len(cells))}
    chosen = [(("c1+c1", "s1", "a"), ("c1+c1", "s1", "b"), 0.0), (("c2+c2", "s1", "a"), ("c2+c2", "s1", "b"), 1.0),
              (("c1+c1", "s2", "a"), ("c1+c1", "s2", "b"), 1.0), (("c1+c1", "s1", "b"), ("c1+c1", "s1", "a"), 0.0)]
    a = np.array([key[t[0]] for t in chosen])
    b = np.array([key[t[1]] for t in chosen])
    error, counts = aggregate(Tasks(a, b, a.copy(), within=True), cells, np.array([t[2] for t in chosen]))
    assert error == pytest.approx(0.375)
    assert counts == {"phone_pairs": 2, "speakers": 2}
