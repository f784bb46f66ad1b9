"""C3D (Tran et al. 2015, Sports-1M) as a registry entry: the graph in Keras 3, channels-last.

Layer names and output shapes are those of the Keras 2 port that seed 000 loads by name
(`C3D_Sport1M_weights_keras_2.2.4.h5`), so that file and any Keras 3 weights file saved from
this graph load into it layer by layer (`pipeline.extract.backbones.weights` does the loading and names
the layer and both shapes when one does not fit).

Usage:
    python run_pipeline.py extract --data gifs/ --backbone c3d \
        --weights C3D_Sport1M_weights_keras_2.2.4.h5 --layer fc6
"""

from __future__ import annotations

import numpy as np

from pipeline.extract.backbones import register_backbone
from pipeline.extract.backbones.spec import BackboneSpec
from pipeline.extract.sources.base import ClipRecipe
from pipeline.extract.sources import resize as frame_resize
from pipeline.errors import ConfigError

FRAMES, CROP = 16, 112
RESIZE = (128, 171)  # (height, width) every frame is resized to before the centre crop
SPORTS1M_CLASSES = 487
# Per-channel averages (B, G, R) of the Sports-1M training mean cube that C3D was trained with
# (sport1m_train16_128_mean): what is subtracted when no mean cube file is given.
SPORTS1M_BGR_MEAN = np.array([90.25, 97.66, 101.41], dtype=np.float32)

# (name, filters) of each conv layer, and which pooling layer follows it.
_CONVS = (("conv1", 64), ("conv2", 128), ("conv3a", 256), ("conv3b", 256), ("conv4a", 512),
          ("conv4b", 512), ("conv5a", 512), ("conv5b", 512))
_POOL_AFTER = {"conv1": ("pool1", (1, 2, 2)), "conv2": ("pool2", (2, 2, 2)),
               "conv3b": ("pool3", (2, 2, 2)), "conv4b": ("pool4", (2, 2, 2))}


def build_c3d(input_shape: tuple = (FRAMES, CROP, CROP, 3), include_top: bool = False,
              classes: int = SPORTS1M_CLASSES):
    """Builds C3D with random weights.

    Args:
        input_shape: (frames, height, width, 3); the published weights need (16, 112, 112, 3).
        include_top: add `fc8`, the Sports-1M classifier (softmax over `classes`).
        classes: units of `fc8`.

    Returns:
        A functional `keras.Model` named `c3d` whose last layer is `dropout_2` (after `fc7`)
        without the top, or `fc8` with it.
    """
    import keras
    from keras import layers

    inputs = keras.Input(shape=tuple(input_shape), name="clip")
    x = inputs
    for name, filters in _CONVS:
        x = layers.Conv3D(filters, 3, padding="same", activation="relu", name=name)(x)
        if name in _POOL_AFTER:
            pool_name, size = _POOL_AFTER[name]
            x = layers.MaxPooling3D(pool_size=size, strides=size, name=pool_name)(x)
    # Caffe pools with ceil rounding (7x7 -> 4x4); one row and column of zeros at the bottom and
    # right does the same on ReLU outputs, giving the 8192 features of pool5 at 112x112.
    x = layers.ZeroPadding3D(padding=((0, 0), (0, 1), (0, 1)), name="zeropad5")(x)
    x = layers.MaxPooling3D(pool_size=2, strides=2, padding="valid", name="pool5")(x)
    x = layers.Flatten(name="flatten_1")(x)
    x = layers.Dense(4096, activation="relu", name="fc6")(x)
    x = layers.Dropout(0.5, name="dropout_1")(x)
    x = layers.Dense(4096, activation="relu", name="fc7")(x)
    x = layers.Dropout(0.5, name="dropout_2")(x)
    if include_top:
        x = layers.Dense(classes, activation="softmax", name="fc8")(x)
    return keras.Model(inputs, x, name="c3d")


def preprocess_c3d(clips, mean=None):
    """The Sports-1M input recipe on RGB clips already resized and cropped by the reader.

    Args:
        clips: float array (..., 3) of RGB values in [0, 255].
        mean: BGR mean broadcastable to `clips` (a cropped mean cube of shape (16, H, W, 3));
            None subtracts the per-channel Sports-1M means.

    Returns:
        float32 array: BGR channels minus the mean, as Caffe's C3D saw its input.
    """
    mean = np.asarray(SPORTS1M_BGR_MEAN if mean is None else mean, dtype=np.float32)
    if isinstance(clips, np.ndarray):
        return np.asarray(clips, dtype=np.float32)[..., ::-1] - mean
    import keras  # a symbolic tensor: the model applies the recipe to uint8 pixels itself

    return keras.ops.flip(keras.ops.cast(clips, "float32"), axis=-1) - mean


