"""A view's frames at training resolution: decoded once, optionally kept in an on-disk cache.

:class:`ClipLoader` turns a clip path into the uint8 frames the transforms start from: the frame
window decoded (:func:`mvfoul.data.video.decode_frames`) and resized to the training square
(:func:`mvfoul.data.transforms.prepare_frames`). With a :class:`FrameCache` the result is stored
as an uncompressed ``.npy`` array the first time and memory-mapped back afterwards, so an epoch
reads frames at disk/page-cache speed instead of decoding H.264.

A cache entry is keyed by the clip file's identity (resolved path, size, modification time) and
by everything that shapes the frames (window indices, square size, decoder, cache format), so a
changed file or config never reads stale frames: it simply misses and decodes again.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from mvfoul.data.transforms import prepare_frames
from mvfoul.data.video import decode_frames

# Bump when the stored layout or the preparation changes: old entries then miss.
CACHE_FORMAT = 1


@dataclass(frozen=True)
class LoadedClip:
    frames: torch.Tensor  # uint8 [T, R, R, 3]
    padded: int  # window indices past the clip's end, filled with its last frame
    cached: bool  # read from the cache (False: decoded now)


@dataclass(frozen=True)
class FrameSpec:
    """Everything besides the file that decides a clip's prepared frames."""

    indices: tuple[int, ...]
    square: int  # resize_size: short side, then the centre square
    decoder: str

    def as_dict(self) -> dict:
        return {"indices": list(self.indices), "square": self.square, "decoder": self.decoder, "format": CACHE_FORMAT}


class FrameCache:
    """Prepared frames on disk, one ``<key>.npy`` per (clip file, spec), in 256 sub-folders.

    Writes are atomic (a temporary file renamed into place), so concurrent DataLoader workers or
    an interrupted cache build never leave a half-written entry behind. A clip whose window was
    padded also gets ``<key>.pad`` holding the count, written before the array.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    def key(self, path: Path, spec: FrameSpec) -> str:
        resolved = Path(path).resolve()
        stat = resolved.stat()
        identity = {"path": str(resolved), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, **spec.as_dict()}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    def _entry(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def load(self, path: Path, spec: FrameSpec) -> LoadedClip | None:
        try:
            entry = self._entry(self.key(path, spec))
            frames = np.load(entry, mmap_mode="r")
        except (FileNotFoundError, ValueError, OSError):
            return None  # absent, or unreadable: decode again (and overwrite)
        pad_file = entry.with_suffix(".pad")
        padded = int(pad_file.read_text()) if pad_file.exists() else 0
        # One copy out of the memory map: torch needs writable memory.
        return LoadedClip(torch.from_numpy(np.array(frames)), padded, cached=True)

    def store(self, path: Path, spec: FrameSpec, clip: LoadedClip) -> None:
        entry = self._entry(self.key(path, spec))
        entry.parent.mkdir(parents=True, exist_ok=True)
        if clip.padded:
            _atomic_write(entry.with_suffix(".pad"), str(clip.padded).encode())
        tmp = entry.with_name(f".{entry.name}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, clip.frames.numpy(), allow_pickle=False)
        os.replace(tmp, entry)

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*.npy")) if self.root.exists() else 0


def _atomic_write(target: Path, data: bytes) -> None:
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)


class ClipLoader:
    """Path -> prepared frames, through the cache when there is one. Picklable (DataLoader workers)."""

    def __init__(self, indices: Sequence[int], square: int, decoder: str = "pyav", cache_dir: str | Path | None = None) -> None:
        self.spec = FrameSpec(tuple(int(i) for i in indices), int(square), decoder)
        self.cache = FrameCache(cache_dir) if cache_dir else None

    def decode(self, path: Path) -> LoadedClip:
        decoded = decode_frames(path, self.spec.indices, backend=self.spec.decoder)
        return LoadedClip(prepare_frames(decoded.frames, self.spec.square), decoded.padded, cached=False)

    def __call__(self, path: str | Path) -> LoadedClip:
        path = Path(path)
        if self.cache is None:
            return self.decode(path)
        hit = self.cache.load(path, self.spec)
        if hit is not None:
            return hit
        clip = self.decode(path)
        self.cache.store(path, self.spec, clip)
        return clip
