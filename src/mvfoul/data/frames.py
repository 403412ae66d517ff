"""A view's frames at training resolution, optionally cached on disk as ``.npy`` arrays.

An entry's key holds the clip file's identity (resolved path, size, mtime) and all that shapes
the frames, so a changed file or config misses. An entry whose shape, dtype or CRC-32 (checked on
every read: ~0.5 ms for 16x256x256) disagrees is decoded again, rewritten and reported, never used.
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
from omegaconf import DictConfig

from mvfoul import atomic
from mvfoul.data.transforms import prepare_frames
from mvfoul.data.video import decode_frames
from mvfoul.validate import Problems, cross_key_rule

log = logging.getLogger(__name__)

# Bump when the stored layout or the preparation changes: old entries then miss.
CACHE_FORMAT = 2


@dataclass(frozen=True)
class LoadedClip:
    frames: torch.Tensor  # uint8 [T, R, R, 3]
    padded: int  # window indices past the clip's end, filled with its last frame
    cached: bool  # read from the cache (False: decoded now)
    repaired: str | None = None  # why a damaged cache entry was decoded again (None: it was not)


class DamagedEntry(Exception):
    """A cache entry disagrees with its key or its checksum."""


def _checksum(frames: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(frames).data) & 0xFFFFFFFF


class ClipLoader:
    """Path -> prepared frames, through the cache when there is one. Picklable (DataLoader workers).
    An entry is ``<key>.npy`` and its ``<key>.json`` record, written atomically, the record last,
    so concurrent workers or an interrupted build never leave a half-written valid entry."""

    def __init__(
        self,
        indices: Sequence[int],
        square: int,  # resize_size: short side, then the centre square
        decoder: str = "pyav",
        cache_dir: str | Path | None = None,
    ) -> None:
        self.indices = tuple(int(i) for i in indices)
        self.square = int(square)
        self.decoder = decoder
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self.shape = (len(self.indices), self.square, self.square, 3)

    def decode(self, path: Path) -> LoadedClip:
        decoded = decode_frames(path, self.indices, backend=self.decoder)
        return LoadedClip(prepare_frames(decoded.frames, self.square), decoded.padded, cached=False)

    def __call__(self, path: str | Path) -> LoadedClip:
        path = Path(path)
        if self.cache_dir is None:
            return self.decode(path)
        repaired = None
        try:
            if hit := self._load(path):
                return hit
        except DamagedEntry as damage:
            repaired = f"frame cache entry of {path} was damaged ({damage}); decoded again"
            log.warning(repaired)
        clip = self.decode(path)
        self._store(path, clip)
        return LoadedClip(clip.frames, clip.padded, cached=False, repaired=repaired)

    def cache_size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.cache_dir.rglob("*.npy")) if self.cache_dir else 0

    def _entry(self, path: Path) -> Path:
        assert self.cache_dir is not None
        resolved = path.resolve()
        stat = resolved.stat()
        identity = {
            "path": str(resolved),
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "indices": list(self.indices),
            "square": self.square,
            "decoder": self.decoder,
            "format": CACHE_FORMAT,
        }
        key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        return self.cache_dir / key[:2] / f"{key}.npy"

    def _load(self, path: Path) -> LoadedClip | None:
        """The cached frames, None when absent; raises :class:`DamagedEntry` for a bad entry."""
        try:
            entry = self._entry(path)
            record = json.loads(entry.with_suffix(".json").read_text(encoding="utf-8"))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, ValueError) as err:
            raise DamagedEntry(f"unreadable record ({err})") from None
        try:
            frames = np.load(entry, mmap_mode="r")
            if tuple(frames.shape) != self.shape or frames.dtype != np.uint8:
                raise DamagedEntry(
                    f"array {frames.dtype} {list(frames.shape)} where its key implies uint8 {list(self.shape)}"
                )
            # One copy out of the memory map: torch needs writable memory (and a file truncated
            # under the map would fault on access, so read it once, here, before checking it).
            copied = np.array(frames)
        except FileNotFoundError:
            raise DamagedEntry("its array is missing") from None
        except (OSError, ValueError) as err:
            raise DamagedEntry(f"unreadable array ({err})") from None
        if record.get("crc32") != _checksum(copied) or record.get("shape") != list(self.shape):
            raise DamagedEntry(
                "its content does not match the checksum recorded when it was written"
            )
        return LoadedClip(torch.from_numpy(copied), int(record.get("padded", 0)), cached=True)

    def _store(self, path: Path, clip: LoadedClip) -> None:
        entry = self._entry(path)
        entry.parent.mkdir(parents=True, exist_ok=True)
        frames = clip.frames.numpy()
        # An open file, not the path: np.save would append ".npy" to the temporary name.
        with atomic.atomic_path(entry, durable=False) as tmp, open(tmp, "wb") as f:
            np.save(f, frames, allow_pickle=False)
        record = {
            "shape": list(frames.shape),
            "dtype": str(frames.dtype),
            "padded": clip.padded,
            "crc32": _checksum(frames),
        }
        atomic.write_text(entry.with_suffix(".json"), json.dumps(record) + "\n", durable=False)


@cross_key_rule("dataset")
def check_cache_dir(cfg: DictConfig, p: Problems) -> None:
    """The frame cache's folder can be created before hours of decoding go into it."""
    cache_dir = cfg.dataset.cache_dir
    if not cache_dir:
        return
    path = Path(cache_dir).expanduser()
    # The folder itself, or else its nearest existing parent, must be a folder.
    existing = next((q for q in (path, *path.parents) if q.exists()), None)
    if existing is None or existing.is_dir():
        return
    problem = (
        "is a file, not a folder" if existing == path else f"lies under {existing}, which is a file"
    )
    p.add(
        "dataset.cache_dir",
        f"{cache_dir!r} {problem}: give a folder (it is created if missing), or null for no cache",
    )
