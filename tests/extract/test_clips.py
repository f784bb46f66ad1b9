"""Clip sources on real files written here: GIFs (palette and RGBA, varying durations), videos
(MP4, AVI, WebM, MOV through PyAV), frame folders; sampling rules; discovery of frame folders;
extraction with failures recorded; the real clips of ../shared when present."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED, needs_shared
from pipeline.errors import ConfigError, DecodeError
from pipeline.extract.sources import discover
from pipeline.extract.backbones import get_backbone
from pipeline.extract.sources.clips import CLIPS_PER_CHUNK, ClipReader

C3D_RECIPE = get_backbone("c3d").clip_recipe  # resize, crop and mean the reader obeys

SHAPE = (16, 32, 32, 3)  # frames resized to 37x49, centre-cropped to 32 at (2, 8)
# Frame i of a test GIF is filled with COLORS[i], so every output frame tells where it came from.
COLORS = np.array([((i * 6) % 256, 250 - i * 5, (i * 37) % 256) for i in range(48)], np.uint8)
WHITE = (255, 255, 255)


def write_gif(path: Path, n: int, rgba: bool = False, durations=None, size=(64, 48)) -> Path:
    """A GIF whose frame i is COLORS[i]; `rgba` makes the left half transparent in each frame."""
    width, height = size
    frames = []
    for i in range(n):
        if rgba:
            arr = np.zeros((height, width, 4), np.uint8)
            arr[:, width // 2:, :3], arr[:, width // 2:, 3] = COLORS[i], 255
            frames.append(Image.fromarray(arr, "RGBA"))
        else:
            frames.append(Image.fromarray(np.broadcast_to(COLORS[i], (height, width, 3)).copy()))
    path.parent.mkdir(parents=True, exist_ok=True)
    durations = durations or [40 + 40 * (i % 3) for i in range(n)]  # 40, 80, 120 ms, ...
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=durations, loop=0,
                   disposal=2 if rgba else 0)
    return path


def write_video(path: Path, n: int, codec: str, fps: int = 20) -> Path:
    """A video whose frame i is grey level 20 + 5 i (lossy codecs keep it within +-2)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.bit_rate = 4_000_000  # near-lossless, so each grey level survives
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 20 + 5 * i, np.uint8), "rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def gif_indices(clip: np.ndarray, x: int = 16) -> list[int]:
    """Which source frame each frame of a clip shows (by its colour at row 16, column x)."""
    pixels = clip[:, 16, x].astype(int)
    return [int(np.argmin(np.abs(COLORS.astype(int) - p).sum(axis=1))) for p in pixels]


def video_indices(clip: np.ndarray) -> list[int]:
    return [int(round((int(p) - 20) / 5)) for p in clip[:, 16, 16, 0]]


def all_clips(reader: ClipReader, path: Path) -> list[np.ndarray]:
    chunks = list(reader.read(path))
    for chunk in chunks:
        assert chunk.dtype == np.uint8 and chunk.shape[1:] == SHAPE
        assert 1 <= len(chunk) <= CLIPS_PER_CHUNK
    return [clip for chunk in chunks for clip in chunk]


@pytest.fixture(scope="module")
def gifs(tmp_path_factory):
    root = tmp_path_factory.mktemp("gifs")
    return {(n, rgba): write_gif(root / f"{n}_{'rgba' if rgba else 'p'}.gif", n, rgba)
            for n in (5, 16, 40) for rgba in (False, True)}


@pytest.mark.parametrize("rgba", [False, True], ids=["palette", "rgba"])
@pytest.mark.parametrize("options, expected", [
    ({"sampling": "stride", "stride": 8}, {5: 1, 16: 1, 40: 4}),
    ({"sampling": "stride", "stride": 16}, {5: 1, 16: 1, 40: 2}),
    ({"sampling": "uniform", "num_clips": 3}, {5: 1, 16: 1, 40: 3}),
    ({"sampling": "uniform", "num_clips": 50}, {5: 1, 16: 1, 40: 25}),  # distinct starts only
])
def test_clip_counts_per_sampling_rule(gifs, rgba, options, expected):
    reader = ClipReader(SHAPE, options, C3D_RECIPE)
    got = {n: len(all_clips(reader, gifs[(n, rgba)])) for n in (5, 16, 40)}
    assert got == expected


