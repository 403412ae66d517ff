"""Frame selection and decoding, checked against the baseline's decode-everything on real clips.

Both decoders (PyAV, and torchcodec where it is usable) must return exactly the pixels of
``decode_all_frames(path)[indices]``; the PyAV tests also watch *how* it decodes (from which
frame, how many frames) to show that the seek and the skipping happen, and that every guard
falls back to decoding from frame 0 with the same result.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from conftest import REAL_SAMPLE
from mvfoul.data import video as video_module
from mvfoul.data.video import (
    available_decoders,
    decode_all_frames,
    decode_frames,
    resolve_decoder,
    window_frame_indices,
)
from mvfoul.errors import ConfigError, DataError

REAL_CLIPS = sorted((REAL_SAMPLE / "Test").glob("action_*/clip_*.mp4"))
DEFAULT_WINDOW = [63, 65, 66, 68, 69, 71, 72, 74, 75, 77, 78, 80, 81, 83, 84, 86]
_av_open = av.open  # the test's own files are read and written with the unpatched opener


@pytest.fixture
def real_clip() -> Path:
    if not REAL_CLIPS:
        pytest.skip(f"real fixture absent: {REAL_SAMPLE}")
    return REAL_CLIPS[0]


@pytest.fixture(params=["pyav", "torchcodec"])
def backend(request) -> str:
    if request.param not in available_decoders():
        pytest.skip(f"torchcodec not usable here: {video_module._torchcodec_problem()}")
    return request.param


@functools.cache
def _reference(clip: Path) -> torch.Tensor:
    """The baseline's frames of a clip, decoded once per test session."""
    return decode_all_frames(clip)


def _index(stream: av.VideoStream, pts: int | None) -> int | None:
    if pts is None or stream.start_time is None:
        return None
    return round((pts - stream.start_time) * stream.time_base * stream.average_rate)


def _keyframes(clip: Path) -> list[int]:
    with _av_open(str(clip)) as container:
        stream = container.streams.video[0]
        return sorted(
            _index(stream, p.pts)
            for p in container.demux(stream)
            if p.is_keyframe and p.pts is not None
        )


class _DecodeLog:
    """What decode_frames did: one list of decoded frame indices per decoding pass, the RGB
    conversions, and whether every container it opened was closed."""

    def __init__(self) -> None:
        self.passes: list[list[int | None]] = []
        self.converted = 0
        self.containers: list = []

    @property
    def closed(self) -> bool:
        return bool(self.containers) and all(c.closed for c in self.containers)


class _Container:
    """A PyAV container that records ``close``; ``seek_to`` redirects seeks (to force guards)."""

    def __init__(self, inner, seek_to=None) -> None:
        self._inner, self._seek_to, self.closed = inner, seek_to, False

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def seek(self, offset, **kwargs):
        return self._inner.seek(self._seek_to(offset) if self._seek_to else offset, **kwargs)

    def close(self) -> None:
        self.closed = True
        self._inner.close()


@pytest.fixture
def decode_log(monkeypatch) -> _DecodeLog:
    log = _DecodeLog()
    real_open, real_decode_stream, real_reformatter = (
        _av_open,
        video_module._decode_stream,
        video_module.VideoReformatter,
    )

    def fake_open(*args, **kwargs):
        log.containers.append(_Container(real_open(*args, **kwargs), getattr(log, "seek_to", None)))
        return log.containers[-1]

    def logged_decode_stream(container, stream, *args, **kwargs):
        log.passes.append([])
        for frame in real_decode_stream(container, stream, *args, **kwargs):
            log.passes[-1].append(_index(stream, frame.pts))
            yield frame

    class CountingReformatter:
        def __init__(self) -> None:
            self._inner = real_reformatter()

        def reformat(self, *args, **kwargs):
            log.converted += 1
            return self._inner.reformat(*args, **kwargs)

    monkeypatch.setattr(video_module.av, "open", fake_open)
    monkeypatch.setattr(video_module, "_decode_stream", logged_decode_stream)
    monkeypatch.setattr(video_module, "VideoReformatter", CountingReformatter)
    return log


# --- window_frame_indices ------------------------------------------------------------------


def test_default_window_is_the_baselines_16_frames():
    assert window_frame_indices(63, 87, 17) == DEFAULT_WINDOW
    assert window_frame_indices(63, 87, 17.0, clip_fps=25.0) == DEFAULT_WINDOW


def test_window_at_clip_fps_keeps_every_frame():
    assert window_frame_indices(10, 20, 25) == list(range(10, 20))


