"""Frame selection and decoding of one view's clip: only the window's frames, with the very
same pixels as the baseline's decode-everything (PyAV seeks to the keyframe before the window and
skips unreferenced frames before it; torchcodec, where usable, decodes by index)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter
from omegaconf import DictConfig

from mvfoul.errors import ConfigError, DataError
from mvfoul.validate import Problems, cross_key_rule

# A window starting before this frame is decoded from frame 0: there is too little before it
# to skip for the seeking path (and its assumptions about timestamps) to pay off.
SEEK_MIN_FRAME = 8


def window_frame_indices(
    start_frame: int, end_frame: int, fps: float, clip_fps: float = 25.0
) -> list[int]:
    """The frame indices the official baseline keeps from ``frames[start:end]``; ``factor`` is
    written as the baseline writes it, so that float rounding picks the same frames."""
    if end_frame <= start_frame:
        raise ValueError(f"end_frame ({end_frame}) must be > start_frame ({start_frame})")
    if not 0 < fps <= clip_fps:
        raise ValueError(f"fps must be in (0, clip_fps={clip_fps}], got {fps}")
    length = end_frame - start_frame
    factor = length / ((length / clip_fps) * fps)
    return [start_frame + j for j in range(length) if j % factor < 1]


@dataclass
class DecodedClip:
    frames: torch.Tensor  # uint8 [T, H, W, 3] RGB, one per requested index, in request order
    padded: int  # requested indices past the end of the clip (filled with the last frame)


def available_decoders() -> list[str]:
    """The decoders usable here; ``auto`` picks the first, PyAV (``benchmarks/data_loading.py``)."""
    return ["pyav"] if _torchcodec_problem() else ["pyav", "torchcodec"]


def resolve_decoder(name: str) -> str:
    """``dataset.decoder`` -> ``pyav`` or ``torchcodec``; an unusable ``torchcodec`` is a ConfigError."""
    if name == "auto":
        return available_decoders()[0]
    if name == "torchcodec" and (problem := _torchcodec_problem()):
        raise ConfigError(
            f"dataset.decoder: torchcodec is not usable here ({problem}): "
            "apt-get install ffmpeg && pip install -e '.[torchcodec]', or set dataset.decoder=pyav"
        )
    return name


@functools.cache
def _torchcodec_problem() -> str | None:
    """Why torchcodec cannot decode here, or None: importing its decoders loads FFmpeg."""
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: F401
    except Exception as err:  # noqa: BLE001 - any failure means "not usable", with its reason
        return (_first_line(err) or type(err).__name__)[:200]
    return None


def _first_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else ""


def decode_frames(path: str | Path, indices: Sequence[int], backend: str = "auto") -> DecodedClip:
    """The frames at ``indices`` (from 0, any order, repeats allowed), in request order; indices
    past the end get the last frame, counted in ``padded``. A bad file raises DataError."""
    path = Path(path)
    wanted = [int(i) for i in indices]
    if resolve_decoder(backend) == "torchcodec":
        return _decode_torchcodec(path, wanted)
    if min(wanted) >= SEEK_MIN_FRAME:
        with _open_video(path) as (container, stream):
            kept = _decode_window_seeking(container, stream, wanted)
        if kept is not None:
            return DecodedClip(torch.from_numpy(np.stack([kept[i] for i in wanted])), padded=0)
    return _decode_from_start(path, wanted)


def decode_all_frames(path: str | Path) -> torch.Tensor:
    """Every frame as uint8 RGB ``[N, H, W, 3]``: the baseline's way, for reference."""
    path = Path(path)
    with _open_video(path) as (container, stream):
        try:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        except av.FFmpegError as err:
            raise _ffmpeg_error(path, err) from None
        _check_complete(path, stream.frames, len(frames))
    return torch.from_numpy(np.stack(frames))


def _decode_window_seeking(
    container: av.container.InputContainer, stream: av.VideoStream, wanted: list[int]
) -> dict[int, np.ndarray] | None:
    """The window's frames by index, decoded from the keyframe before it. Indices come from
    timestamps here, so any doubt that they equal a full decode's counted indices returns None
    (fall back to :func:`_decode_from_start`). Unchecked (it would take a full decode): that frame
    0 is at the stream's start, as on every real clip the tests decode."""
    rate = stream.average_rate
    time_base = stream.time_base
    start = stream.start_time
    if not rate or not time_base or start is None:
        return None
    first = min(wanted)
    last = max(wanted)

    def index_of(pts: int) -> int:
        return round((pts - start) * time_base * rate)

    # frame.to_ndarray(format="rgb24") sets up a conversion context per frame; one per clip
    # gives the same pixels and the whole decode ~10% faster (measured).
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
            if index in wanted:
                kept[index] = to_rgb.reformat(frame, format="rgb24").to_ndarray()
            if index == last:
                return kept
            previous = index
    except av.FFmpegError:
        return None
    return None


def _decode_from_start(path: Path, wanted: list[int]) -> DecodedClip:
    """Decode from frame 0, counting frames, up to the last needed one; pads a short clip."""
    last_needed = max(wanted)
    to_rgb = VideoReformatter()
    kept: dict[int, np.ndarray] = {}
    count = 0
    with _open_video(path) as (container, stream):
        try:
            for count, frame in enumerate(_decode_stream(container, stream), start=1):
                if count - 1 in wanted:
                    kept[count - 1] = to_rgb.reformat(frame, format="rgb24").to_ndarray()
                if count > last_needed:
                    break
        except av.FFmpegError as err:
            raise _ffmpeg_error(path, err) from None
        if count <= last_needed:  # the clip ended first: pad with its final frame
            _check_complete(path, stream.frames, count)
            if count - 1 not in kept:
                kept[count - 1] = to_rgb.reformat(frame, format="rgb24").to_ndarray()
    frames = [kept[min(i, count - 1)] for i in wanted]
    padded = sum(1 for i in wanted if i >= count)
    return DecodedClip(frames=torch.from_numpy(np.stack(frames)), padded=padded)


