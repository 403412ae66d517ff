"""The built-in synthetic dataset: layout, determinism, caching, labels and learnable cues."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
from av.video.reformatter import VideoReformatter

from conftest import REAL_SAMPLE
from mvfoul.config import SyntheticConfig
from mvfoul.data import synthetic
from mvfoul.data.synthetic import (
    CARD_FIRST_FRAME,
    CARD_LAST_FRAME,
    MARKER_NAME,
    SPLITS,
    draw_split_actions,
    ensure_synthetic_dataset,
    render_clip,
    split_annotations,
    synthetic_dataset_dir,
)
from mvfoul.errors import ConfigError
from mvfoul.labels import (
    ACTION_CLASSES,
    NUM_ACTION,
    NUM_OFFENCE_SEVERITY,
    OfficialLabels,
    official_labels,
)

# Small enough to build in well under a second, yet >= 8 actions per split so every class of
# both tasks is guaranteed to appear (the learnability check needs every severity in Train).
SMALL = SyntheticConfig(
    num_train=12, num_valid=8, num_test=8, resolution=32, clip_frames=100, seed=0
)
# For the caching tests, which build several times.
TINY = SyntheticConfig(
    num_train=2, num_valid=1, num_test=1, resolution=16, clip_frames=92, min_views=2, max_views=2
)
# The quick-test window (frames 67..82): the severity cue must be readable there.
WINDOW = slice(67, 83)


def decode(path: Path, reformatter: VideoReformatter | None = None) -> tuple[np.ndarray, float]:
    """All frames of a clip as RGB ``[T, H, W, 3]`` and the stream's frame rate.

    A shared reformatter keeps one scaler context (~4x faster than ``to_ndarray(format=...)``).
    """
    reformatter = reformatter or VideoReformatter()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [
            reformatter.reformat(f, format="rgb24").to_ndarray() for f in container.decode(stream)
        ]
        rate = float(stream.average_rate)
    return np.stack(frames), rate


def clip_path(split_dir: Path, url: str) -> Path:
    """``Dataset/action_3/clip_1`` -> ``<split_dir>/action_3/clip_1.mp4`` (the official mapping)."""
    return split_dir / (url.split("/", 1)[1] + ".mp4")


def file_table(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Relative path -> (size, mtime_ns, inode) of every file under ``folder``."""
    out = {}
    for p in folder.rglob("*"):
        if p.is_file():
            st = p.stat()
            out[str(p.relative_to(folder))] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return out


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_synthetic_dataset(SMALL, root=tmp_path_factory.mktemp("small"))


@pytest.fixture(scope="module")
def small_clips(small_dir: Path) -> dict[str, dict]:
    """Per split: the annotations, and every listed clip decoded (once for the whole module)."""
    reformatter = VideoReformatter()
    out = {}
    for split in SPLITS:
        annotations = json.loads((small_dir / split / "annotations.json").read_text())
        clips = {}
        for action_id, action in annotations["Actions"].items():
            for clip in action["Clips"]:
                clips[(action_id, clip["Url"])] = decode(
                    clip_path(small_dir / split, clip["Url"]), reformatter
                )
        out[split] = {"annotations": annotations, "clips": clips}
    return out


# --- layout -------------------------------------------------------------------------------


