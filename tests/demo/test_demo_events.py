"""The demo's progress events: stages numbered in order, library progress forwarded as ``progress`` events."""

from __future__ import annotations

from cpcaudio.demo import DemoEvent
from cpcaudio.demo.stages import Emitter
from cpcaudio.progress import Progress


def test_library_progress_becomes_demo_events_of_the_stage():
    events: list[DemoEvent] = []
    emit = Emitter(events.append)
    emit.count = 6
    emit(DemoEvent("data", "start"))
    emit.forwarder("data")(Progress("prepare", 3, 26, "utt"))
    emit.forwarder("data")(4, 26)  # the positional form of the functions that do not send Progress yet
    probe = emit.forwarder("probe-phone", describe=True)
    probe(Progress("features: mfcc", 1, 20, "utt"))
    probe("features: logmel", 2, 20)
    assert [(e.stage, e.kind, e.index, e.count) for e in events] == [
        ("data", "start", 1, 6), ("data", "progress", 1, 6), ("data", "progress", 1, 6),
        ("probe-phone", "progress", 2, 6), ("probe-phone", "progress", 2, 6),
    ]
    assert [(e.done, e.total, e.message) for e in events[1:]] == [
        (3, 26, ""), (4, 26, ""), (1, 20, "features: mfcc"), (2, 20, "features: logmel"),
    ]
