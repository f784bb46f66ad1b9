"""Weights files: a file from another architecture is refused in every format; a file that holds
the trunk and then a classifier top (or a fine-tuned model with the backbone nested) loads.

Real Keras models at 32x32 inputs, saved here as `.keras`, legacy `.h5` and `.weights.h5`."""

import warnings

import numpy as np
import pytest

from pipeline.errors import WeightsError
from pipeline.extract.backbones import get_backbone
from pipeline.extract.backbones.weights import load_trunk

SHAPE = (32, 32, 3)
FORMATS = (".keras", ".h5", ".weights.h5")


def _save(model, folder, stem):
    """The model in all three formats; returns {suffix: path}."""
    paths = {}
    for suffix in FORMATS:
        path = folder / f"{stem}{suffix}"
        model.save_weights(path) if suffix == ".weights.h5" else model.save(path)
        paths[suffix] = path
    return paths


def _distinct(model, seed):
    """Weights nobody else has, so a test can tell which file they came from."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        w.assign(rng.normal(0, 0.05, w.shape).astype("float32"))
    return model


@pytest.fixture(scope="module")
def vgg19_files(tmp_path_factory):
    import keras

    model = keras.applications.VGG19(include_top=False, weights=None, input_shape=SHAPE)
    return _save(model, tmp_path_factory.mktemp("vgg19"), "vgg19")


@pytest.mark.parametrize("suffix", FORMATS)
def test_vgg19_file_is_refused_as_vgg16(vgg19_files, suffix):
    with pytest.raises(WeightsError) as err:
        load_trunk(get_backbone("vgg16"), str(vgg19_files[suffix]), SHAPE)
    message = str(err.value)
    assert "16 weighted layers" in message and "trunk 13" in message  # both layer counts
    if suffix == ".weights.h5":  # Keras 3 stores layers by class and counter: conv2d_7 differs
        assert "block4_conv1" in message and "(3, 3, 256, 256)" in message
    else:  # names: the first layer that does not belong
        assert "'block3_conv4'" in message and "another architecture" in message


def test_resnet101_file_is_refused_as_resnet50(tmp_path):
    import keras

    path = tmp_path / "resnet101.keras"
    keras.applications.ResNet101(include_top=False, weights=None, input_shape=SHAPE).save(path)
    with pytest.raises(WeightsError, match=r"'conv4_block7_1_conv'.*another architecture|"
                                           r"another architecture.*'conv4_block7_1_conv'"):
        load_trunk(get_backbone("resnet50"), str(path), SHAPE)


def _trunk_weights(model):
    names = [layer.name for layer in model.layers if layer.name.startswith("block") and
             layer.weights]
    return {n: [np.asarray(w) for w in model.get_layer(n).weights] for n in names}


def test_files_with_a_classifier_top_or_a_nested_backbone_load(tmp_path):
    import keras

    full = _distinct(keras.applications.VGG16(include_top=True, weights=None, input_shape=SHAPE,
                                              classes=3), seed=1)
    base = _distinct(keras.applications.VGG16(include_top=False, weights=None, input_shape=SHAPE),
                     seed=2)
    tuned = keras.Sequential([keras.Input(SHAPE), base, keras.layers.Flatten(),
                              keras.layers.Dense(2, name="nfc8")])
    cases = [(full, _save(full, tmp_path, "top")), (base, _save(tuned, tmp_path, "tuned"))]
    for source, paths in cases:
        expected = _trunk_weights(source)
        assert len(expected) == 13
        for suffix, path in paths.items():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                trunk = load_trunk(get_backbone("vgg16"), str(path), SHAPE)
            assert not [w for w in caught if "freshly-initialized" in str(w.message)]
            got = _trunk_weights(trunk)
            assert got.keys() == expected.keys(), suffix
            for name, arrays in expected.items():
                for want, have in zip(arrays, got[name]):
                    np.testing.assert_array_equal(have, want, err_msg=f"{path.name} {name}")


def test_legacy_file_of_another_naming_loads_in_order_and_checks_shapes(tmp_path):
    import h5py
    import keras

    base = _distinct(keras.applications.VGG16(include_top=False, weights=None, input_shape=SHAPE),
                     seed=3)
    path = tmp_path / "renamed.h5"
    base.save(path)
    with h5py.File(path, "r+") as fh:  # Keras 2's automatic names: conv2d_1, conv2d_2, ...
        group = fh["model_weights"]
        names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["layer_names"]]
        renamed = [f"layer_{i}" for i in range(len(names))]
        for old, new in zip(names, renamed):
            group.move(old, new)
        group.attrs["layer_names"] = np.array([n.encode() for n in renamed])
    trunk = load_trunk(get_backbone("vgg16"), str(path), SHAPE)
    np.testing.assert_array_equal(np.asarray(trunk.get_layer("block5_conv3").weights[0]),
                                  np.asarray(base.get_layer("block5_conv3").weights[0]))
    with pytest.raises(WeightsError, match="13 weighted layers.*trunk 16"):
        load_trunk(get_backbone("vgg19"), str(path), SHAPE)


def _flax_pickle(model, path):
    """`model` (tests' tiny trunk: conv1, bn1) as a Flax checkpoint pickle."""
    import pickle

    kernel, bias = model.get_layer("conv1").get_weights()
    gamma, beta, mean, var = model.get_layer("bn1").get_weights()
    tree = {"params": {"conv1": {"kernel": kernel, "bias": bias},
                       "bn1": {"scale": gamma, "bias": beta}},
            "batch_stats": {"bn1": {"mean": mean, "var": var}}}
    path.write_bytes(pickle.dumps(tree, protocol=4))
    return path


@pytest.mark.parametrize("suffix", [*FORMATS, ".ckpt"])
def test_weights_holding_nan_are_refused_at_load_naming_file_and_layer(tmp_path, capsys, suffix):
    """A weights file whose first kernel is all NaN would give finite vectors that do not
    depend on the input; it is refused when loaded, in every format, with one `error:` line
    naming the file and the layer, and no store is written."""
    import keras

    from conftest import _tiny_trunk, register_tiny_trunk, write_images
    from run_pipeline import main

    register_tiny_trunk(tmp_path / "tiny.weights.h5")
    keras.utils.set_random_seed(0)
    model = _tiny_trunk(None, SHAPE)
    kernel, bias = model.get_layer("conv1").get_weights()
    model.get_layer("conv1").set_weights([np.full_like(kernel, np.nan), bias])
    path = tmp_path / f"nan{suffix}"
    if suffix == ".ckpt":
        _flax_pickle(model, path)
    else:
        model.save_weights(path) if suffix == ".weights.h5" else model.save(path)
    data = write_images(tmp_path / "data", per_class=2, size=(24, 24))
    code = main(["extract", "--data", str(data), "--backbone", "tiny_trunk", "--weights",
                 str(path), "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error:"), err
    assert path.name in err[0] and "conv1" in err[0] and "NaN" in err[0], err
    assert not list((tmp_path / "cache").glob("*.h5"))