def test_layout_matches_soccernet_and_every_clip_decodes(
    small_dir: Path, small_clips: dict
) -> None:
    assert sorted(p.name for p in small_dir.iterdir() if p.is_dir()) == sorted(SPLITS)
    for split in SPLITS:
        annotations = small_clips[split]["annotations"]
        expected = {"Train": SMALL.num_train, "Valid": SMALL.num_valid, "Test": SMALL.num_test}[
            split
        ]
        assert annotations["Set"] == split.lower()
        assert annotations["Number of actions"] == expected == len(annotations["Actions"])
        assert list(annotations["Actions"]) == [str(i) for i in range(expected)]

        listed = set()
        for action_id, action in annotations["Actions"].items():
            assert SMALL.min_views <= len(action["Clips"]) <= SMALL.max_views
            for k, clip in enumerate(action["Clips"]):
                assert clip["Url"] == f"Dataset/action_{action_id}/clip_{k}"
                assert set(clip) == {"Url", "Camera type", "Timestamp", "Replay speed"}
                listed.add(clip_path(small_dir / split, clip["Url"]))
                frames, rate = small_clips[split]["clips"][(action_id, clip["Url"])]
                assert frames.shape == (SMALL.clip_frames, SMALL.resolution, SMALL.resolution, 3)
                assert rate == 25.0
        # Nothing on disk that the annotations do not list.
        assert set((small_dir / split).glob("action_*/clip_*.mp4")) == listed
    # Views per action actually vary within the allowed range.
    counts = {
        len(a["Clips"]) for s in SPLITS for a in small_clips[s]["annotations"]["Actions"].values()
    }
    assert len(counts) > 1


def test_annotation_entries_have_the_real_keys(small_clips: dict) -> None:
    real = REAL_SAMPLE / "Test" / "annotations.json"
    if not real.exists():
        pytest.skip(f"real fixture absent: {real}")
    real_keys = set(next(iter(json.loads(real.read_text())["Actions"].values())))
    for split in SPLITS:
        for action in small_clips[split]["annotations"]["Actions"].values():
            assert set(action) == real_keys


# --- labels ---------------------------------------------------------------------------------


def test_written_strings_map_back_to_the_intended_classes(small_clips: dict) -> None:
    for split in SPLITS:
        intended = draw_split_actions(SMALL, split)
        for action in intended:
            entry = small_clips[split]["annotations"]["Actions"][str(action.index)]
            labels = official_labels(entry["Action class"], entry["Offence"], entry["Severity"])
            assert isinstance(labels, OfficialLabels), labels  # never dropped by the official rules
            assert (labels.action, labels.offence_severity) == (
                action.action,
                action.offence_severity,
            )
            assert entry["Offence"] in ("Offence", "No offence")
            assert (
                entry["Severity"] == {0: "", 1: "1.0", 2: "3.0", 3: "5.0"}[action.offence_severity]
            )


def test_dives_are_no_offence_with_empty_severity() -> None:
    assert official_labels("Dive", "No offence", "").offence_severity == 0
    dives = [
        a
        for split in SPLITS
        for a in draw_split_actions(SyntheticConfig(), split)
        if ACTION_CLASSES[a.action] == "Dive"
    ]
    assert dives
    for action in dives:
        entry = synthetic.annotation_entry(action)
        assert (entry["Offence"], entry["Severity"], entry["Contact"]) == (
            "No offence",
            "",
            "Without contact",
        )


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_default_spec_covers_every_class_in_every_split(seed: int) -> None:
    spec = SyntheticConfig(seed=seed)
    for split in SPLITS:
        actions = draw_split_actions(spec, split)
        assert {a.action for a in actions} == set(range(NUM_ACTION)), split
        assert {a.offence_severity for a in actions} == set(range(NUM_OFFENCE_SEVERITY)), split


def test_default_train_split_is_imbalanced_like_the_real_one() -> None:
    actions = draw_split_actions(SyntheticConfig(), "Train")
    by_action = Counter(ACTION_CLASSES[a.action] for a in actions)
    by_severity = Counter(a.offence_severity for a in actions)
    assert by_action.most_common(1)[0][0] == "Standing tackling"
    assert by_action["Standing tackling"] >= 0.35 * len(actions)  # 43% in the real split
    assert by_action["Dive"] == min(by_action.values())
    assert by_severity[3] == min(by_severity.values())  # red cards are the rarest
    assert by_severity[1] == max(by_severity.values())  # "Offence + No card" is the commonest


