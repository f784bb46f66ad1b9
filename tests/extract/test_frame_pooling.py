"""An image backbone on clip frames (`--temporal-pool mean|max|none`, `--frames K`).

Real files written here (animated GIFs, an MP4 encoded by PyAV, a folder of PNG frames), a
real tiny Keras image backbone with a saved weights file, real HDF5 stores, fit-head, predict
and export: the stored rows must be the backbone's per-frame vectors (`none`) and their
mean / max over time; every frame row keeps its video as its group so no split separates a
video's frames; each setting changes the vector key.
"""

import numpy as np
import pytest
from PIL import Image

SIZE = 32
FRAMES = 4


def _tiny_net(weights, input_shape):
    import keras

    inputs = keras.Input(shape=tuple(input_shape))
    x = keras.layers.Conv2D(6, 3, strides=2, activation="relu", name="conv")(inputs)
    return keras.Model(inputs, keras.layers.Conv2D(8, 3, name="conv2")(x))


def _scale(x):
    return x / 127.5 - 1.0


def _frames(n, seed, cue):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        arr = rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)
        arr[..., cue] = np.clip(arr[..., cue].astype(int) + 90, 0, 255)  # a learnable cue
        out.append(arr)
    return out


def _write_gif(path, frames):
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=60, loop=0)


def _write_mp4(path, frames):
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 52, 40, "yuv420p"
        for arr in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_folder(path, frames):
    path.mkdir(parents=True, exist_ok=True)
    for i, arr in enumerate(frames):
        Image.fromarray(arr).save(path / f"frame{i}.png")


@pytest.fixture(scope="module")
def frame_data(tmp_path_factory):
    import keras

    from pipeline.extract.backbones import BackboneSpec, register_backbone

    register_backbone(BackboneSpec(name="tiny_frames", build=_tiny_net, preprocess=_scale,
                                   preprocess_name="x / 127.5 - 1 (test)",
                                   input_shape=(SIZE, SIZE, 3)), overwrite=True)
    root = tmp_path_factory.mktemp("frames")
    weights = root / "tiny.weights.h5"
    keras.utils.set_random_seed(0)
    _tiny_net(None, (SIZE, SIZE, 3)).save_weights(str(weights))
    data = root / "clips"
    for c, name in enumerate(("neg", "pos")):
        for i in range(6):  # 2 to 12 frames: shorter than --frames are looped
            _write_gif(data / name / f"g{i}.gif", _frames(2 + 2 * i, 10 * c + i, c))
        _write_mp4(data / name / "v.mp4", _frames(15, 50 + c, c))
        _write_folder(data / name / "shots", _frames(7, 60 + c, c))
    return {"root": root, "data": data, "weights": weights}


def _extract(frame_data, pool, **more):
    from pipeline.extract.run import run_extraction

    opts = {"data": str(frame_data["data"]), "backbone": "tiny_frames",
            "weights": str(frame_data["weights"]), "frames": FRAMES, "temporal_pool": pool,
            "cache_dir": str(frame_data["root"] / "cache"), "batch_size": 5, "progress": False,
            **more}
    return run_extraction(opts, echo=lambda *_: None).path


def _rows_by_file(store):
    from pipeline.extract.journal import sample_id_of

    ids = [sample_id_of(i, "clip_index" in store.file) for i in store.column("ids")]
    feats = store.read_rows(np.arange(len(store)))
    by_file = {}
    for sid, row in zip(ids, feats):
        by_file.setdefault(sid, []).append(row)
    return {sid: np.stack(rows) for sid, rows in by_file.items()}


def test_k_frames_are_taken_evenly_and_short_clips_are_completed():
    from pipeline.extract.sources.frame_reader import sampled_indices

    assert sampled_indices(10, 4) == [1, 3, 6, 8]  # the middle of four equal segments
    assert sampled_indices(4, 4) == [0, 1, 2, 3]
    assert sampled_indices(100, 1) == [50]
    assert sampled_indices(3, 5, "loop") == [0, 1, 2, 0, 1]
    assert sampled_indices(3, 5, "pad") == [0, 1, 2, 2, 2]