def test_window_matches_the_baseline_loop_for_other_settings():
    # The baseline's own loop, written out: keep window position j when j % factor < 1.
    for start, end, fps in [(0, 125, 5), (50, 100, 12.5), (63, 87, 7), (30, 90, 24)]:
        factor = (end - start) / (((end - start) / 25) * fps)
        expected = [start + j for j in range(end - start) if j % factor < 1]
        assert window_frame_indices(start, end, fps) == expected


@pytest.mark.parametrize(
    "start, end, fps", [(87, 63, 17), (63, 63, 17), (63, 87, 0), (63, 87, -1), (63, 87, 30)]
)
def test_window_rejects_bad_arguments(start, end, fps):
    with pytest.raises(ValueError):
        window_frame_indices(start, end, fps)


# --- the same pixels as decoding everything, on every real clip ---------------------------


@pytest.mark.parametrize("clip", REAL_CLIPS or [None], ids=lambda p: p and "/".join(p.parts[-2:]))
def test_every_window_equals_the_full_decode_on_every_real_clip(clip, backend):
    if clip is None:
        pytest.skip(f"real fixture absent: {REAL_SAMPLE}")
    everything = _reference(clip)
    n = everything.shape[0]
    assert everything.dtype == torch.uint8 and everything.shape[1:] == (224, 398, 3)
    windows = {
        "default": DEFAULT_WINDOW,
        "near the start": window_frame_indices(0, 24, 17),
        "late, up to the last frame": list(range(n - 24, n, 2)) + [n - 1],
        "unsorted, repeated": [86, 63, 70, 63, 100, 64, 70],
    }
    for name, indices in windows.items():
        decoded = decode_frames(clip, indices, backend=backend)
        assert decoded.padded == 0, name
        assert decoded.frames.shape == (len(indices), 224, 398, 3), name
        assert decoded.frames.dtype == torch.uint8, name
        assert torch.equal(decoded.frames, everything[indices]), name


def test_window_past_the_end_pads_with_the_last_frame(real_clip, backend):
    request = [120, 124, 130, 140, 125, 200]
    decoded = decode_frames(real_clip, request, backend=backend)
    reference = _reference(real_clip)
    n = reference.shape[0]

    assert decoded.padded == sum(1 for i in request if i >= n)
    assert decoded.padded >= 3
    assert torch.equal(decoded.frames, reference[[min(i, n - 1) for i in request]])


# --- how PyAV decodes: seek, skip, stop, convert only what is kept -------------------------


def test_decoding_seeks_to_the_keyframe_before_the_window(decode_log):
    # The real clip whose last keyframe before frame 63 is latest: the most a seek can save.
    keyed = [(max(k for k in _keyframes(c) if k <= 63), c) for c in REAL_CLIPS]
    keyframe, clip = max(keyed, default=(0, None), key=lambda kc: kc[0])
    if keyframe == 0:
        pytest.skip("no real clip has a keyframe between frame 0 and the window")

    decoded = decode_frames(clip, DEFAULT_WINDOW, backend="pyav")

    (indices,) = decode_log.passes  # one pass, no fallback
    assert indices[0] == keyframe and indices[-1] == 86  # not frame 0, not the clip's end
    assert len(indices) <= 87 - keyframe
    assert decode_log.converted == 16
    assert decode_log.closed
    assert torch.equal(decoded.frames, _reference(clip)[DEFAULT_WINDOW])


def test_frames_nothing_references_before_the_window_are_not_decoded(real_clip, decode_log):
    assert _keyframes(real_clip) == [0]  # the fixture's first clip: no seek can help here
    decoded = decode_frames(real_clip, DEFAULT_WINDOW, backend="pyav")

    (indices,) = decode_log.passes
    assert len(indices) < 87 * 0.8  # a full decode of frames 0..86 yields 87
    assert indices[0] == 0 and indices == sorted(indices)
    assert indices[indices.index(63) :] == list(range(63, 87))  # the window is complete
    assert decode_log.converted == 16
    assert torch.equal(decoded.frames, _reference(real_clip)[DEFAULT_WINDOW])


def test_window_near_the_start_decodes_from_frame_0(real_clip, decode_log):
    request = [5, 1, 5, 0, 3]
    decoded = decode_frames(real_clip, request, backend="pyav")

    assert decode_log.passes == [list(range(6))]  # every frame, counted from 0, stops at 5
    assert decode_log.converted == 4  # the repeated 5 is converted once
    assert torch.equal(decoded.frames, _reference(real_clip)[request])


def test_forced_fallback_decodes_from_frame_0_with_the_same_pixels(
    real_clip, decode_log, monkeypatch
):
    monkeypatch.setattr(video_module, "_decode_window_seeking", lambda *args: None)
    decoded = decode_frames(real_clip, DEFAULT_WINDOW, backend="pyav")

    assert decode_log.passes == [list(range(87))]
    assert decode_log.converted == 16
    assert decode_log.closed
    assert torch.equal(decoded.frames, _reference(real_clip)[DEFAULT_WINDOW])


