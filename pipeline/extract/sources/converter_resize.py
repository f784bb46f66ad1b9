"""A backbone's own resize: how a KerasHub preset's image converter brings a photo to its size.

A KerasHub image converter resizes with `keras.layers.Resizing` (crop to the aspect ratio, pad
to it, or squash; its interpolation and antialias). Run on a uint8 photo, that layer rounds the
resized values to uint8 again (half to even, saturated) before the scale and offset, so the
uint8 pixels it hands the model are exactly what `ConverterResize` gives here: the very same
layer, called on the decoded photo. The scale and offset then run inside the model, so the
stored vectors are KerasHub's `backbone(converter(photo))`.

A converter that pads to the aspect ratio cannot take uint8 images in Keras (its padding is
float only), so KerasHub's own result exists for float photos only, unrounded; here the same
bands are added to the uint8 photo, which the same layer then resizes and rounds. The pixels
are KerasHub's float ones rounded to uint8 (half a level at most), which the reader's uint8
contract (batches, exported models) requires.

The layer runs in Keras (TensorFlow releases the GIL), so decoding stays in threads under
`--decode auto`; `--decode processes` works too, each worker loading Keras once.

Usage:
    fit = ConverterResize((224, 224), crop_to_aspect_ratio=True, interpolation="bicubic")
    pixels = fit(rgb_uint8)  # (224, 224, 3) uint8
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import numpy as np

from pipeline.errors import ConfigError

_LOCK = threading.Lock()  # one layer per process, built once whatever thread asks first
# --resize values and the converter policy each one names.
_AGREES = {"squash": "squash", "center_crop": "crop_to_aspect_ratio"}


@dataclass(frozen=True)
class ConverterResize:
    """The resize of one image converter, as data (picklable for decode processes)."""

    size: tuple
    crop_to_aspect_ratio: bool = True
    pad_to_aspect_ratio: bool = False
    interpolation: str = "bilinear"
    antialias: bool = False

    @classmethod
    def from_values(cls, values: dict) -> "ConverterResize":
        """From a preset's converter record (`image_size`, `crop_to_aspect_ratio`, ...)."""
        return cls(tuple(int(s) for s in values["image_size"]),
                   bool(values["crop_to_aspect_ratio"]), bool(values["pad_to_aspect_ratio"]),
                   str(values["interpolation"]), bool(values["antialias"]))

    @property
    def policy(self) -> str:
        if self.crop_to_aspect_ratio:
            return "crop_to_aspect_ratio"
        return "pad_to_aspect_ratio" if self.pad_to_aspect_ratio else "squash"

    def settings(self) -> dict:
        """What the reader records (the cache key, `info`, an export's model.json)."""
        return {"resize": "image_converter", "aspect": self.policy,
                "interpolation": self.interpolation, "antialias": self.antialias,
                "rounding": "uint8, half to even (keras Resizing on uint8)"}

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (height, width, 3) uint8, as the converter's Resizing layer."""
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        if self.pad_to_aspect_ratio:  # Keras pads float images only: pad here, resize there
            rgb = self._padded(rgb)
        return np.asarray(_layer(self)(rgb), dtype=np.uint8)

    def _padded(self, rgb: np.ndarray) -> np.ndarray:
        """Black bands as Keras's resize(pad_to_aspect_ratio=True) adds them: the same
        float32 arithmetic, the same band on both sides."""
        height, width = rgb.shape[:2]
        target_h, target_w = self.size
        pad_h = max(height, int(np.float32(width * target_h) / np.float32(target_w)))
        pad_w = max(width, int(np.float32(height * target_w) / np.float32(target_h)))
        top = int(np.float32(pad_h - height) / np.float32(2))
        left = int(np.float32(pad_w - width) / np.float32(2))
        return np.pad(rgb, ((top, top), (left, left), (0, 0)))


@functools.lru_cache(maxsize=8)
def _cached_layer(fit: ConverterResize):
    import keras

    return keras.layers.Resizing(  # padding is done before (`ConverterResize._padded`)
        fit.size[0], fit.size[1], interpolation=fit.interpolation, antialias=fit.antialias,
        crop_to_aspect_ratio=fit.crop_to_aspect_ratio)


def _layer(fit: ConverterResize):
    with _LOCK:
        return _cached_layer(fit)


def resolve(image_resize, resize: str | None, backbone: str):
    """The resize a reader applies: the backbone's own (`image_resize`) or `--resize`.

    A `--resize` that names another policy than the backbone's own is refused: the vectors
    would no longer be the backbone's.
    """
    if image_resize is None:
        return resize or "squash"
    if resize is not None and _AGREES.get(resize) != image_resize.policy:
        raise ConfigError(
            f"--resize {resize}: {backbone} brings photos to its size as its image converter "
            f"does ({image_resize.policy.replace('_', ' ')}, {image_resize.interpolation}); "
            "leave out --resize")
    return image_resize