def test_a_split_smaller_than_the_class_count_still_varies() -> None:
    actions = draw_split_actions(replace(SyntheticConfig(), num_valid=4), "Valid")
    assert len({a.action for a in actions}) == 4  # as many distinct action classes as actions
    assert {a.offence_severity for a in actions} == set(range(NUM_OFFENCE_SEVERITY))


# --- pixels ---------------------------------------------------------------------------------


def test_severity_cue_is_shown_in_every_view_only_around_the_foul() -> None:
    spec = replace(SMALL, clip_frames=125)
    action = next(a for a in draw_split_actions(spec, "Train") if a.offence_severity != 0)
    for view in range(len(action.views)):
        with_card = render_clip(spec, action, view)
        without = render_clip(spec, replace(action, offence_severity=0), view)
        changed = np.flatnonzero((with_card != without).any(axis=(1, 2, 3)))
        assert changed.min() == CARD_FIRST_FRAME and changed.max() == CARD_LAST_FRAME
        assert (
            len(changed) == CARD_LAST_FRAME - CARD_FIRST_FRAME + 1
        )  # every frame of 60..91, e.g. 63..86


def test_views_are_different_cameras_on_the_same_scene() -> None:
    action = next(a for a in draw_split_actions(SMALL, "Train") if len(a.views) >= 2)
    first, second = render_clip(SMALL, action, 0), render_clip(SMALL, action, 1)
    assert np.abs(first.astype(int) - second.astype(int)).mean() > 2.0


def test_render_clip_gives_rgb_frames_that_encode_to_the_built_clip(tmp_path: Path) -> None:
    action = draw_split_actions(TINY, "Train")[0]
    frames = render_clip(TINY, action, 0)
    assert frames.shape == (TINY.clip_frames, TINY.resolution, TINY.resolution, 3)
    assert frames.dtype == np.uint8
    synthetic.encode_clip(frames, tmp_path / "rgb.mp4")
    synthetic._write_action((TINY, action, tmp_path / "built"))  # renders RGBA
    assert (tmp_path / "rgb.mp4").read_bytes() == (tmp_path / "built" / "clip_0.mp4").read_bytes()


def test_an_unknown_split_name_is_refused() -> None:
    with pytest.raises(
        ValueError, match="unknown split 'train': expected one of Train, Valid, Test"
    ):
        draw_split_actions(TINY, "train")


def test_severity_is_readable_from_the_decoded_window(small_clips: dict) -> None:
    """Nearest-centroid on one colour feature per clip: the mean RGB of the quick-test window
    (frames 67..82) minus the mean RGB before the foul (frames 0..39), i.e. "what colour
    appeared during the foul". Centroids come from Train clips; Valid and Test clips are scored.

    Threshold: balanced accuracy >= 0.75. Chance (and any constant guess) is 0.25 over the four
    classes; 0.75 leaves room for codec noise, per-camera colour gain and partly cropped cards
    while still proving the cue is far above chance (observed ~0.93).
    """

    def features(split: str) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        actions = small_clips[split]["annotations"]["Actions"]
        for (action_id, _), (frames, _) in small_clips[split]["clips"].items():
            entry = actions[action_id]
            ys.append(
                official_labels(
                    entry["Action class"], entry["Offence"], entry["Severity"]
                ).offence_severity
            )
            f = frames.astype(np.float32)
            xs.append(f[WINDOW].mean(axis=(0, 1, 2)) - f[:40].mean(axis=(0, 1, 2)))
        return np.array(xs), np.array(ys)

    x_train, y_train = features("Train")
    assert set(y_train) == set(range(NUM_OFFENCE_SEVERITY))
    centroids = np.stack([x_train[y_train == c].mean(axis=0) for c in range(NUM_OFFENCE_SEVERITY)])
    held_out = [features(s) for s in ("Valid", "Test")]
    x, y = np.concatenate([h[0] for h in held_out]), np.concatenate([h[1] for h in held_out])
    predicted = np.argmin(((x[:, None, :] - centroids[None]) ** 2).sum(axis=-1), axis=1)
    recalls = [
        (predicted[y == c] == c).mean() for c in range(NUM_OFFENCE_SEVERITY) if (y == c).any()
    ]
    assert len(recalls) == NUM_OFFENCE_SEVERITY
    assert np.mean(recalls) >= 0.75, f"balanced accuracy {np.mean(recalls):.2f}"


