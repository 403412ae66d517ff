"""Frame selection and decoding, checked against the baseline's decode-everything on real clips."""

from __future__ import annotations

from pathlib import Path

import av
import pytest
import torch

from conftest import REAL_SAMPLE
from mvfoul.data import video as video_module
from mvfoul.data.video import decode_all_frames, decode_frames, window_frame_indices
from mvfoul.errors import DataError

REAL_CLIPS = sorted((REAL_SAMPLE / "Test").glob("action_*/clip_*.mp4"))
DEFAULT_WINDOW = [63, 65, 66, 68, 69, 71, 72, 74, 75, 77, 78, 80, 81, 83, 84, 86]


@pytest.fixture
def real_clip() -> Path:
    if not REAL_CLIPS:
        pytest.skip(f"real fixture absent: {REAL_SAMPLE}")
    return REAL_CLIPS[0]


class _CountingFrame:
    """Wraps a decoded frame to count RGB conversions."""

    def __init__(self, frame: av.VideoFrame, counter: _CountingContainer) -> None:
        self._frame = frame
        self._counter = counter

    def to_ndarray(self, **kwargs):
        self._counter.converted += 1
        return self._frame.to_ndarray(**kwargs)


class _CountingContainer:
    """Wraps a PyAV container to count the frames its decoder yields."""

    def __init__(self, inner: av.container.InputContainer) -> None:
        self._inner = inner
        self.decoded = 0
        self.converted = 0
        self.closed = False

    @property
    def streams(self):
        return self._inner.streams

    def decode(self, *args, **kwargs):
        for frame in self._inner.decode(*args, **kwargs):
            self.decoded += 1
            yield _CountingFrame(frame, self)

    def close(self) -> None:
        self.closed = True
        self._inner.close()


@pytest.fixture
def counting_open(monkeypatch) -> list[_CountingContainer]:
    """Route ``av.open`` through :class:`_CountingContainer`; yields the containers opened."""
    opened: list[_CountingContainer] = []
    real_open = av.open

    def fake_open(*args, **kwargs):
        opened.append(_CountingContainer(real_open(*args, **kwargs)))
        return opened[-1]

    monkeypatch.setattr(video_module.av, "open", fake_open)
    return opened


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


# --- decode_frames on real clips -----------------------------------------------------------


@pytest.mark.parametrize("clip", REAL_CLIPS or [None], ids=lambda p: p and "/".join(p.parts[-2:]))
def test_window_decode_equals_full_decode_on_every_real_clip(clip):
    if clip is None:
        pytest.skip(f"real fixture absent: {REAL_SAMPLE}")
    everything = decode_all_frames(clip)
    decoded = decode_frames(clip, DEFAULT_WINDOW)

    assert everything.dtype == torch.uint8 and everything.shape[1:] == (224, 398, 3)
    assert decoded.padded == 0
    assert decoded.frames.shape == (16, 224, 398, 3) and decoded.frames.dtype == torch.uint8
    assert torch.equal(decoded.frames, everything[DEFAULT_WINDOW])


def test_decoding_stops_at_the_last_needed_frame(real_clip, counting_open):
    decoded = decode_frames(real_clip, DEFAULT_WINDOW)

    (container,) = counting_open
    assert container.decoded == 87  # frames 0..86, not the clip's ~126
    assert container.converted == 16  # only kept frames go to RGB
    assert container.closed
    assert decoded.frames.shape[0] == 16


def test_repeated_and_unsorted_indices_come_back_in_request_order(real_clip, counting_open):
    request = [40, 3, 40, 0, 12]
    decoded = decode_frames(real_clip, request)

    assert counting_open[0].decoded == 41
    assert counting_open[0].converted == 4  # the repeated 40 is converted once
    reference = decode_all_frames(real_clip)
    assert torch.equal(decoded.frames, reference[request])


def test_window_past_the_end_pads_with_the_last_frame(real_clip, counting_open):
    request = [120, 124, 130, 140, 125, 200]
    decoded = decode_frames(real_clip, request)
    reference = decode_all_frames(real_clip)
    n = reference.shape[0]

    assert counting_open[0].closed
    assert decoded.padded == sum(1 for i in request if i >= n)
    assert decoded.padded >= 3
    assert torch.equal(decoded.frames, reference[[min(i, n - 1) for i in request]])


# --- files that cannot be used -------------------------------------------------------------


def test_zero_byte_file_is_a_data_error_naming_it(tmp_path):
    empty = tmp_path / "clip_0.mp4"
    empty.write_bytes(b"")
    for decode in (lambda p: decode_frames(p, DEFAULT_WINDOW), decode_all_frames):
        with pytest.raises(DataError, match="empty") as info:
            decode(empty)
        assert str(empty) in str(info.value) and "\n" not in str(info.value)


def test_missing_file_is_a_data_error_naming_it(tmp_path):
    missing = tmp_path / "action_9" / "clip_0.mp4"
    with pytest.raises(DataError, match="not found") as info:
        decode_frames(missing, DEFAULT_WINDOW)
    assert str(missing) in str(info.value)


def test_truncated_real_clip_is_a_data_error_naming_it(real_clip, tmp_path):
    # These clips keep their index (moov) at the end, so a cut-short download cannot be opened.
    data = real_clip.read_bytes()
    truncated = tmp_path / "clip_truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cannot open") as info:
        decode_frames(truncated, DEFAULT_WINDOW)
    assert str(truncated) in str(info.value) and "\n" not in str(info.value)


def test_clip_damaged_mid_stream_is_a_data_error_naming_it(real_clip, tmp_path):
    # Remux with the index first (faststart), then cut: the file opens, decoding meets the cut.
    remuxed = tmp_path / "faststart.mp4"
    with av.open(str(real_clip)) as src, av.open(
        str(remuxed), "w", options={"movflags": "faststart"}
    ) as dst:
        in_stream = src.streams.video[0]
        out_stream = dst.add_stream_from_template(in_stream)
        for packet in src.demux(in_stream):
            if packet.dts is not None:  # skip the demuxer's final flush packet
                packet.stream = out_stream
                dst.mux(packet)
    data = remuxed.read_bytes()
    cut = tmp_path / "cut_mid_stream.mp4"
    cut.write_bytes(data[: int(len(data) * 0.4)])

    # Frame-threaded decoding ends silently at the cut; the header's frame count exposes it.
    for decode in (lambda p: decode_frames(p, DEFAULT_WINDOW), decode_all_frames):
        with pytest.raises(DataError, match="truncated") as info:
            decode(cut)
        assert str(cut) in str(info.value)
    # Frames before the cut are intact, and a window that ends before it still decodes.
    assert decode_frames(cut, [0, 10]).padded == 0


def test_non_video_file_is_a_data_error(tmp_path):
    text = tmp_path / "clip_0.mp4"
    text.write_text("this is not a video " * 50)
    with pytest.raises(DataError, match="cannot open"):
        decode_frames(text, [0])
