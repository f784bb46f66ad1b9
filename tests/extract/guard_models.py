"""Tiny backbones that a reduced precision cannot represent, for the guards' tests.

`tiny_depthwise_spread` (int8): its channels span six orders of magnitude (1e-3 to 1e3) and the next convolution undoes the
spread, so every channel matters to the vector. Int8 activations share one scale per tensor and
int8 weights one scale per output channel: the small channels round to zero in the activations,
the small weights in the kernels, and the vector loses most of its signal whether or not the
depthwise layer is kept in float32. A faithful guard must refuse it.

`tiny_offset_cancel` (bfloat16): its first convolution adds 1000 to every activation and the
next one takes it away again, so the signal lies in the last digits of numbers near 1000.
bfloat16 keeps 8 bits of mantissa (steps of 4 near 1000): the signal rounds away, which
float32 keeps. auto's bfloat16 guard must refuse it.
"""

import numpy as np

NAME = "tiny_depthwise_spread"
SIZE = 32
CHANNELS = 8


def _preprocess(x):
    return x / 127.5 - 1.0


def build_spread_trunk(weights, input_shape):
    import keras

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = keras.layers.Conv2D(CHANNELS, 3, padding="same", name="spread")(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="depthwise")(x)
    x = keras.layers.Conv2D(CHANNELS, 1, name="undo")(x)
    x = keras.layers.ReLU(name="relu")(x)
    model = keras.Model(inputs, x, name=NAME)
    rng = np.random.default_rng(0)  # fixed weights: the same model whatever --weights says
    scales = np.logspace(-3, 3, CHANNELS).astype(np.float32)
    spread = model.get_layer("spread")
    kernel = rng.normal(size=spread.kernel.shape).astype(np.float32) * scales
    spread.set_weights([kernel, np.zeros(CHANNELS, np.float32)])
    depthwise = model.get_layer("depthwise")
    depthwise.set_weights([rng.normal(size=depthwise.kernel.shape).astype(np.float32),
                           np.zeros(CHANNELS, np.float32)])
    undo = model.get_layer("undo")
    back = rng.normal(size=undo.kernel.shape).astype(np.float32) / scales[:, None]
    undo.set_weights([back, np.full(CHANNELS, 0.1, np.float32)])
    return model


def register_spread_backbone():
    from pipeline.extract.backbones import BackboneSpec, register_backbone

    register_backbone(BackboneSpec(
        name=NAME, build=build_spread_trunk, preprocess=_preprocess,
        preprocess_name="x / 127.5 - 1 (test)", input_shape=(SIZE, SIZE, 3),
        notes="test-only trunk that int8 cannot represent"), overwrite=True)
    return NAME


OFFSET_NAME = "tiny_offset_cancel"
OFFSET = 1000.0


def build_offset_trunk(weights, input_shape):
    import keras

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = keras.layers.Conv2D(CHANNELS, 3, padding="same", name="offset")(inputs)
    x = keras.layers.Conv2D(CHANNELS, 1, name="cancel")(x)
    x = keras.layers.ReLU(name="relu")(x)
    model = keras.Model(inputs, x, name=OFFSET_NAME)
    rng = np.random.default_rng(0)  # fixed weights: the same model whatever --weights says
    offset = model.get_layer("offset")
    offset.set_weights([rng.normal(size=offset.kernel.shape).astype(np.float32) * 0.1,
                        np.full(CHANNELS, OFFSET, np.float32)])
    cancel = model.get_layer("cancel")
    kernel = rng.normal(size=cancel.kernel.shape).astype(np.float32)
    cancel.set_weights([kernel, (0.1 - OFFSET * kernel.sum(axis=(0, 1, 2))).astype(np.float32)])
    return model


def register_offset_backbone():
    from pipeline.extract.backbones import BackboneSpec, register_backbone

    register_backbone(BackboneSpec(
        name=OFFSET_NAME, build=build_offset_trunk, preprocess=_preprocess,
        preprocess_name="x / 127.5 - 1 (test)", input_shape=(SIZE, SIZE, 3),
        notes="test-only trunk that bfloat16 cannot represent"), overwrite=True)
    return OFFSET_NAME