def test_stream_without_timestamps_falls_back(real_clip, tmp_path, decode_log):
    # A raw H.264 stream (the same packets, no container) has no pts and no start time.
    raw = tmp_path / "clip_0.h264"
    with _av_open(str(real_clip)) as src, _av_open(str(raw), "w", format="h264") as dst:
        out_stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = out_stream
                dst.mux(packet)
    decoded = decode_frames(raw, DEFAULT_WINDOW, backend="pyav")

    assert len(decode_log.passes) == 1 and len(decode_log.passes[0]) == 87  # no seeking pass
    assert torch.equal(decoded.frames, _reference(real_clip)[DEFAULT_WINDOW])


def test_seek_that_lands_after_the_window_falls_back(decode_log):
    clip = next((c for c in REAL_CLIPS if max(_keyframes(c)) > 63), None)
    if clip is None:
        pytest.skip("no real clip has a keyframe after frame 63")
    # Redirect the seek past the clip's end: it lands on the last keyframe, after frame 63.
    decode_log.seek_to = lambda offset: offset * 10
    decoded = decode_frames(clip, DEFAULT_WINDOW, backend="pyav")

    seeking, from_start = decode_log.passes
    assert seeking[0] > 63
    assert from_start == list(range(87))
    assert torch.equal(decoded.frames, _reference(clip)[DEFAULT_WINDOW])


def test_repeated_timestamps_fall_back(real_clip, decode_log, monkeypatch):
    logged = video_module._decode_stream

    def repeat_a_timestamp(container, stream, *args, **kwargs):
        previous = None
        for frame in logged(container, stream, *args, **kwargs):
            seeking = kwargs.get("skip_nonref_before") is not None
            if seeking and _index(stream, frame.pts) == 70:
                frame.pts = previous
            previous = frame.pts
            yield frame

    monkeypatch.setattr(video_module, "_decode_stream", repeat_a_timestamp)
    decoded = decode_frames(real_clip, DEFAULT_WINDOW, backend="pyav")

    seeking, from_start = decode_log.passes
    assert seeking[-1] == 70  # gave up at the repeat
    assert from_start == list(range(87))
    assert torch.equal(decoded.frames, _reference(real_clip)[DEFAULT_WINDOW])