def load_mean_cube(path: str, input_shape: tuple) -> np.ndarray:
    """Reads a Sports-1M mean `.npy` and crops it like the frames.

    Accepts the Caffe layout (3, 16, 128, 171), channels-last (16, 128, 171, 3), either with a
    leading axis of 1, a cube already of the input's size, or a per-channel (3,) BGR mean.

    Args:
        path: the `.npy` file.
        input_shape: the clip input shape (frames, size, size, 3).

    Returns:
        float32 BGR mean of shape (frames, size, size, 3) or (3,).

    Raises:
        ConfigError: the file is unreadable or its shape fits neither layout.
    """
    try:
        mean = np.load(path, allow_pickle=False).astype(np.float32)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"mean file {path} is not a readable .npy array ({exc}); pass the "
                          "Sports-1M mean cube saved with numpy.save, or leave out --mean-file."
                          ) from None
    if mean.shape == (3,):
        return mean
    given = mean.shape
    while mean.ndim > 4 and mean.shape[0] == 1:
        mean = mean[0]
    frames, size = int(input_shape[0]), int(input_shape[1])
    if mean.ndim == 4 and mean.shape[0] == 3 and mean.shape[-1] != 3:
        mean = np.moveaxis(mean, 0, -1)  # Caffe's channels-first cube
    resized = resize_shape(size)
    if mean.ndim == 4 and mean.shape[0] == frames and mean.shape[-1] == 3:
        if mean.shape[1:3] == resized:
            top, left = crop_offsets(size)
            return np.ascontiguousarray(mean[:, top:top + size, left:left + size])
        if mean.shape[1:3] == (size, size):
            return mean
    raise ConfigError(
        f"mean file {path} has shape {given}; expected a "
        f"mean cube of {frames}x{resized[0]}x{resized[1]} or {frames}x{size}x{size} with 3 "
        f"channels (channels first or last) or 3 per-channel values, for --input-size {size}.")


def resize_shape(size: int) -> tuple:
    """(height, width) frames are resized to before a centre crop of `size`: 128x171 at 112."""
    return round(RESIZE[0] * size / CROP), round(RESIZE[1] * size / CROP)


def crop_offsets(size: int) -> tuple:
    """(top, left) of the crop: (8, 30) at 112, the Keras port's frame[8:120, 30:142].

    The odd margin of 171 - 112 = 59 columns puts the extra column on the left (30 | 29), as
    the port did; rows split evenly (8 | 8).
    """
    height, width = resize_shape(size)
    return (height - size) // 2, (width - size + 1) // 2


def _build_trunk(weights, input_shape):
    # Files are loaded by pipeline.extract.backbones.weights; there is no Sports-1M download.
    if weights not in (None, "none"):
        raise ValueError("C3D has no downloadable weights; pass the weights file with --weights")
    return build_c3d(tuple(input_shape), include_top=False)


register_backbone(BackboneSpec(
    name="c3d",
    kind="clip",
    build=_build_trunk,
    preprocess=preprocess_c3d,
    preprocess_name="c3d: RGB->BGR, minus the Sports-1M mean (reader settings name which)",
    input_shape=(FRAMES, CROP, CROP, 3),
    layer_aliases={"pool5": "flatten_1"},
    pooled_from="fc6",
    clip_recipe=ClipRecipe(
        resize_shape=resize_shape,
        crop_offsets=crop_offsets,
        # The Keras port's cv2.resize(frame, (171, 128)): bilinear without antialiasing.
        resize=frame_resize.resize_bilinear,
        resize_name=frame_resize.NAME,
        mean_name="sports1m_bgr_per_channel " + ",".join(map(str, SPORTS1M_BGR_MEAN)),
        load_mean=load_mean_cube,
        preprocess_with_mean=preprocess_c3d,
    ),
    notes="C3D (Sports-1M, Keras 2 port layer names): pool5 8192-d, fc6/fc7 4096-d after ReLU",
))
