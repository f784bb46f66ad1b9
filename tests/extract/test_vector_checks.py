"""Vectors that carry (almost) nothing are stored with one `warning:` line naming the likely
cause: vanishing values (a random-weight MobileNet at 32 px), values that are mostly exactly 0,
and one vector for different inputs (broken weights, blank inputs). Real images, real Keras
trunks with weights saved here, real stores."""

import numpy as np
import pytest

from run_pipeline import main
from tests.conftest import _tiny_trunk, register_tiny_trunk, write_images


def _weights(tmp_path, conv_bias=None):
    """The tests' tiny trunk (conv1, bn1, relu); with `conv_bias`, its kernel is all zeros, so
    every input gives the same map: the bias, or after the ReLU all zeros when it is negative."""
    import keras

    register_tiny_trunk(tmp_path / "tiny.weights.h5")
    if conv_bias is None:
        return tmp_path / "tiny.weights.h5"
    keras.utils.set_random_seed(0)
    model = _tiny_trunk(None, (32, 32, 3))
    kernel, bias = model.get_layer("conv1").get_weights()
    model.get_layer("conv1").set_weights([np.zeros_like(kernel), np.full_like(bias, conv_bias)])
    path = tmp_path / f"flat{conv_bias}.weights.h5"
    model.save_weights(path)
    return path


def _extract(tmp_path, capsys, *flags):
    data = write_images(tmp_path / "data", per_class=3, size=(24, 24))
    code = main(["extract", "--data", str(data), "--cache-dir", str(tmp_path / "cache"),
                 "--input-size", "32", "--no-progress", *flags])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and out[-1].endswith(".h5"), out
    return [line for line in out if line.startswith("warning:")]


@pytest.mark.parametrize("conv_bias, words", [(0.5, ["same vector", "weights"]),
                                              (-0.5, ["exactly 0", "--layer"])])
def test_vectors_that_do_not_depend_on_the_input_are_warned(tmp_path, capsys, conv_bias, words):
    flags = ["--backbone", "tiny_trunk", "--weights", str(_weights(tmp_path, conv_bias))]
    warned = _extract(tmp_path, capsys, *flags)
    assert len(warned) == 1 and all(w in warned[0] for w in words), warned
    assert _extract(tmp_path, capsys, *flags) == warned  # a cache hit says it again


def test_vanishing_vectors_of_random_weights_at_32_px_are_warned(tmp_path, capsys):
    warned = _extract(tmp_path, capsys, "--backbone", "mobilenet", "--weights", "none")
    assert len(warned) == 1 and "nearly zero" in warned[0], warned
    assert "--weights none" in warned[0] and "--input-size" in warned[0], warned


def test_ordinary_vectors_are_not_warned(tmp_path, capsys):
    flags = ["--backbone", "tiny_trunk", "--weights", str(_weights(tmp_path))]
    assert _extract(tmp_path, capsys, *flags) == []