def test_a_gifs_frames_get_the_pixels_a_still_image_gets(tmp_path):
    from pipeline.extract.sources.frame_reader import FrameReader
    from pipeline.extract.sources.images import ImageReader, fit_to_size, to_rgb

    frames = _frames(6, 3, 0)
    _write_gif(tmp_path / "a.gif", frames)
    reader = FrameReader((SIZE, SIZE, 3), {"frames": 3, "temporal_pool": "mean",
                                           "resize": "center_crop"})
    got = np.concatenate(list(reader.read(tmp_path / "a.gif")))
    with Image.open(tmp_path / "a.gif") as img:
        expected = []
        for index in (1, 3, 5):
            img.seek(index)
            expected.append(np.asarray(fit_to_size(to_rgb(img), (SIZE, SIZE), "center_crop")))
    np.testing.assert_array_equal(got, np.stack(expected))
    first = FrameReader((SIZE, SIZE, 3), {"frames": 1, "temporal_pool": "mean",
                                          "resize": "center_crop"})
    with Image.open(tmp_path / "a.gif") as img:
        assert img.n_frames == 6
    still = next(ImageReader((SIZE, SIZE, 3), "center_crop").read(tmp_path / "a.gif"))
    one = FrameReader((SIZE, SIZE, 3), {"frames": 6, "temporal_pool": "none",
                                        "resize": "center_crop"})
    np.testing.assert_array_equal(next(one.read(tmp_path / "a.gif"))[0], still[0])
    assert next(first.read(tmp_path / "a.gif")).shape == (1, SIZE, SIZE, 3)


@pytest.mark.parametrize("packets", [None, 9, 18])  # as counted; fewer; more than its frames
def test_a_videos_frames_are_its_decoded_frames_at_the_sampled_indices(tmp_path, monkeypatch,
                                                                      packets):
    import av

    from pipeline.extract.sources import frame_reader
    from pipeline.extract.sources.frame_reader import FrameReader, sampled_indices
    from pipeline.extract.sources.images import fit_to_size

    _write_mp4(tmp_path / "v.mp4", _frames(15, 4, 1))
    with av.open(str(tmp_path / "v.mp4")) as container:
        decoded = [np.asarray(fit_to_size(f.to_image(), (SIZE, SIZE), "squash"))
                   for f in container.decode(container.streams.video[0])]
    assert len(decoded) == 15
    if packets is not None:  # a container whose packets and frames do not match one to one
        monkeypatch.setattr(frame_reader, "video_packet_count", lambda path: packets)
    else:
        assert frame_reader.video_packet_count(tmp_path / "v.mp4") == 15
    reader = FrameReader((SIZE, SIZE, 3), {"frames": 4, "temporal_pool": "max"})
    got = np.concatenate(list(reader.read(tmp_path / "v.mp4")))
    np.testing.assert_array_equal(got, np.stack([decoded[i] for i in sampled_indices(15, 4)]))


def test_pooled_rows_are_the_mean_and_max_of_the_backbones_frame_vectors(frame_data):
    from pipeline.extract.backbones import get_backbone
    from pipeline.extract.backbones.feature_model import build_feature_model
    from pipeline.extract.sources.frame_reader import FrameReader
    from pipeline.store import open_store

    paths = {pool: _extract(frame_data, pool) for pool in ("none", "mean", "max")}
    assert len(set(paths.values())) == 3  # three stores: the pools never share vectors
    with open_store(paths["none"]) as s:
        frames = _rows_by_file(s)
    with open_store(paths["mean"]) as s:
        means = _rows_by_file(s)
    with open_store(paths["max"]) as s:
        maxima = _rows_by_file(s)
    assert len(frames) == 16 and {"neg/v.mp4", "pos/shots", "pos/g0.gif"} <= set(frames)
    assert all(rows.shape == (FRAMES, 8) for rows in frames.values())
    # The backbone itself, run here on the reader's frames, gives the per-frame rows.
    model = build_feature_model(get_backbone("tiny_frames"), str(frame_data["weights"]),
                                input_size=SIZE)
    reader = FrameReader((SIZE, SIZE, 3), {"frames": FRAMES, "temporal_pool": "none"})
    for sid in ("neg/v.mp4", "pos/shots", "pos/g0.gif", "neg/g5.gif"):
        pixels = np.concatenate(list(reader.read(frame_data["data"] / sid)))
        direct = np.asarray(model.predict(_scale(pixels.astype(np.float32)), verbose=0))
        np.testing.assert_allclose(frames[sid], direct, atol=1e-5, err_msg=sid)
    for sid, rows in frames.items():
        assert means[sid].shape == maxima[sid].shape == (1, 8)
        np.testing.assert_allclose(means[sid][0], rows.mean(axis=0), atol=1e-6, err_msg=sid)
        np.testing.assert_array_equal(maxima[sid][0], rows.max(axis=0), err_msg=sid)
    assert not np.allclose(means["pos/g5.gif"], maxima["pos/g5.gif"])


def test_frame_rows_keep_their_video_as_group_and_no_split_separates_them(frame_data):
    from pipeline.evaluation.splits import cv_folds, make_split
    from pipeline.store import open_store

    with open_store(_extract(frame_data, "none")) as store:
        groups = store.column("group")
        ids = store.column("ids")
        assert len(ids) == 16 * FRAMES
        for row_id, group in zip(ids, groups):
            assert row_id.split("#clip")[0] == group  # each frame's group is its video
        labels = store.column("labels")
        for seed in range(4):
            split = make_split(store, val_fraction=0.25, seed=seed, test_fraction=0.25)
            parts = [set(groups[rows]) for rows in (split.train, split.val, split.test)]
            assert all(len(p) for p in parts)
            assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
        g = store.row_index.group
        assert (g == groups).all()  # the frames' own groups: their videos
        for train, test in cv_folds(np.arange(len(g)), labels, g, 3, seed=0):
            assert not set(g[train]) & set(g[test])


