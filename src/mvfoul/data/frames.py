"""A view's frames at training resolution: decoded once, optionally kept in an on-disk cache.

:class:`ClipLoader` turns a clip path into the uint8 frames the transforms start from: the frame
window decoded (:func:`mvfoul.data.video.decode_frames`) and resized to the training square
(:func:`mvfoul.data.transforms.prepare_frames`). With a :class:`FrameCache` the result is stored
as an uncompressed ``.npy`` array the first time and read back (memory-mapped, then copied once
into a tensor) afterwards, so an epoch reads frames at disk/page-cache speed instead of decoding
H.264.

A cache entry is keyed by the clip file's identity (resolved path, size, modification time) and
by everything that shapes the frames (window indices, square size, decoder, cache format), so a
changed file or config never reads stale frames: it simply misses and decodes again. An entry is
also *checked* when read: its array must have the shape and dtype its key implies and the CRC-32
recorded when it was written (~0.5 ms for a 16x256x256 clip). A damaged entry (a disk error, a
file truncated or overwritten by hand) is decoded again, rewritten, and counted in
:attr:`ClipLoader.repaired`; it is never read as frames.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mvfoul import atomic
from mvfoul.data.transforms import prepare_frames
from mvfoul.data.video import decode_frames

log = logging.getLogger(__name__)

# Bump when the stored layout or the preparation changes: old entries then miss.
# 2: a .json record (shape, dtype, padded frames, CRC-32) beside each .npy array.
CACHE_FORMAT = 2


@dataclass(frozen=True)
class LoadedClip:
    frames: torch.Tensor  # uint8 [T, R, R, 3]
    padded: int  # window indices past the clip's end, filled with its last frame
    cached: bool  # read from the cache (False: decoded now)
    repaired: str | None = None  # why a damaged cache entry was decoded again (None: it was not)


@dataclass(frozen=True)
class FrameSpec:
    """Everything besides the file that decides a clip's prepared frames."""

    indices: tuple[int, ...]
    square: int  # resize_size: short side, then the centre square
    decoder: str

    def as_dict(self) -> dict:
        return {
            "indices": list(self.indices),
            "square": self.square,
            "decoder": self.decoder,
            "format": CACHE_FORMAT,
        }

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """The shape every entry of this spec must have: [T, R, R, 3]."""
        return (len(self.indices), self.square, self.square, 3)


class DamagedEntry(Exception):
    """Internal: a cache entry exists but disagrees with its key or its checksum."""


def _checksum(frames: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(frames).data) & 0xFFFFFFFF


class FrameCache:
    """Prepared frames on disk: ``<key>.npy`` (the array) and ``<key>.json`` (its shape, dtype,
    padded-frame count and CRC-32), in 256 sub-folders.

    Both files are written atomically, the array first and the record last, so an entry without
    its record is incomplete and simply misses; concurrent DataLoader workers or an interrupted
    cache build never leave a half-written entry that reads as valid.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    def key(self, path: Path, spec: FrameSpec) -> str:
        resolved = Path(path).resolve()
        stat = resolved.stat()
        identity = {
            "path": str(resolved),
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            **spec.as_dict(),
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    def _entry(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def load(self, path: Path, spec: FrameSpec) -> LoadedClip | None:
        """The cached frames, None when absent; raises :class:`DamagedEntry` when an entry exists
        but its array disagrees with its key (shape, dtype) or its recorded checksum."""
        try:
            entry = self._entry(self.key(path, spec))
            record = json.loads(entry.with_suffix(".json").read_text(encoding="utf-8"))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, ValueError) as err:
            raise DamagedEntry(f"unreadable record ({err})") from None
        try:
            frames = np.load(entry, mmap_mode="r")
        except FileNotFoundError:
            raise DamagedEntry("its array is missing") from None
        except (OSError, ValueError) as err:
            raise DamagedEntry(f"unreadable array ({err})") from None
        if tuple(frames.shape) != spec.shape or frames.dtype != np.uint8:
            raise DamagedEntry(
                f"array {frames.dtype} {list(frames.shape)} where its key implies uint8 {list(spec.shape)}"
            )
        # One copy out of the memory map: torch needs writable memory (and a file truncated
        # under the map would fault on access, so read it once, here, before checking it).
        try:
            copied = np.array(frames)
        except (OSError, ValueError) as err:  # pragma: no cover - a file shrunk after np.load
            raise DamagedEntry(f"unreadable array ({err})") from None
        if record.get("crc32") != _checksum(copied) or record.get("shape") != list(spec.shape):
            raise DamagedEntry(
                "its content does not match the checksum recorded when it was written"
            )
        return LoadedClip(torch.from_numpy(copied), int(record.get("padded", 0)), cached=True)

    def store(self, path: Path, spec: FrameSpec, clip: LoadedClip) -> None:
        entry = self._entry(self.key(path, spec))
        entry.parent.mkdir(parents=True, exist_ok=True)
        frames = clip.frames.numpy()
        # The record goes last: its presence says the array before it is complete.
        with atomic.atomic_path(entry, durable=False) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, frames, allow_pickle=False)
        record = {
            "shape": list(frames.shape),
            "dtype": str(frames.dtype),
            "padded": clip.padded,
            "crc32": _checksum(frames),
        }
        atomic.write_text(entry.with_suffix(".json"), json.dumps(record) + "\n", durable=False)

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*.npy")) if self.root.exists() else 0


class ClipLoader:
    """Path -> prepared frames, through the cache when there is one. Picklable (DataLoader workers)."""

    def __init__(
        self,
        indices: Sequence[int],
        square: int,
        decoder: str = "pyav",
        cache_dir: str | Path | None = None,
    ) -> None:
        self.spec = FrameSpec(tuple(int(i) for i in indices), int(square), decoder)
        self.cache = FrameCache(cache_dir) if cache_dir else None

    def decode(self, path: Path) -> LoadedClip:
        decoded = decode_frames(path, self.spec.indices, backend=self.spec.decoder)
        return LoadedClip(
            prepare_frames(decoded.frames, self.spec.square), decoded.padded, cached=False
        )

    def __call__(self, path: str | Path) -> LoadedClip:
        path = Path(path)
        if self.cache is None:
            return self.decode(path)
        repaired = None
        try:
            hit = self.cache.load(path, self.spec)
        except DamagedEntry as damage:
            hit = None
            repaired = f"frame cache entry of {path} was damaged ({damage}); decoded again"
            log.warning(repaired)
        if hit is not None:
            return hit
        clip = self.decode(path)
        self.cache.store(path, self.spec, clip)
        return LoadedClip(clip.frames, clip.padded, cached=False, repaired=repaired)