# --- determinism ----------------------------------------------------------------------------


def test_same_spec_gives_identical_files_and_frames(
    small_dir: Path, small_clips: dict, tmp_path: Path
) -> None:
    again = ensure_synthetic_dataset(SMALL, root=tmp_path)
    assert again != small_dir
    assert file_bytes(again) == file_bytes(small_dir)
    action_id, url = next(iter(small_clips["Train"]["clips"]))
    frames, _ = decode(clip_path(again / "Train", url))
    np.testing.assert_array_equal(frames, small_clips["Train"]["clips"][(action_id, url)][0])


def test_another_seed_gives_other_labels_and_pixels() -> None:
    other = replace(SMALL, seed=1)
    for split in SPLITS:
        assert split_annotations(draw_split_actions(other, split), split) != split_annotations(
            draw_split_actions(SMALL, split), split
        )
    a0, a1 = draw_split_actions(SMALL, "Train")[0], draw_split_actions(other, "Train")[0]
    assert not np.array_equal(render_clip(SMALL, a0, 0), render_clip(other, a1, 0))


def test_worker_processes_give_the_same_bytes(tmp_path: Path) -> None:
    serial = ensure_synthetic_dataset(TINY, root=tmp_path / "serial", workers=1)
    parallel = ensure_synthetic_dataset(TINY, root=tmp_path / "parallel", workers=2)
    assert file_bytes(serial) == file_bytes(parallel)


# --- caching --------------------------------------------------------------------------------


def test_folder_name_is_a_fingerprint_of_the_spec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from omegaconf import OmegaConf

    assert synthetic_dataset_dir(TINY, tmp_path) == synthetic_dataset_dir(replace(TINY), tmp_path)
    assert synthetic_dataset_dir(TINY, tmp_path) != synthetic_dataset_dir(
        replace(TINY, seed=1), tmp_path
    )
    assert synthetic_dataset_dir(TINY, tmp_path) != synthetic_dataset_dir(
        replace(TINY, num_test=2), tmp_path
    )
    # A Hydra node is accepted as it is.
    assert synthetic_dataset_dir(OmegaConf.structured(TINY), tmp_path) == synthetic_dataset_dir(
        TINY, tmp_path
    )
    # Another generator never shares a folder, so a cache of older pixels is never reused.
    current = synthetic_dataset_dir(TINY, tmp_path)
    with monkeypatch.context() as m:
        m.setattr(synthetic, "GENERATOR_VERSION", synthetic.GENERATOR_VERSION + 1)
        assert synthetic_dataset_dir(TINY, tmp_path) != current
    monkeypatch.setenv("MVFOUL_CACHE_DIR", str(tmp_path / "cache"))
    assert synthetic_dataset_dir(TINY).parent == tmp_path / "cache" / "synthetic"


def test_second_call_reuses_the_folder_untouched(tmp_path: Path) -> None:
    folder = ensure_synthetic_dataset(TINY, root=tmp_path)
    before = file_table(folder)
    assert ensure_synthetic_dataset(TINY, root=tmp_path) == folder
    assert file_table(folder) == before
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # no build leftovers


def _delete_a_clip(folder: Path) -> None:
    next(folder.glob("Valid/action_0/clip_*.mp4")).unlink()


def _truncate_a_clip(folder: Path) -> None:
    clip = next(folder.glob("Train/action_1/clip_*.mp4"))
    clip.write_bytes(clip.read_bytes()[:100])


