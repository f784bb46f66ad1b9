"""Frame resizing without antialiasing, as OpenCV's `cv2.resize(..., INTER_LINEAR)` does it.

C3D's Keras port prepared its frames with `cv2.resize(frame, (171, 128))`: each output pixel is
interpolated from the 2x2 nearest source pixels, pixel centres aligned (src = (dst + 0.5) *
scale - 0.5, clamped to the edges). Pillow's and FFmpeg's bilinear filters widen with the
downscale factor (they antialias), which gives other pixels than the network was trained on.
"""

from __future__ import annotations

import numpy as np

NAME = "bilinear, 2x2 taps, no antialiasing (OpenCV INTER_LINEAR)"


def resize_bilinear(array: np.ndarray, size: tuple) -> np.ndarray:
    """Resizes an (H, W, C) uint8 frame to `size` = (height, width).

    Args:
        array: uint8 frame.
        size: (height, width) of the result.

    Returns:
        uint8 array of shape (height, width, C), rounded half up.
    """
    height, width = size
    if array.shape[:2] == (height, width):
        return array
    top, bottom, wy = _taps(array.shape[0], height)
    left, right, wx = _taps(array.shape[1], width)
    rows = array[top].astype(np.float32)
    rows += (array[bottom].astype(np.float32) - rows) * wy[:, None, None]
    out = rows[:, left]
    out += (rows[:, right] - out) * wx[None, :, None]
    return np.floor(out + 0.5).clip(0, 255).astype(np.uint8)


def _taps(n_in: int, n_out: int) -> tuple:
    """The two source indices and the weight of the second, for each output position."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0, n_in - 1)
    first = np.floor(src).astype(np.intp)
    second = np.minimum(first + 1, n_in - 1)
    return first, second, (src - first).astype(np.float32)


ANTIALIASED_NAME = "bilinear, antialiased (Pillow BILINEAR)"


def resize_bilinear_antialiased(array: np.ndarray, size: tuple) -> np.ndarray:
    """Resizes an (H, W, 3) uint8 frame to `size` = (height, width) with Pillow's bilinear
    filter, which widens with the downscale factor: a 1080p frame brought to a 256 short side
    keeps no aliasing."""
    from PIL import Image

    height, width = size
    if array.shape[:2] == (height, width):
        return array
    return np.asarray(Image.fromarray(array).resize((width, height), Image.Resampling.BILINEAR))
