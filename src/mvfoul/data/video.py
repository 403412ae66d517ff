"""Frame selection and decoding of one view's clip.

The official VARS baseline decodes every frame of a clip to RGB, then keeps a 16-frame window
around the foul. Here the window's indices come first and only the work they need is done. With
PyAV, decoding starts at the keyframe before the window instead of frame 0, frames before the
window that no other frame references are not decoded at all, decoding stops at the window's
last frame, and only the kept frames are converted to RGB. torchcodec, where it is usable,
decodes by index on its own. Every path gives the very same pixels as decoding everything
(``tests/test_video.py`` checks that on real broadcast clips).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from mvfoul.config import DECODERS
from mvfoul.errors import ConfigError, DataError

# A window starting before this frame is decoded from frame 0: there is too little before it
# to skip for the seeking path (and its assumptions about timestamps) to pay off.
SEEK_MIN_FRAME = 8

_TORCHCODEC_FIX = (
    "apt-get install ffmpeg && pip install -e '.[torchcodec]', or set dataset.decoder=pyav"
)


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


# --- choosing a decoder ----------------------------------------------------------------------


def available_decoders() -> list[str]:
    """The decoders usable in this environment, the one ``auto`` picks first.

    PyAV comes first although torchcodec is the younger, index-based API: on the real clips
    (``benchmarks/data_loading.py``) mvfoul's PyAV path, which skips the frames the window does
    not depend on, decodes the window faster than torchcodec, which decodes every frame from the
    keyframe on. torchcodec stays one key away (``dataset.decoder=torchcodec``).
    """
    return ["pyav"] if _torchcodec_problem() else ["pyav", "torchcodec"]


def resolve_decoder(name: str) -> str:
    """``dataset.decoder`` -> the decoder to use (``pyav`` or ``torchcodec``).

    ``auto`` quietly falls back to PyAV; an explicit ``torchcodec`` that cannot run here is a
    configuration error, raised at startup rather than in the first data-loader worker.
    """
    if name == "auto":
        return available_decoders()[0]
    if name == "pyav":
        return name
    if name == "torchcodec":
        problem = _torchcodec_problem()
        if problem:
            raise ConfigError(
                f"dataset.decoder: torchcodec is not usable here ({problem}): {_TORCHCODEC_FIX}"
            )
        return name
    raise ConfigError(f"dataset.decoder: {name!r} is not one of {', '.join(DECODERS)}")


@functools.cache
def _torchcodec_problem() -> str | None:
    """Why torchcodec cannot decode here, or None when it can.

    Importing its decoders loads the FFmpeg libraries it links against, so a successful import
    is the check: without system FFmpeg it raises (RuntimeError or OSError, not ImportError).
    """
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: F401
    except Exception as err:  # noqa: BLE001 - any failure means "not usable", with its reason
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return first_line[:200]
    return None


# --- decoding --------------------------------------------------------------------------------


def decode_frames(path: str | Path, indices: Sequence[int], backend: str = "auto") -> DecodedClip:
    """Decode the frames at ``indices`` (presentation order, from 0) of a clip.

    Indices may repeat and come in any order; frames come back in request order. A clip that
    ends before the largest index is padded with its last frame, and ``padded`` says how many
    requested indices were filled that way, so the caller can count and report it. ``backend``
    is a ``dataset.decoder`` value (see :func:`resolve_decoder`). A missing, empty, truncated or
    unreadable file raises :class:`DataError` naming it, whatever the backend.
    """
    path = Path(path)
    wanted = [int(i) for i in indices]
    if not wanted:
        raise ValueError("decode_frames needs at least one frame index")
    if min(wanted) < 0:
        raise ValueError(f"frame indices must be >= 0, got {min(wanted)}")
    if resolve_decoder(backend) == "torchcodec":
        return _decode_torchcodec(path, wanted)
    if min(wanted) >= SEEK_MIN_FRAME:
        with _open_video(path) as (container, stream):
            kept = _decode_window_seeking(container, stream, wanted)
        if kept is not None:
            return DecodedClip(torch.from_numpy(np.stack([kept[i] for i in wanted])), padded=0)
    return _decode_from_start(path, wanted)


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
        _check_complete(path, stream.frames, len(frames))
    return torch.from_numpy(np.stack(frames))


def _decode_window_seeking(
    container: av.container.InputContainer, stream: av.VideoStream, wanted: list[int]
) -> dict[int, np.ndarray] | None:
    """The window's frames by index, decoded from the keyframe before it; None to fall back.

    Frame indices come from timestamps here (there is no counting from frame 0 after a seek),
    so every assumption that makes them equal to the counted indices of a full decode is
    checked, and any doubt returns None for :func:`_decode_from_start`: no usable timestamps
    or rate, a seek that lands after the window, indices that repeat, go back or skip inside
    the window, a clip that ends before the window does (padding and truncation are the plain
    path's business), or a decoding error (the plain path reports it, if it is real). What
    is not checked (it would take decoding from frame 0): that frame 0 of a full decode is the
    frame at the stream's start time; it is on every real clip the tests decode.
    """
    rate, time_base, start = stream.average_rate, stream.time_base, stream.start_time
    if not rate or not time_base or start is None:
        return None
    needed, first, last = set(wanted), min(wanted), max(wanted)

    def index_of(pts: int) -> int:
        return round((pts - start) * time_base * rate)

    # frame.to_ndarray(format="rgb24") sets up a new conversion context for every frame; one
    # for the clip gives the same pixels and the whole decode ~10% faster (measured).
    to_rgb = VideoReformatter()
    kept: dict[int, np.ndarray] = {}
    previous = -1
    try:
        # The last keyframe at or before the first needed frame. Some muxers index decoding
        # timestamps, which can put that keyframe after the frame: the guard below sees it.
        container.seek(start + int(first / (rate * time_base)), stream=stream, backward=True)
        for frame in _decode_stream(container, stream, index_of, skip_nonref_before=first):
            if frame.pts is None:
                return None
            index = index_of(frame.pts)
            expected = first if previous < first else previous + 1
            if index <= previous or (index >= first and index != expected):
                return None
            if index in needed:
                kept[index] = to_rgb.reformat(frame, format="rgb24").to_ndarray()
            if index == last:
                return kept
            previous = index
    except av.FFmpegError:
        return None
    return None


def _decode_from_start(path: Path, wanted: list[int]) -> DecodedClip:
    """Decode from frame 0, counting frames, up to the last needed one; pads a short clip."""
    needed, last_needed = set(wanted), max(wanted)
    to_rgb = VideoReformatter()
    kept: dict[int, np.ndarray] = {}
    last_frame = None
    count = 0
    with _open_video(path) as (container, stream):
        try:
            for count, frame in enumerate(_decode_stream(container, stream), start=1):
                index = count - 1
                if index in needed:
                    kept[index] = to_rgb.reformat(frame, format="rgb24").to_ndarray()
                if index >= last_needed:
                    break
                last_frame = frame
        except av.FFmpegError as err:
            raise _damaged(path, err) from None
        if count == 0:
            raise DataError(f"video {path} holds no decodable frame; the file is damaged")
        if count <= last_needed:
            _check_complete(path, stream.frames, count)
        padded = sum(1 for i in wanted if i >= count)
        if padded and count - 1 not in kept:
            # last_frame is the clip's final frame here (the loop never reached last_needed).
            assert last_frame is not None  # count > 0 frames were decoded
            kept[count - 1] = to_rgb.reformat(last_frame, format="rgb24").to_ndarray()
        frames = [kept[min(i, count - 1)] for i in wanted]
    return DecodedClip(frames=torch.from_numpy(np.stack(frames)), padded=padded)


def _decode_stream(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    index_of: Callable[[int], int] | None = None,
    skip_nonref_before: int | None = None,
) -> Iterator[av.VideoFrame]:
    """Decode ``stream`` from where the container stands; frames in presentation order.

    With ``skip_nonref_before``, the packets of frames shown before that index and referenced
    by no other frame (most B-frames) are dropped by the decoder instead of decoded: nothing
    needs them. The switch is made per packet, before it is sent, so the frames of the window
    are decoded normally even though packets arrive in decoding order.
    """
    codec = stream.codec_context
    for packet in container.demux(stream):
        if skip_nonref_before is not None and index_of is not None and packet.pts is not None:
            before = index_of(packet.pts) < skip_nonref_before
            codec.skip_frame = "NONREF" if before else "DEFAULT"
        yield from codec.decode(packet)


def _decode_torchcodec(path: Path, wanted: list[int]) -> DecodedClip:
    """torchcodec decodes by index (it scans the file for keyframes and seeks by itself).

    Its failures are mapped to the same messages as PyAV's. Its frame count comes from the
    packets in the file, so a clip cut short shows up as fewer frames than its header lists.
    """
    _check_file(path)
    from torchcodec.decoders import VideoDecoder

    try:
        decoder = VideoDecoder(str(path), dimension_order="NHWC")
    except (RuntimeError, ValueError) as err:
        raise DataError(
            f"cannot open video {path}: {_reason(err, path)}; the file is damaged or not a video"
        ) from None
    count = len(decoder)
    if count == 0:
        raise DataError(f"video {path} holds no decodable frame; the file is damaged")
    if max(wanted) >= count:
        _check_complete(path, decoder.metadata.num_frames_from_header or 0, count)
    try:
        frames = decoder.get_frames_at([min(i, count - 1) for i in wanted]).data
    except (RuntimeError, ValueError, IndexError) as err:
        raise _damaged(path, err) from None
    return DecodedClip(frames=frames, padded=sum(1 for i in wanted if i >= count))


# --- opening files and reporting faults -------------------------------------------------------


def _check_file(path: Path) -> None:
    """Missing and empty files are checked first because FFmpeg's message for both ("Invalid
    data found") would send the user looking in the wrong place."""
    if not path.is_file():
        raise DataError(f"video {path} not found; check the dataset download")
    if path.stat().st_size == 0:
        raise DataError(f"video {path} is empty (0 bytes); re-download it")


@contextmanager
def _open_video(path: Path) -> Iterator[tuple[av.container.InputContainer, av.VideoStream]]:
    """Open ``path`` with PyAV and yield its first video stream; always closes the container."""
    _check_file(path)
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as err:
        raise DataError(
            f"cannot open video {path}: {_reason(err, path)}; the file is damaged or not a video"
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


def _reason(err: Exception, path: Path) -> str:
    """FFmpeg's own words, without what the message says already (the file name) and without
    torchcodec's source location prefix."""
    text = getattr(err, "strerror", None) or (str(err).strip().splitlines() or [""])[0]
    if str(path) in text:
        text = text.split(str(path), 1)[1].strip(" :,")
    return text or type(err).__name__


def _check_complete(path: Path, listed: int, decoded: int) -> None:
    """Refuse a clip whose decoding ended before the frame count its header lists.

    With frame threading (``thread_type="AUTO"``) FFmpeg does not report a packet cut short by
    a truncated download: decoding just ends early. Without this check such a clip would be
    padded with its last frame and pass as a short clip. ``listed`` is 0 when the container
    does not say, and then a short clip is taken at its word.
    """
    if 0 < decoded < listed:
        raise DataError(
            f"video {path} ends after {decoded} of the {listed} frames its header lists; "
            f"the file is truncated or damaged, re-download it"
        )


def _damaged(path: Path, err: Exception) -> DataError:
    return DataError(f"cannot decode video {path}: {_reason(err, path)}; the file is damaged")
