"""Moved to :mod:`cpcaudio.train.distributed`; this re-export keeps old imports working until the merge.

``resolve_device`` is :func:`cpcaudio.devices.resolve_device` (the one device resolver)."""

from cpcaudio.train.distributed import (  # noqa: F401
    DistributedContext,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    broadcast_object,
    init_distributed,
    resolve_device,
    teardown,
)