def _decode_stream(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    index_of: Callable[[int], int] | None = None,
    skip_nonref_before: int | None = None,
) -> Iterator[av.VideoFrame]:
    """Decode ``stream`` from where the container stands, skipping frames shown before index
    ``skip_nonref_before`` that nothing references (set per packet: they come in decode order)."""
    codec = stream.codec_context
    for packet in container.demux(stream):
        if skip_nonref_before is not None and index_of is not None and packet.pts is not None:
            before = index_of(packet.pts) < skip_nonref_before
            codec.skip_frame = "NONREF" if before else "DEFAULT"
        yield from codec.decode(packet)


def _decode_torchcodec(path: Path, wanted: list[int]) -> DecodedClip:
    """torchcodec counts frames from the packets: a cut-short clip has fewer than its header."""
    _check_file(path)
    from torchcodec.decoders import VideoDecoder

    try:
        decoder = VideoDecoder(str(path), dimension_order="NHWC")
    except (RuntimeError, ValueError) as err:
        raise _ffmpeg_error(path, err, opening=True) from None
    count = len(decoder)
    if max(wanted) >= count:
        _check_complete(path, decoder.metadata.num_frames_from_header or 0, count)
    try:
        frames = decoder.get_frames_at([min(i, count - 1) for i in wanted]).data
    except (RuntimeError, ValueError, IndexError) as err:
        raise _ffmpeg_error(path, err) from None
    return DecodedClip(frames=frames, padded=sum(1 for i in wanted if i >= count))


def _check_file(path: Path) -> None:
    # Checked first: FFmpeg's message for both ("Invalid data found") would mislead the user.
    if not path.is_file():
        raise DataError(f"video {path} not found; check the dataset download")
    if path.stat().st_size == 0:
        raise DataError(f"video {path} is empty (0 bytes); re-download it")


@contextmanager
def _open_video(path: Path) -> Iterator[tuple[av.container.InputContainer, av.VideoStream]]:
    _check_file(path)
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as err:
        raise _ffmpeg_error(path, err, opening=True) from None
    try:
        if not container.streams.video:
            raise DataError(f"{path} has no video stream; expected an mp4 clip")
        stream = container.streams.video[0]
        # Frame-level threading speeds H.264 decoding up; harmless for the early stop.
        stream.thread_type = "AUTO"
        yield container, stream
    finally:
        container.close()


def _ffmpeg_error(path: Path, err: Exception, opening: bool = False) -> DataError:
    """FFmpeg's own words, without the file name and torchcodec's source location prefix."""
    reason = getattr(err, "strerror", None) or _first_line(err)
    if str(path) in reason:
        reason = reason.split(str(path), 1)[1].strip(" :,")
    reason = reason or type(err).__name__
    if opening:
        return DataError(f"cannot open video {path}: {reason}; the file is damaged or not a video")
    return DataError(f"cannot decode video {path}: {reason}; the file is damaged")


def _check_complete(path: Path, listed: int, decoded: int) -> None:
    """Refuse a clip with no frame, or fewer than its header lists (``listed``, 0 if unknown):
    with frame threading FFmpeg does not report a truncated packet, decoding just ends early."""
    if decoded == 0:
        raise DataError(f"video {path} holds no decodable frame; the file is damaged")
    if decoded < listed:
        raise DataError(
            f"video {path} ends after {decoded} of the {listed} frames its header lists; "
            f"the file is truncated or damaged, re-download it"
        )


def configured_window(dataset: DictConfig) -> tuple[int, ...] | None:
    """The frame indices ``dataset``'s window reads, or None while the window is invalid."""
    if not (dataset.end_frame > dataset.start_frame and 0 < dataset.fps <= dataset.clip_fps):
        return None
    return tuple(
        window_frame_indices(dataset.start_frame, dataset.end_frame, dataset.fps, dataset.clip_fps)
    )


@cross_key_rule("dataset")
def check_clip_window(cfg: DictConfig, p: Problems) -> dict[str, Any] | None:
    """The decoder is installed and the window reads at least one frame; derives its indices."""
    dataset = cfg.dataset
    if dataset.decoder == "torchcodec":
        try:
            resolve_decoder(dataset.decoder)
        except ConfigError as err:
            p.items.extend(err.problems)
    if dataset.end_frame <= dataset.start_frame:
        p.add(
            "dataset.end_frame",
            f"{dataset.end_frame} must be greater than dataset.start_frame ({dataset.start_frame})",
        )
    if not 0 < dataset.fps <= dataset.clip_fps:
        p.add(
            "dataset.fps",
            f"{dataset.fps!r} is out of range: expected in (0, dataset.clip_fps={dataset.clip_fps}]",
        )
    indices = configured_window(dataset)
    if indices is None:
        return None
    if dataset.num_frames is not None and dataset.num_frames != len(indices):
        p.add(
            "dataset.num_frames",
            f"{dataset.num_frames} disagrees with the window (start_frame={dataset.start_frame}, end_frame={dataset.end_frame}, "
            f"fps={dataset.fps} give {len(indices)} frames): set dataset.num_frames=null to derive it, or change the window",
        )
    return {"frame_indices": indices}
