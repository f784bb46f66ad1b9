"""Data sources behind one small interface.

`discover(data, reader.extensions)` lists the samples; a reader turns one sample's path into a
uint8 array of shape (k, *input_shape): k = 1 for a still image, k clips for a video. Heavy
decoders (video) are imported only by the reader that needs them.
"""

from __future__ import annotations

from pipeline.extract.sources.base import ClipRecipe, Dataset, Sample
from pipeline.extract.sources.discover import discover


def create_reader(spec, input_shape: tuple, options: dict):
    """Returns the reader for a backbone spec (its `kind`, `image` or `clip`, and for clips its
    `clip_recipe`) configured from `options`. The spec is read, never imported, here."""
    kind = spec.kind
    if kind == "image":
        from pipeline.extract.sources.images import ImageReader

        # A library call or an older run's options without the key decode in full, as before.
        return ImageReader(input_shape, resize=options.get("resize") or "squash",
                           jpeg_draft=bool(options.get("jpeg_draft", False)))
    if kind == "clip":
        from pipeline.extract.sources.clips import ClipReader

        return ClipReader(input_shape, options, spec.clip_recipe)
    raise ValueError(f"unknown source kind {kind!r}")


__all__ = ["ClipRecipe", "Dataset", "Sample", "discover", "create_reader"]
