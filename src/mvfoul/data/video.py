"""Frame selection and decoding of one view's clip.

The official VARS baseline decodes every frame of a clip to RGB, then keeps a 16-frame window
around the foul. Here the window's indices are computed first and decoding stops at the last one,
and only the kept frames are converted to RGB: the same pixels for a fraction of the work
(``tests/test_video.py`` checks the equality on real clips).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch

from mvfoul.errors import DataError


def window_frame_indices(
    start_frame: int, end_frame: int, fps: float, clip_fps: float = 25.0
) -> list[int]:
    """The absolute frame indices the official baseline keeps from ``frames[start:end]``.

    The baseline keeps window position ``j`` when ``j % factor < 1``. ``factor`` is written
    exactly as the baseline writes it (not simplified to ``clip_fps / fps``) so that float
    rounding at the ``< 1`` boundary picks the very same frames.
    """
    if end_frame <= start_frame:
        raise ValueError(f"end_frame ({end_frame}) must be > start_frame ({start_frame})")
    if start_frame < 0:
        raise ValueError(f"start_frame must be >= 0, got {start_frame}")
    if clip_fps <= 0:
        raise ValueError(f"clip_fps must be > 0, got {clip_fps}")
    if not 0 < fps <= clip_fps:
        raise ValueError(f"fps must be in (0, clip_fps={clip_fps}], got {fps}")
    length = end_frame - start_frame
    factor = length / ((length / clip_fps) * fps)
    return [start_frame + j for j in range(length) if j % factor < 1]


@dataclass
class DecodedClip:
    frames: torch.Tensor  # uint8 [T, H, W, 3] RGB, one per requested index, in request order
    padded: int  # requested indices past the end of the clip (filled with the last frame)


def decode_frames(path: str | Path, indices: Sequence[int]) -> DecodedClip:
    """Decode the frames at ``indices`` (presentation order, from 0) of a clip.

    Indices may repeat and come in any order. Decoding stops at the largest index. A clip that
    ends before it is padded with its last frame, and ``padded`` says how many requested
    indices were filled that way, so the caller can count and report it.
    """
    path = Path(path)
    wanted = [int(i) for i in indices]
    if not wanted:
        raise ValueError("decode_frames needs at least one frame index")
    if min(wanted) < 0:
        raise ValueError(f"frame indices must be >= 0, got {min(wanted)}")
    needed = set(wanted)
    last_needed = max(wanted)

    kept: dict[int, np.ndarray] = {}
    last_frame = None
    count = 0
    with _open_video(path) as (container, stream):
        try:
            for count, frame in enumerate(container.decode(stream), start=1):
                index = count - 1
                if index in needed:
                    kept[index] = frame.to_ndarray(format="rgb24")
                if index >= last_needed:
                    break
                last_frame = frame
        except av.FFmpegError as err:
            raise _damaged(path, err) from None
        if count == 0:
            raise DataError(f"video {path} holds no decodable frame; the file is damaged")
        if count <= last_needed:
            _check_complete(path, stream, count)
        padded = sum(1 for i in wanted if i >= count)
        if padded:
            # last_frame is the clip's final frame here (the loop never reached last_needed).
            filler = kept.get(count - 1)
            if filler is None:
                filler = last_frame.to_ndarray(format="rgb24")
            frames = [kept[i] if i < count else filler for i in wanted]
        else:
            frames = [kept[i] for i in wanted]
    return DecodedClip(frames=torch.from_numpy(np.stack(frames)), padded=padded)


def decode_all_frames(path: str | Path) -> torch.Tensor:
    """Every frame of a clip as uint8 RGB ``[N, H, W, 3]``: the baseline's way, for reference."""
    path = Path(path)
    with _open_video(path) as (container, stream):
        try:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        except av.FFmpegError as err:
            raise _damaged(path, err) from None
        if not frames:
            raise DataError(f"video {path} holds no decodable frame; the file is damaged")
        _check_complete(path, stream, len(frames))
    return torch.from_numpy(np.stack(frames))


@contextmanager
def _open_video(path: Path) -> Iterator[tuple[av.container.InputContainer, av.VideoStream]]:
    """Open ``path`` and yield its first video stream; always closes the container.

    Missing and empty files are checked first because FFmpeg's message for both ("Invalid data
    found") would send the user looking in the wrong place.
    """
    if not path.is_file():
        raise DataError(f"video {path} not found; check the dataset download")
    if path.stat().st_size == 0:
        raise DataError(f"video {path} is empty (0 bytes); re-download it")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as err:
        raise DataError(
            f"cannot open video {path}: {_reason(err)}; the file is damaged or not a video"
        ) from None
    try:
        if not container.streams.video:
            raise DataError(f"{path} has no video stream; expected an mp4 clip")
        stream = container.streams.video[0]
        # Frame-level threading speeds H.264 decoding up; harmless for the early stop.
        stream.thread_type = "AUTO"
        yield container, stream
    finally:
        container.close()


def _reason(err: Exception) -> str:
    # FFmpeg errors repeat the file name in str(err); the message names the file already.
    return getattr(err, "strerror", None) or str(err)


def _check_complete(path: Path, stream: av.VideoStream, decoded: int) -> None:
    """Refuse a clip whose decoding ended before the frame count its header lists.

    With frame threading (``thread_type="AUTO"``) FFmpeg does not report a packet cut short by
    a truncated download: decoding just ends early. Without this check such a clip would be
    padded with its last frame and pass as a short clip. ``stream.frames`` is 0 when the
    container does not say, and then a short clip is taken at its word.
    """
    if 0 < decoded < stream.frames:
        raise DataError(
            f"video {path} ends after {decoded} of the {stream.frames} frames its header lists; "
            f"the file is truncated or damaged, re-download it"
        )


def _damaged(path: Path, err: Exception) -> DataError:
    return DataError(f"cannot decode video {path}: {_reason(err)}; the file is damaged")