def _encode(path: Path, codec: str, options: dict[str, str], max_b_frames: int) -> Path:
    """48 frames of 64x64 moving noise with a keyframe every 10 or 12: many seek targets."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    with _av_open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25, options=options)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = 12
        stream.codec_context.max_b_frames = max_b_frames
        for i in range(48):
            image = np.roll(base, i, axis=1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(
    scope="module",
    params=[
        # B-frames: a keyframe is decoded before the frames shown just before it.
        ("mpeg4", {}, 2),
        # Open GOPs: after a seek, the frames shown before a keyframe cannot be decoded.
        ("libx264", {"x264-params": "bframes=3:keyint=10:min-keyint=10:open-gop=1:scenecut=0"}, 0),
    ],
    ids=["mpeg4-bframes", "h264-open-gop"],
)
def many_keyframes_clip(request, tmp_path_factory) -> tuple[Path, torch.Tensor]:
    clip = _encode(tmp_path_factory.mktemp("encoded") / "clip.mp4", *request.param)
    return clip, decode_all_frames(clip)


def test_every_window_start_is_exact_on_clips_with_many_keyframes(many_keyframes_clip, backend):
    clip, everything = many_keyframes_clip
    n = everything.shape[0]
    assert n == 48 and len(_keyframes(clip)) >= 4
    for first in range(n):
        request = [first, min(first + 1, n - 1), min(first + 5, n - 1)]
        decoded = decode_frames(clip, request, backend=backend)
        assert torch.equal(decoded.frames, everything[request]), first


# --- files that cannot be used -------------------------------------------------------------


def test_zero_byte_file_is_a_data_error_naming_it(tmp_path, backend):
    empty = tmp_path / "clip_0.mp4"
    empty.write_bytes(b"")
    for decode in (lambda p: decode_frames(p, DEFAULT_WINDOW, backend=backend), decode_all_frames):
        with pytest.raises(DataError, match="empty") as info:
            decode(empty)
        assert str(empty) in str(info.value) and "\n" not in str(info.value)


def test_missing_file_is_a_data_error_naming_it(tmp_path, backend):
    missing = tmp_path / "action_9" / "clip_0.mp4"
    with pytest.raises(DataError, match="not found") as info:
        decode_frames(missing, DEFAULT_WINDOW, backend=backend)
    assert str(missing) in str(info.value)


def test_truncated_real_clip_is_a_data_error_naming_it(real_clip, tmp_path, backend):
    # These clips keep their index (moov) at the end, so a cut-short download cannot be opened.
    data = real_clip.read_bytes()
    truncated = tmp_path / "clip_truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cannot open") as info:
        decode_frames(truncated, DEFAULT_WINDOW, backend=backend)
    message = str(info.value)
    assert str(truncated) in message and "\n" not in message
    assert "Invalid data" in message and ".cpp" not in message  # FFmpeg's words, no C++ location


def test_clip_damaged_mid_stream_is_a_data_error_naming_it(real_clip, tmp_path, backend):
    # Remux with the index first (faststart), then cut: the file opens, decoding meets the cut.
    remuxed = tmp_path / "faststart.mp4"
    with (
        av.open(str(real_clip)) as src,
        av.open(str(remuxed), "w", options={"movflags": "faststart"}) as dst,
    ):
        in_stream = src.streams.video[0]
        out_stream = dst.add_stream_from_template(in_stream)
        for packet in src.demux(in_stream):
            if packet.dts is not None:  # skip the demuxer's final flush packet
                packet.stream = out_stream
                dst.mux(packet)
    data = remuxed.read_bytes()
    cut = tmp_path / "cut_mid_stream.mp4"
    cut.write_bytes(data[: int(len(data) * 0.4)])

    # Decoding ends early at the cut, silently; the header's frame count exposes it.
    decoders = [lambda p: decode_frames(p, DEFAULT_WINDOW, backend=backend)]
    if backend == "pyav":
        decoders.append(decode_all_frames)
    for decode in decoders:
        with pytest.raises(DataError, match="truncated") as info:
            decode(cut)
        assert str(cut) in str(info.value)
    # Frames before the cut are intact, and a window that ends before it still decodes.
    decoded = decode_frames(cut, [0, 10], backend=backend)
    assert decoded.padded == 0
    assert torch.equal(decoded.frames, _reference(real_clip)[[0, 10]])


def test_non_video_file_is_a_data_error(tmp_path, backend):
    text = tmp_path / "clip_0.mp4"
    text.write_text("this is not a video " * 50)
    with pytest.raises(DataError, match="cannot open") as info:
        decode_frames(text, [0], backend=backend)
    assert str(text) in str(info.value) and "\n" not in str(info.value)


# --- choosing the decoder ------------------------------------------------------------------


def test_auto_picks_pyav_the_faster_and_lists_torchcodec_when_it_works():
    usable = available_decoders()
    assert resolve_decoder("auto") == usable[0] == "pyav"
    assert ("torchcodec" in usable) == (video_module._torchcodec_problem() is None)
    assert resolve_decoder("pyav") == "pyav"


@pytest.fixture
def torchcodec_absent(monkeypatch):
    """Make ``import torchcodec`` fail, as on a machine without it; the probe runs for real."""
    monkeypatch.setitem(sys.modules, "torchcodec", None)
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)
    video_module._torchcodec_problem.cache_clear()
    yield
    video_module._torchcodec_problem.cache_clear()


def test_unusable_torchcodec_auto_falls_back_to_pyav(torchcodec_absent, real_clip):
    assert available_decoders() == ["pyav"]
    assert resolve_decoder("auto") == "pyav"
    decoded = decode_frames(real_clip, DEFAULT_WINDOW)  # backend="auto"
    assert torch.equal(decoded.frames, _reference(real_clip)[DEFAULT_WINDOW])


def test_explicit_torchcodec_when_unusable_is_a_config_error(torchcodec_absent, real_clip):
    for ask in (
        lambda: resolve_decoder("torchcodec"),
        lambda: decode_frames(real_clip, [0], "torchcodec"),
    ):
        with pytest.raises(ConfigError) as info:
            ask()
        message = str(info.value)
        assert "\n" not in message
        assert "dataset.decoder" in message and "torchcodec is not usable here" in message
        assert f"({video_module._torchcodec_problem()})" in message  # the reason
        assert "apt-get install ffmpeg" in message and "dataset.decoder=pyav" in message  # the fix


def test_unknown_decoder_is_a_config_error():
    from conftest import compose_config
    from mvfoul.rules import validate_config, with_schema

    with pytest.raises(
        ConfigError, match=r"dataset\.decoder: 'ffmpeg' is not one of auto, pyav, torchcodec"
    ):
        validate_config(with_schema(compose_config("quick_test", ["dataset.decoder=ffmpeg"])))