def _delete_the_marker(folder: Path) -> None:
    (folder / MARKER_NAME).unlink()


def _marker_of_another_spec(folder: Path) -> None:
    marker = json.loads((folder / MARKER_NAME).read_text())
    marker["spec"]["seed"] += 1
    (folder / MARKER_NAME).write_text(json.dumps(marker))


def _marker_of_another_generator(folder: Path) -> None:
    marker = json.loads((folder / MARKER_NAME).read_text())
    marker["generator_version"] -= 1
    (folder / MARKER_NAME).write_text(json.dumps(marker))


def _garbled_marker(folder: Path) -> None:
    (folder / MARKER_NAME).write_text("{not json")


@pytest.mark.parametrize(
    "damage",
    [
        _delete_a_clip,
        _truncate_a_clip,
        _delete_the_marker,
        _marker_of_another_spec,
        _marker_of_another_generator,
        _garbled_marker,
    ],
)
def test_damaged_folder_is_rebuilt_complete(tmp_path: Path, damage) -> None:
    folder = ensure_synthetic_dataset(TINY, root=tmp_path)
    pristine = file_bytes(folder)
    damage(folder)
    assert ensure_synthetic_dataset(TINY, root=tmp_path) == folder
    assert file_bytes(folder) == pristine
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]


def test_interrupted_build_never_looks_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    real_encode = synthetic.encode_clip

    def failing_encode(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_encode(*args, **kwargs)

    monkeypatch.setattr(synthetic, "encode_clip", failing_encode)
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic_dataset(TINY, root=tmp_path)
    assert list(tmp_path.iterdir()) == []  # neither the target nor the half-built folder remains
    monkeypatch.setattr(synthetic, "encode_clip", real_encode)
    folder = ensure_synthetic_dataset(TINY, root=tmp_path)
    assert (folder / MARKER_NAME).exists()


def test_racing_builds_both_end_with_a_valid_folder(tmp_path: Path) -> None:
    start = threading.Barrier(2)
    results: list[Path] = []
    errors: list[BaseException] = []

    def build() -> None:
        try:
            start.wait()
            results.append(ensure_synthetic_dataset(TINY, root=tmp_path))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results[0] == results[1]
    assert [p.name for p in tmp_path.iterdir()] == [results[0].name]
    reference = ensure_synthetic_dataset(TINY, root=tmp_path / "reference")
    assert file_bytes(results[0]) == file_bytes(reference)


def test_bad_spec_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"dataset\.synthetic\.clip_frames"):
        ensure_synthetic_dataset(replace(TINY, clip_frames=80), root=tmp_path)
    with pytest.raises(ConfigError, match=r"dataset\.synthetic\.min_views"):
        ensure_synthetic_dataset(replace(TINY, min_views=3, max_views=2), root=tmp_path)
    assert list(tmp_path.iterdir()) == []


# --- CLI ------------------------------------------------------------------------------------


def test_cli_generates_and_prints_the_folder(tmp_path: Path) -> None:
    args = [
        "--out",
        str(tmp_path),
        "--num-train",
        "2",
        "--num-valid",
        "1",
        "--num-test",
        "1",
        "--resolution",
        "16",
        "--clip-frames",
        "92",
        "--workers",
        "1",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "mvfoul.data.synthetic", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    folder = Path(done.stdout.strip())
    assert folder.parent == tmp_path
    assert (folder / MARKER_NAME).exists()
    assert json.loads((folder / "Train" / "annotations.json").read_text())["Number of actions"] == 2
    assert "generated the synthetic dataset" in done.stderr

    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "mvfoul.data.synthetic",
            "--out",
            str(tmp_path),
            "--clip-frames",
            "50",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == ConfigError.exit_code
    assert "dataset.synthetic.clip_frames" in bad.stderr and "Traceback" not in bad.stderr
