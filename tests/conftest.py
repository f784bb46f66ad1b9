"""Shared fixtures: tiny real files (images written with Pillow), tiny inputs, real Keras models."""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Every test runs as on a CPU without native bfloat16, so a default extract is float32 on any
# machine; tests/extract/test_precision.py fakes both kinds of CPU for `--precision auto`.
os.environ.setdefault("PIPELINE_CPU_FLAGS", "")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
MOBILENET_WEIGHTS = SHARED / "weights" / "mobilenet_imagenet_notop.weights.h5"
FLOWERS = SHARED / "data" / "flowers5"


def write_images(root: Path, classes=("cat", "dog"), per_class=4, size=(40, 48), seed=0,
                 ext=".png", split=None) -> Path:
    """Writes random RGB images into root[/split]/<class>/<i><ext>; returns root."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = root / split if split else root
    for c, name in enumerate(classes):
        folder = base / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
            arr[..., c % 3] = np.clip(arr[..., c % 3].astype(int) + 60, 0, 255)  # a learnable cue
            Image.fromarray(arr).save(folder / f"{name}_{i}{ext}")
    return root


def write_resnet50_weights(path: Path, input_size: int = 32, seed: int = 0) -> Path:
    """A ResNet50 `.weights.h5` whose BatchNorm statistics are not trivial (so engines and
    inference mode can disagree if they are wrong); returns `path`."""
    import keras

    trunk = keras.applications.ResNet50(include_top=False, weights=None,
                                        input_shape=(input_size, input_size, 3))
    rng = np.random.default_rng(seed)
    for w in trunk.weights:
        if "moving_variance" in w.path:
            w.assign(rng.uniform(0.5, 2.0, w.shape).astype("float32"))
        elif "moving_mean" in w.path:
            w.assign(rng.normal(0, 0.1, w.shape).astype("float32"))
    trunk.save_weights(path)
    return path


@pytest.fixture
def image_folder(tmp_path):
    return write_images(tmp_path / "data")


@pytest.fixture(scope="session")
def flowers5_store(tmp_path_factory):
    """Every flowers5 photo through the shared ImageNet MobileNet (pooled, 224 px), extracted
    once per test session: the slow flowers5 tests of fit-head and grid-search share it."""
    if not (FLOWERS.is_dir() and MOBILENET_WEIGHTS.is_file()):
        pytest.skip(f"../shared not available: {FLOWERS} or {MOBILENET_WEIGHTS}")
    from pipeline.extract.options import EXTRACT_OPTIONS
    from pipeline.extract.run import run_extraction

    opts = {o.name: o.default for o in EXTRACT_OPTIONS}
    opts.update(data=str(FLOWERS), backbone="mobilenet", weights=str(MOBILENET_WEIGHTS),
                cache_dir=str(tmp_path_factory.mktemp("flowers5")), progress=False)
    return run_extraction(opts, echo=lambda *_: None).path


def read_csv(path) -> list[dict]:
    """The rows of a CSV the pipeline wrote, as dicts keyed by its header (cells neutralised
    against spreadsheet formulas read back as they were given)."""
    from pipeline.tables import read_rows

    return read_rows(path)


def needs_shared(*paths):
    """Skip cleanly when ../shared (or a file in it) is absent, e.g. on a user's fresh clone."""
    missing = [p for p in paths if not Path(p).exists()]
    return pytest.mark.skipif(bool(missing), reason=f"../shared not available: {missing[:1]}")


def _tiny_trunk(weights, input_shape):
    """A tiny real CNN trunk (conv, BatchNorm, ReLU), for tests that only need real vectors."""
    import keras

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    return keras.Model(inputs, x, name="tiny_trunk")


def register_tiny_trunk(path: Path, size: int = 32) -> Path:
    """Registers backbone `tiny_trunk` (caffe preprocessing) and writes its weights to `path`."""
    import keras
    from keras.applications import resnet50

    from pipeline.extract.backbones import BackboneSpec, register_backbone

    register_backbone(BackboneSpec(
        name="tiny_trunk", build=_tiny_trunk, preprocess=resnet50.preprocess_input,
        preprocess_name="keras.applications.resnet50.preprocess_input",
        input_shape=(size, size, 3), notes="test-only trunk"), overwrite=True)
    if not path.exists():
        keras.utils.set_random_seed(0)
        _tiny_trunk(None, (size, size, 3)).save_weights(path)
    return path
