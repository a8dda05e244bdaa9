"""Moved to :mod:`cpcaudio.train.checkpoint`; this re-export keeps old imports working until the merge."""

from cpcaudio.train.checkpoint import (  # noqa: F401
    CHECKPOINT_FORMAT,
    CHECKPOINT_FORMAT_VERSION,
    atomic_write_bytes,
    capture_rng_state,
    config_from_checkpoint,
    load,
    load_checkpoint,
    remove_stale_temporaries,
    restore_rng_state,
    save_checkpoint,
)