def test_stride_and_uniform_windows_hold_the_right_frames(gifs):
    stride = all_clips(ClipReader(SHAPE, {"stride": 8}, C3D_RECIPE), gifs[(40, False)])
    assert [gif_indices(c) for c in stride] == [list(range(s, s + 16)) for s in (0, 8, 16, 24)]
    uniform_reader = ClipReader(SHAPE, {"sampling": "uniform", "num_clips": 3}, C3D_RECIPE)
    uniform = all_clips(uniform_reader, gifs[(40, False)])
    assert [gif_indices(c)[0] for c in uniform] == [0, 12, 24]


def test_short_gifs_loop_or_pad(gifs):
    (looped,) = all_clips(ClipReader(SHAPE, {"short": "loop"}, C3D_RECIPE), gifs[(5, False)])
    assert gif_indices(looped) == [i % 5 for i in range(16)]  # the seed's rule
    (padded,) = all_clips(ClipReader(SHAPE, {"short": "pad"}, C3D_RECIPE), gifs[(5, False)])
    assert gif_indices(padded) == [0, 1, 2, 3, 4] + [4] * 11


def test_rgba_gif_transparency_is_white_and_frames_are_composited(gifs):
    clips = all_clips(ClipReader(SHAPE, {}, C3D_RECIPE), gifs[(40, True)])
    assert [gif_indices(c, x=28) for c in clips] == [list(range(s, s + 16)) for s in (0, 8, 16, 24)]
    for clip in clips:
        assert (clip[:, 16, 4] == WHITE).all()  # the transparent left half


def test_single_frame_gif_loops_into_one_clip(tmp_path):
    single = tmp_path / "one.gif"
    Image.fromarray(np.broadcast_to(COLORS[7], (48, 64, 3)).copy()).save(single)
    (clip,) = all_clips(ClipReader(SHAPE, {}, C3D_RECIPE), single)
    assert gif_indices(clip) == [7] * 16


def test_fps_resampling_follows_per_frame_durations(tmp_path):
    # 8 frames shown 100, 300, 100, 300, ... ms: 1.6 s, so 16 frames at 10 fps.
    gif = write_gif(tmp_path / "uneven.gif", 8, durations=[100, 300] * 4)
    (clip,) = all_clips(ClipReader(SHAPE, {"fps": 10.0}, C3D_RECIPE), gif)
    assert gif_indices(clip) == [0, 1, 1, 1, 2, 3, 3, 3, 4, 5, 5, 5, 6, 7, 7, 7]
    assert len(all_clips(ClipReader(SHAPE, {"fps": 5.0}, C3D_RECIPE), gif)) == 1  # 8 frames: looped


@pytest.mark.parametrize("ext, codec", [("mp4", "libx264"), ("avi", "mpeg4"),
                                        ("webm", "libvpx-vp9"), ("mov", "mpeg4")])
def test_videos_decode_sample_and_resample(tmp_path, ext, codec):
    video = write_video(tmp_path / f"v.{ext}", 40, codec, fps=20)
    clips = all_clips(ClipReader(SHAPE, {}, C3D_RECIPE), video)
    assert [video_indices(c) for c in clips] == [list(range(s, s + 16)) for s in (0, 8, 16, 24)]
    (half_rate,) = all_clips(ClipReader(SHAPE, {"fps": 10.0}, C3D_RECIPE), video)  # 20 frames at 10 fps
    assert video_indices(half_rate) == list(range(0, 32, 2))