def test_grid_search_folds_and_audit_keep_a_videos_frames_together(frame_data, tmp_path,
                                                                    capsys):
    import json

    from conftest import read_csv
    from run_pipeline import main

    store = str(_extract(frame_data, "none"))
    assert main(["grid-search", "--store", store, "--out", str(tmp_path / "gs"), "--models",
                 "logistic_regression", "--cv", "3", "--n-jobs", "1"]) == 0
    run = capsys.readouterr().out.strip().splitlines()[-1]
    folds = read_csv(f"{run}/folds.csv")
    assert len(folds) == 16 * FRAMES
    fold_columns = [c for c in folds[0] if c.startswith("fold")]
    by_group = {}
    for row in folds:
        assert row["id"].split("#clip")[0] == row["group"]
        by_group.setdefault(row["group"], set()).add(tuple(row[c] for c in fold_columns))
    assert len(by_group) == 16 and all(len(roles) == 1 for roles in by_group.values())
    assert main(["audit", "--store", store, "--out", str(tmp_path / "audit"),
                 "--folds", "3"]) == 0
    summary = json.loads((tmp_path / "audit" / "summary.json").read_text())
    assert summary["n_rows"] == 16 * FRAMES
    # A looped 2-frame GIF repeats its frames (0, 1, 0, 1): audit finds those exact copies as
    # pairs inside one video, its group; every pair names each row's video as its group.
    pairs = read_csv(tmp_path / "audit" / "duplicates.csv")
    exact = {(p["id_a"], p["id_b"]) for p in pairs if p["kind"] == "exact"}
    for video in ("neg/g0.gif", "pos/g0.gif"):
        assert (f"{video}#clip0", f"{video}#clip2") in exact, video
        assert (f"{video}#clip1", f"{video}#clip3") in exact, video
    assert all(p["group_a"] == p["id_a"].split("#clip")[0] and
               p["group_b"] == p["id_b"].split("#clip")[0] for p in pairs)


def test_every_frame_setting_changes_the_vector_key():
    from pipeline.extract.backbones import get_backbone
    from pipeline.extract.run import vector_settings
    from pipeline.extract.sources import create_reader
    from pipeline.store.vector_identity import REBUILD_OPTIONS, vector_key

    spec = get_backbone("mobilenet")
    base = {"backbone": "mobilenet", "weights": "none", "frames": 8, "temporal_pool": "mean",
            "precision": "float32"}  # the key takes the resolved precision
    variants = [{}, {"temporal_pool": "max"}, {"temporal_pool": "none"}, {"frames": 4},
                {"short": "pad"}, {"fps": 5.0}, {"resize": "center_crop"},
                {"temporal_pool": None, "frames": None}]  # the still-image reader
    keys = []
    for change in variants:
        opts = {**base, **change}
        from pipeline.extract.options import ExtractConfig

        cfg = ExtractConfig.from_mapping(opts)
        reader = create_reader(spec, spec.input_shape_for(None), cfg)
        keys.append(vector_key(vector_settings(cfg.as_dict(), spec, reader, "none")))
    assert len(set(keys)) == len(variants), keys
    assert "temporal_pool" in REBUILD_OPTIONS  # predict and export rebuild the same reader


