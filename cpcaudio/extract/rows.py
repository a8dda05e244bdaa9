"""Writing the rows of ``features.npy.partial`` and copying them out, without a memory map.

Rows written through a writable memory map stay resident in the writing process until they are evicted,
so its resident size grows with the store (a 2-hour file's 256-dim context is 703 MiB). Here rows go
to the file with ``os.pwrite`` and ``--npy`` copies are made with ``os.pread`` in blocks: the page
cache holds them, the process does not.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cpcaudio.files import atomic_write_bytes

COPY_BYTES = 16 << 20  # bytes per read when copying rows out


def data_offset(path: Path) -> tuple[int, tuple[int, ...]]:
    """Byte offset of the data of the ``.npy`` file ``path`` (float32, C order), and its shape."""
    with open(path, "rb") as file:
        version = np.lib.format.read_magic(file)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(file)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(file)
        if fortran or dtype != np.dtype("<f4"):
            raise ValueError(f"{path} is not a C-ordered little-endian float32 array")
        return file.tell(), tuple(shape)


class FeatureRows:
    """Write rows of a (total_frames, dim) float32 ``.npy`` file in place (``os.pwrite``).

    Example::

        with FeatureRows(out / "features.npy.partial") as rows:
            rows.write(120, frames)      # frames (n, dim) into rows 120 .. 120 + n
            rows.sync()                  # on disk before the progress marker says so
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset, shape = data_offset(path)
        self.rows, self.dim = int(shape[0]), int(shape[1])
        self._fd = os.open(path, os.O_RDWR)

    def write(self, first_row: int, frames: np.ndarray) -> None:
        """Write ``frames`` (n, dim) at rows ``[first_row, first_row + n)``."""
        frames = np.ascontiguousarray(frames, dtype="<f4")
        if frames.ndim != 2 or frames.shape[1] != self.dim or not 0 <= first_row <= self.rows - frames.shape[0]:
            raise ValueError(f"rows {first_row}+{frames.shape} do not fit ({self.rows}, {self.dim})")
        view = memoryview(frames).cast("B")
        position = self.offset + first_row * self.dim * 4
        while view.nbytes:
            count = os.pwrite(self._fd, view, position)
            view, position = view[count:], position + count

    def sync(self) -> None:
        """Make every row written so far durable (as the progress marker that follows it)."""
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "FeatureRows":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def copy_rows_to_npy(features: Path, target: Path, first_row: int, count: int, dim: int) -> None:
    """Write rows ``[first_row, first_row + count)`` of the features file as the ``.npy`` ``target``
    (atomically), in blocks of :data:`COPY_BYTES`; byte for byte what ``np.save`` of the rows writes."""
    header = {"descr": "<f4", "fortran_order": False, "shape": (count, dim)}
    offset = data_offset(features)[0] + first_row * dim * 4 if count else 0

    def write(file: object) -> None:
        np.lib.format.write_array_header_1_0(file, header)
        if not count:
            return
        with open(features, "rb") as source:
            remaining, position = count * dim * 4, offset
            while remaining:
                data = os.pread(source.fileno(), min(COPY_BYTES, remaining), position)
                if not data:
                    raise EOFError(f"{features} ends before row {first_row + count}")
                file.write(data)  # type: ignore[attr-defined]
                remaining -= len(data)
                position += len(data)

    atomic_write_bytes(target, write)


def export_npy(features: Path, targets: Sequence[Path], offsets: Sequence[int], lengths: Sequence[int], dim: int) -> int:
    """``npy/<id>.npy`` for every utterance whose ``targets`` file does not exist yet; returns how many."""
    written = 0
    for target, offset, count in zip(targets, offsets, lengths):
        if target.is_file():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        copy_rows_to_npy(features, target, int(offset), int(count), dim)
        written += 1
    return written


def reserve(path: Path) -> None:
    """Allocate the disk blocks of a freshly created (sparse) file, so that a full disk is an error now
    rather than later, when a row is written."""
    from cpcaudio.resources import disk_full_error, is_disk_full

    if not hasattr(os, "posix_fallocate"):
        return
    with open(path, "r+b") as file:
        try:
            os.posix_fallocate(file.fileno(), 0, os.fstat(file.fileno()).st_size)
        except OSError as error:
            if is_disk_full(error):
                raise disk_full_error(path.parent, error, "the feature store") from None
            # EINVAL/EOPNOTSUPP: the file system cannot reserve space; carry on without.
