"""Data sources behind one small interface.

`discover(data, reader.extensions)` lists the samples; a reader turns one sample's path into a
uint8 array of shape (k, *input_shape): k = 1 for a still image, k clips for a video. Heavy
decoders (video) are imported only by the reader that needs them.
"""

from __future__ import annotations

from pipeline.sources.base import Dataset, Sample
from pipeline.sources.discover import discover


def create_reader(kind: str, input_shape: tuple, options: dict):
    """Returns the reader for a backbone kind (`image` or `clip`) configured from `options`."""
    if kind == "image":
        from pipeline.sources.images import ImageReader

        return ImageReader(input_shape, resize=options.get("resize") or "squash")
    if kind == "clip":
        from pipeline.sources.clips import ClipReader

        return ClipReader(input_shape, options)
    raise ValueError(f"unknown source kind {kind!r}")


__all__ = ["Dataset", "Sample", "discover", "create_reader"]