def test_frame_folder_in_natural_order(tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    for i in range(20):
        Image.fromarray(np.broadcast_to(COLORS[i], (48, 64, 3)).copy()).save(folder / f"f{i}.png")
    clips = all_clips(ClipReader(SHAPE, {}, C3D_RECIPE), folder)
    assert [gif_indices(c) for c in clips] == [list(range(16))]  # f2 before f10
    with pytest.raises(DecodeError, match="timestamps"):
        all_clips(ClipReader(SHAPE, {"fps": 10.0}, C3D_RECIPE), folder)


def test_bad_files_raise_decode_errors(tmp_path, gifs):
    data = gifs[(40, False)].read_bytes()
    cut = tmp_path / "cut.gif"
    for fraction in (0.3, 0.95):  # inside the frame headers, inside the last frame's pixels
        cut.write_bytes(data[:int(len(data) * fraction)])
        with pytest.raises(DecodeError, match="cut.gif"):
            all_clips(ClipReader(SHAPE, {}, C3D_RECIPE), cut)
    video = bytearray(write_video(tmp_path / "v.mp4", 20, "libx264").read_bytes())
    video[:64] = b"\x00" * 64  # the MP4 header boxes
    (tmp_path / "bad.mp4").write_bytes(video)
    with pytest.raises(DecodeError, match="bad.mp4: not a readable video"):
        all_clips(ClipReader(SHAPE, {}, C3D_RECIPE), tmp_path / "bad.mp4")


def test_settings_hold_what_changes_vectors_and_options_are_checked(tmp_path):
    base = ClipReader(SHAPE, {}, C3D_RECIPE).settings()
    assert base["sampling"] == "stride" and base["stride"] == 8 and "num_clips" not in base
    assert ClipReader(SHAPE, {"stride": 4}, C3D_RECIPE).settings() != base
    assert ClipReader(SHAPE, {"fps": 8.0}, C3D_RECIPE).settings()["fps"] == 8.0
    uniform = ClipReader(SHAPE, {"sampling": "uniform", "stride": 4}, C3D_RECIPE).settings()
    assert uniform == ClipReader(SHAPE, {"sampling": "uniform"}, C3D_RECIPE).settings()  # stride unused
    np.save(tmp_path / "mean.npy", np.full((16, 37, 49, 3), 100.0, np.float32))
    with_mean = ClipReader(SHAPE, {"mean_file": str(tmp_path / "mean.npy")}, C3D_RECIPE)
    assert with_mean.settings()["mean"].startswith("file sha256:")
    assert with_mean.preprocess(np.full((1, *SHAPE), 150.0, np.float32)).max() == 50.0
    for bad in ({"frames": 8}, {"sampling": "random"}, {"stride": 0}, {"fps": -1.0},
                {"mean_file": str(tmp_path / "missing.npy")}):
        with pytest.raises(ConfigError):
            ClipReader(SHAPE, bad, C3D_RECIPE)


def test_discovery_of_frame_folders_beside_gifs_and_videos(tmp_path):
    root = tmp_path / "data"
    write_gif(root / "pos" / "a.gif", 5)
    write_gif(root / "neg" / "b.gif", 5)
    for label, name in (("pos", "clipA"), ("neg", "clipB")):
        for i in range(3):
            write_still(root / label / name / f"{i:03d}.jpg")
    (root / "pos" / "notes.txt").write_text("ignored")
    dataset = discover(root, ClipReader.extensions, leaf_dirs=True)
    assert [(s.id, s.label) for s in dataset.samples] == [
        ("neg/b.gif", "neg"), ("neg/clipB", "neg"), ("pos/a.gif", "pos"), ("pos/clipA", "pos")]
    assert dataset.class_names == ("neg", "pos")

    split_root = tmp_path / "split"
    for split in ("train", "test"):
        for i in range(2):
            write_still(split_root / split / "cat" / f"v{i}" / "frame1.png")
    split_set = discover(split_root, ClipReader.extensions, leaf_dirs=True)
    assert sorted((s.split, s.id) for s in split_set.samples) == [
        ("test", "test/cat/v0"), ("test", "test/cat/v1"),
        ("train", "train/cat/v0"), ("train", "train/cat/v1")]

    flat = tmp_path / "flat"  # unlabelled clip folders, as predict reads them
    for name in ("x", "y"):
        write_still(flat / name / "1.png")
    unlabelled = discover(flat, ClipReader.extensions, leaf_dirs=True, require_labels=False)
    assert [(s.id, s.label) for s in unlabelled.samples] == [("x", ""), ("y", "")]


def write_still(path: Path, level: int = 90) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((24, 32, 3), level, np.uint8)).save(path)


def test_frame_folder_stamp_changes_when_a_frame_is_rewritten(tmp_path):
    import os

    root = tmp_path / "data"
    for i in range(3):
        write_still(root / "cat" / "clip" / f"{i}.png")
    before = discover(root, ClipReader.extensions, leaf_dirs=True).samples[0].stamp
    folder_times = (root / "cat" / "clip").stat()
    write_still(root / "cat" / "clip" / "1.png", level=200)  # in place: same name
    os.utime(root / "cat" / "clip" / "1.png", ns=(folder_times.st_atime_ns,
                                                 folder_times.st_mtime_ns + 10**9))
    after = discover(root, ClipReader.extensions, leaf_dirs=True).samples[0].stamp
    assert after != before