@pytest.mark.parametrize("flags, words", [
    (["--backbone", "c3d", "--temporal-pool", "mean"], "clip backbone takes whole clips"),
    (["--backbone", "mobilenet", "--temporal-pool", "mean", "--l2-normalize"], "--l2-normalize"),
    (["--backbone", "mobilenet", "--temporal-pool", "max", "--mean-file", "m.npy"],
     "--mean-file"),
    (["--backbone", "mobilenet", "--temporal-pool", "sum"], "temporal"),
    (["--backbone", "mobilenet", "--temporal-pool", "mean", "--aggregate", "per_clip"],
     "--temporal-pool none"),
])
def test_settings_frame_pooling_cannot_follow_are_refused(tmp_path, capsys, flags, words):
    from run_pipeline import main

    _write_gif(tmp_path / "d" / "a" / "x.gif", _frames(3, 0, 0))
    _write_gif(tmp_path / "d" / "b" / "y.gif", _frames(3, 1, 1))
    code = main(["extract", "--data", str(tmp_path / "d"), "--weights", "none",
                 "--cache-dir", str(tmp_path / "cache"), "--no-progress", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error:") and words in err[-1], err
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").glob("*.h5"))


@pytest.mark.parametrize("pool", ["mean", "max", "none"])
def test_predict_and_export_pool_frames_as_extract_does(frame_data, tmp_path, pool):
    import keras

    from pipeline.deploy.export import export_model
    from pipeline.deploy.prediction import predict, read_predictions
    from pipeline.extract.sources.frame_reader import FrameReader
    from pipeline.fit.run import fit_head

    store = _extract(frame_data, pool)
    run = fit_head(store, {"epochs": 2, "hidden_units": (8,), "progress": False},
                   out_dir=tmp_path / "runs", echo=lambda *_: None)
    predicted = read_predictions(predict(run, frame_data["data"],
                                         {"progress": False,
                                          "cache_dir": str(frame_data["root"] / "cache")},
                                         echo=lambda *_: None))
    path = export_model(run, {"out": str(tmp_path / "m.keras")}, echo=lambda *_: None)
    model = keras.saving.load_model(path, safe_mode=True)
    reader = FrameReader((SIZE, SIZE, 3), {"frames": FRAMES, "temporal_pool": pool})
    for sid in ("neg/v.mp4", "pos/shots", "pos/g1.gif"):
        pixels = np.concatenate(list(reader.read(frame_data["data"] / sid)))
        assert pixels.dtype == np.uint8  # the decoded frames go in as they are
        got = model.predict(pixels, batch_size=len(pixels), verbose=0)  # one video per call
        if pool == "none":  # one row per frame
            want = np.stack([predicted[f"{sid}#clip{k}"] for k in range(FRAMES)])
        else:
            want = predicted[sid][None]
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=sid)


@pytest.mark.slow
def test_real_mobilenet_on_the_shared_clips_pools_its_frame_vectors(tmp_path):
    """The real MobileNet weights on the real GIF, MP4 and 1080p AVI, 8 frames each."""
    from conftest import MOBILENET_WEIGHTS, SHARED

    clips = [SHARED / "clips" / n for n in ("ucf101_cricket_shot.gif", "arm_wrestling.mp4",
                                            "ntu_drink_water.avi")]
    missing = [p for p in (MOBILENET_WEIGHTS, *clips) if not p.exists()]
    if missing:
        pytest.skip(f"../shared not available: {missing[0]}")
    from pipeline.extract.run import run_extraction
    from pipeline.store import open_store

    data = tmp_path / "clips"
    for i, clip in enumerate(clips):
        (data / f"class{i}").mkdir(parents=True)
        (data / f"class{i}" / clip.name).symlink_to(clip)
    stores = {pool: run_extraction({"data": str(data), "backbone": "mobilenet",
                                    "weights": str(MOBILENET_WEIGHTS), "frames": 8,
                                    "temporal_pool": pool, "batch_size": 8, "progress": False,
                                    "cache_dir": str(tmp_path / "cache")},
                                   echo=lambda *_: None).path for pool in ("none", "mean")}
    with open_store(stores["none"]) as s:
        frames = _rows_by_file(s)
    with open_store(stores["mean"]) as s:
        means = _rows_by_file(s)
        assert len(s) == 3 and not s.failures()
    assert {k: v.shape for k, v in frames.items()} == {
        f"class{i}/{c.name}": (8, 1024) for i, c in enumerate(clips)}
    for sid, rows in frames.items():
        assert np.isfinite(rows).all() and rows.std(axis=0).max() > 0  # the frames differ
        np.testing.assert_allclose(means[sid][0], rows.mean(axis=0), atol=1e-5, err_msg=sid)


def test_frames_without_temporal_pool_are_refused_not_a_cache_hit_on_first_frames(frame_data,
                                                                                  tmp_path,
                                                                                  capsys):
    """`--frames K` on an image backbone reads K frames per clip only with --temporal-pool;
    alone it would key nothing and reuse the store of first frames. It is refused, naming
    --temporal-pool, and the store of first frames is left as it was."""
    from run_pipeline import main

    common = ["extract", "--data", str(frame_data["data"]), "--backbone", "tiny_frames",
              "--weights", str(frame_data["weights"]), "--cache-dir", str(tmp_path / "cache"),
              "--no-progress"]
    assert main(common) == 0
    first_frames = capsys.readouterr().out.strip().splitlines()[-1]
    before = (tmp_path / "cache" / first_frames.rsplit("/", 1)[-1]).stat().st_mtime_ns
    assert main([*common, "--frames", "8"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "--temporal-pool" in err[0], err
    assert "cache hit" not in captured.out
    assert sorted(p.name for p in (tmp_path / "cache").glob("*.h5")) == \
        [first_frames.rsplit("/", 1)[-1]]
    assert (tmp_path / "cache" / first_frames.rsplit("/", 1)[-1]).stat().st_mtime_ns == before
