"""Readers are objects: a new source type is one class plus one registration, and the audit
report's thumbnails come from the reader that claims the file."""

import numpy as np
from PIL import Image

from pipeline.extract.backbones import BackboneSpec, register_backbone
from pipeline.extract.run import run_extraction
from pipeline.extract.sources import register_reader, thumbnail
from pipeline.extract.sources.images import ImageReader
from pipeline.store.feature_store import open_store


class ArrayReader(ImageReader):
    """Samples are .npy files holding one uint8 (H, W, 3) picture."""

    kind = "array"
    extensions = (".npy",)

    @classmethod
    def from_config(cls, spec, input_shape, config):
        return cls(input_shape)

    def settings(self) -> dict:
        return {"reader": "array"}

    def read(self, path):
        yield np.load(path)[None]


def _build(weights, input_shape):
    import keras

    inputs = keras.Input(shape=tuple(input_shape))
    x = keras.layers.Conv2D(3, 3, kernel_initializer="ones", name="conv")(inputs)
    return keras.Model(inputs, x)


def test_a_new_source_type_is_one_reader_class_and_one_registration(tmp_path):
    register_reader(ArrayReader, overwrite=True)
    register_backbone(BackboneSpec(name="array_net", kind="array", build=_build,
                                   preprocess=lambda x: x / 255.0, preprocess_name="x/255",
                                   input_shape=(8, 8, 3)), overwrite=True)
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(2):
            np.save(tmp_path / "data" / label / f"{i}.npy",
                    rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    result = run_extraction({"data": str(tmp_path / "data"), "backbone": "array_net",
                             "weights": "none", "cache_dir": str(tmp_path / "cache"),
                             "decode": "threads", "progress": False}, echo=lambda *_: None)
    assert result.unit == "images" and result.n_rows == 4 and result.n_failures == 0
    with open_store(result) as store:
        assert store.provenance["reader"] == {"reader": "array"}


def test_thumbnails_come_from_the_reader_that_claims_the_file(tmp_path):
    Image.fromarray(np.full((300, 200, 3), 200, np.uint8)).save(tmp_path / "photo.png")
    frames = [Image.fromarray(np.full((60, 90, 3), v, np.uint8)) for v in (10, 250)]
    frames[0].save(tmp_path / "clip.gif", save_all=True, append_images=frames[1:])
    photo, clip = thumbnail(tmp_path / "photo.png", 64), thumbnail(tmp_path / "clip.gif", 64)
    assert photo.size == (43, 64)  # the picture, fitted into 64 x 64
    assert max(clip.size) <= 64 and np.asarray(clip).mean() < 40  # the GIF's first frame