def test_discovery_asks_once_per_folder_whether_it_holds_frames(tmp_path, monkeypatch):
    import importlib

    discover_module = importlib.import_module("pipeline.extract.sources.discover")  # not the function
    root = tmp_path / "data"
    for i in range(30):
        write_gif(root / "pos" / f"{i}.gif", 1)
        write_still(root / "neg" / f"clip{i % 3}" / f"{i}.jpg")
    calls = []
    real = discover_module._is_frame_folder
    monkeypatch.setattr(discover_module, "_is_frame_folder",
                        lambda folder, ext: calls.append(folder) or real(folder, ext))
    dataset = discover(root, ClipReader.extensions, leaf_dirs=True)
    assert len(dataset.samples) == 33
    assert len(calls) == len(set(calls))  # not once per file: 5,000 GIFs took minutes


@needs_shared(SHARED / "clips")
@pytest.mark.parametrize("name", ["ucf101_cricket_shot.gif", "arm_wrestling.mp4",
                                  "ntu_drink_water.avi"])
def test_real_clips_decode(name):
    reader = ClipReader((16, 112, 112, 3), {"sampling": "uniform", "num_clips": 2}, C3D_RECIPE)
    clips = [clip for chunk in reader.read(SHARED / "clips" / name) for clip in chunk]
    assert len(clips) == 2 and clips[0].shape == (16, 112, 112, 3)
    assert clips[0].std() > 10  # real picture content, not a blank frame


# -- extraction through the real pipeline, with a tiny clip backbone -------------------------

