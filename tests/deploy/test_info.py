"""`info STORE` answers the next question: how the split will be made, whether groups leak
across the store's own splits, and which reader settings made the vectors."""

import numpy as np
import pytest
from PIL import Image

from conftest import write_images


def _info(path, capsys) -> dict:
    from run_pipeline import main

    assert main(["info", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    return {line[:13].strip(): line[13:] for line in lines if line[:1] != " "}


def test_groups_on_both_sides_of_the_split_are_flagged(tmp_path, capsys):
    from pipeline.store.feature_store import write_store

    rng = np.random.default_rng(0)
    labels = np.arange(24) % 2
    groups = [f"video{i // 2}" for i in range(20)] + ["", "", "", ""]
    split = ["train", "val"] * 10 + ["train"] * 4  # each video's two frames on both sides
    leaking = write_store(tmp_path / "leak.h5", rng.normal(size=(24, 3)).astype(np.float32),
                          labels, class_names=["a", "b"], group=groups, split=split)
    line = _info(leaking, capsys)["groups"]
    assert line.startswith("10 distinct, 4 row(s) without a group, 10 in more than one split")
    assert "drop the split column" in line

    grouped = write_store(tmp_path / "grouped.h5", rng.normal(size=(20, 3)).astype(np.float32),
                          labels[:20], class_names=["a", "b"], group=groups[:20])
    described = _info(grouped, capsys)
    assert described["splits"] == "none (fit-head makes a group-aware split)"
    assert described["groups"] == "10 distinct"
    plain = write_store(tmp_path / "plain.h5", rng.normal(size=(20, 3)).astype(np.float32),
                        labels[:20], class_names=["a", "b"])
    assert _info(plain, capsys)["splits"] == "none (fit-head makes a stratified split)"


def _tiny_clip_net(weights, input_shape):
    import keras

    inputs = keras.Input(shape=tuple(input_shape))
    x = keras.layers.Conv3D(2, 3, strides=2, activation="relu", name="conv")(inputs)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling3D(name="gap")(x))


@pytest.fixture(scope="module")
def tiny_clip():
    from pipeline.extract.backbones import BackboneSpec, get_backbone, register_backbone
    from pipeline.extract.backbones.c3d import preprocess_c3d

    register_backbone(BackboneSpec(
        name="tiny_clip_info", kind="clip", build=_tiny_clip_net, preprocess=preprocess_c3d,
        clip_recipe=get_backbone("c3d").clip_recipe, preprocess_name="c3d (test)",
        input_shape=(16, 32, 32, 3)), overwrite=True)
    return "tiny_clip_info"


def test_info_shows_the_reader_settings_that_made_the_vectors(tiny_clip, tmp_path, capsys):
    from run_pipeline import main

    for label in ("a", "b"):
        path = tmp_path / "gifs" / label / "g.gif"
        path.parent.mkdir(parents=True)
        frames = [Image.fromarray(np.full((24, 24, 3), 10 * i, np.uint8)) for i in range(20)]
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=40)
    np.save(tmp_path / "mean.npy", np.full((16, 37, 49, 3), 90.0, np.float32))
    assert main(["extract", "--data", str(tmp_path / "gifs"), "--backbone", tiny_clip,
                 "--weights", "none", "--mean-file", str(tmp_path / "mean.npy"),
                 "--l2-normalize", "--stride", "4", "--cache-dir", str(tmp_path / "cache"),
                 "--no-progress"]) == 0
    store = capsys.readouterr().out.strip().splitlines()[-1]
    reader = _info(store, capsys)["reader"]
    for words in ("clips of 16 frames", "sampling stride 4", "short loop", "37x49",
                  "aggregate mean", "L2 normalise yes", f"mean file {tmp_path / 'mean.npy'}"):
        assert words in reader, reader

    images = write_images(tmp_path / "pets", per_class=2, size=(24, 24))
    assert main(["extract", "--data", str(images), "--backbone", "mobilenet", "--weights",
                 "none", "--input-size", "32", "--resize", "center_crop", "--cache-dir",
                 str(tmp_path / "cache"), "--no-progress"]) == 0
    store = capsys.readouterr().out.strip().splitlines()[-1]
    assert _info(store, capsys)["reader"] == "images, resize center_crop (bilinear)"