def _build_tiny_clip_net(weights, input_shape):
    import keras

    inputs = keras.Input(shape=tuple(input_shape))
    x = keras.layers.Conv3D(4, 3, strides=2, activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling3D(name="gap")(x)
    return keras.Model(inputs, x)


@pytest.fixture(scope="module")
def tiny_clip_backbone(tmp_path_factory):
    """Registers `tiny_clip`; returns extract options using it with one fixed weights file."""
    from pipeline.extract.backbones import register_backbone
    from pipeline.extract.backbones.c3d import preprocess_c3d
    from pipeline.extract.backbones.spec import BackboneSpec

    register_backbone(BackboneSpec(
        name="tiny_clip", kind="clip", build=_build_tiny_clip_net, preprocess=preprocess_c3d,
        clip_recipe=C3D_RECIPE,
        preprocess_name="c3d (test)", input_shape=SHAPE), overwrite=True)
    weights = tmp_path_factory.mktemp("tiny") / "tiny_clip.weights.h5"
    _build_tiny_clip_net(None, SHAPE).save_weights(str(weights))
    return {"backbone": "tiny_clip", "weights": str(weights)}


@pytest.fixture(scope="module")
def clip_data(tmp_path_factory):
    """Two classes of GIFs, a frame folder, a video, and two broken files."""
    root = tmp_path_factory.mktemp("clipdata") / "data"
    write_gif(root / "pos" / "five.gif", 5)
    write_gif(root / "pos" / "forty.gif", 40)
    for i in range(20):
        Image.fromarray(np.broadcast_to(COLORS[i], (48, 64, 3)).copy()).save(
            (root / "pos" / "frames").mkdir(parents=True, exist_ok=True) or
            root / "pos" / "frames" / f"{i}.png")
    write_gif(root / "neg" / "sixteen.gif", 16, rgba=True)
    write_video(root / "neg" / "video.mp4", 40, "libx264")
    gif = (root / "pos" / "forty.gif").read_bytes()
    (root / "neg" / "truncated.gif").write_bytes(gif[:len(gif) // 2])
    video = bytearray((root / "neg" / "video.mp4").read_bytes())
    video[:64] = b"\x00" * 64
    (root / "neg" / "corrupt.mp4").write_bytes(video)
    return root


def _extract(data, backbone, cache, **options):
    from pipeline.extract.run import run_extraction

    opts = {"data": str(data), **backbone, "layer": "pooled", "pooling": "avg",
            "batch_size": 3, "workers": 2, "dtype": "float32", "cache_dir": str(cache)}
    opts.update(options)
    return run_extraction(opts, progress=False, echo=lambda *a: None).path


def test_extract_records_bad_clips_as_failures_and_keeps_the_rest(clip_data, tiny_clip_backbone,
                                                                 tmp_path):
    from pipeline.store.feature_store import open_store

    with open_store(_extract(clip_data, tiny_clip_backbone, tmp_path)) as store:
        assert list(store.column("ids")) == ["neg/sixteen.gif", "neg/video.mp4", "pos/five.gif",
                                             "pos/forty.gif", "pos/frames"]
        failures = dict(store.failures())
        assert sorted(failures) == ["neg/corrupt.mp4", "neg/truncated.gif"]
        assert "not a readable video" in failures["neg/corrupt.mp4"]
        assert "truncated" in failures["neg/truncated.gif"]
        assert store.provenance["reader"]["sampling"] == "stride"
        assert store.provenance["reader"]["short"] == "loop"


def test_per_clip_rows_average_to_the_per_video_mean(clip_data, tiny_clip_backbone, tmp_path):
    from pipeline.store.feature_store import open_store
    from run_pipeline import main

    assert main(["extract", "--data", str(clip_data), "--backbone", "tiny_clip",
                 "--weights", tiny_clip_backbone["weights"], "--aggregate", "per_clip",
                 "--no-progress",
                 "--cache-dir", str(tmp_path), "--batch-size", "3"]) == 0
    (per_clip_path,) = tmp_path.glob("*.h5")
    mean_path = _extract(clip_data, tiny_clip_backbone, tmp_path / "mean", l2_normalize=True)
    with open_store(per_clip_path) as clips, open_store(mean_path) as means:
        ids, groups = list(clips.column("ids")), list(clips.column("group"))
        assert ids[:5] == ["neg/sixteen.gif#clip0", "neg/video.mp4#clip0", "neg/video.mp4#clip1",
                           "neg/video.mp4#clip2", "neg/video.mp4#clip3"]
        assert len(ids) == 1 + 4 + 1 + 4 + 1  # sixteen, video, five, forty, frames
        assert list(clips.column("clip_index")[1:5]) == [0, 1, 2, 3]
        assert groups[1:5] == ["neg/video.mp4"] * 4  # the video is the group of its clips
        X, _ = clips.load()
        Y, _ = means.load()
        for row, sample in enumerate(means.column("ids")):
            mine = [i for i, g in enumerate(groups) if g == sample]
            mean = X[mine].mean(axis=0)
            np.testing.assert_allclose(Y[row], mean / np.linalg.norm(mean), rtol=1e-5, atol=1e-6)


@needs_shared(SHARED / "clips")
def test_real_clips_extract(tiny_clip_backbone, tmp_path):
    from pipeline.store.feature_store import open_store

    manifest = tmp_path / "clips.csv"
    manifest.write_text("path,label\n" + "".join(
        f"{SHARED / 'clips' / name},{label}\n" for name, label in (
            ("ucf101_cricket_shot.gif", "cricket"), ("arm_wrestling.mp4", "wrestling"),
            ("ntu_drink_water.avi", "drink"))))
    with open_store(_extract(manifest, tiny_clip_backbone, tmp_path / "cache",
                             sampling="uniform", num_clips=3)) as store:
        assert len(store) == 3 and store.failures() == []
        assert np.isfinite(store.load()[0]).all()


def test_clip_decoding_in_processes_gives_the_thread_results(clip_data, tiny_clip_backbone,
                                                             tmp_path):
    from pipeline.store.feature_store import open_store

    by_threads = _extract(clip_data, tiny_clip_backbone, tmp_path / "t", decode="threads")
    by_procs = _extract(clip_data, tiny_clip_backbone, tmp_path / "p", decode="processes")
    with open_store(by_threads) as a, open_store(by_procs) as b:
        assert list(a.column("ids")) == list(b.column("ids"))
        assert dict(a.failures()).keys() == dict(b.failures()).keys()
        assert np.abs(a.load()[0]).max() > 0.1
        np.testing.assert_allclose(a.load()[0], b.load()[0], atol=1e-5)
