"""Data sources behind one small interface.

`discover(data, reader.extensions)` lists the samples; a reader turns one sample's path into a
uint8 array of shape (k, *input_shape): k = 1 for a still image, k clips for a video. Heavy
decoders (video) are imported only by the reader that needs them.
"""

from __future__ import annotations

from pipeline.extract.sources.base import ClipRecipe, Dataset, Sample
from pipeline.extract.sources.discover import discover


# BackboneSpec.kind -> the reader class that feeds such backbones. A reader class has `kind`,
# `extensions`, `leaf_dirs`, `unit`, `rows_per_file`, `process_decode`, `auto_processes`,
# `from_config(spec, input_shape, config)`, `settings()`, `read(path)`, `aggregate(rows)`,
# `claims(path)` and `thumbnail(path, size)`; see images.ImageReader.
READERS: dict[str, type] = {}


def register_reader(reader_class: type, *, overwrite: bool = False) -> type:
    """Makes `reader_class` the reader of the backbones whose kind is `reader_class.kind`."""
    if reader_class.kind in READERS and not overwrite:
        raise ValueError(f"a reader for kind '{reader_class.kind}' is already registered")
    READERS[reader_class.kind] = reader_class
    return reader_class


def _load_builtin_readers() -> None:
    from pipeline.extract.sources.clips import ClipReader
    from pipeline.extract.sources.images import ImageReader

    for reader_class in (ClipReader, ImageReader):  # a GIF's thumbnail: the clip reader's
        READERS.setdefault(reader_class.kind, reader_class)


def reader_class_for(kind: str):
    """The reader class registered for a backbone kind, or None."""
    _load_builtin_readers()
    return READERS.get(kind)


def create_reader(spec, input_shape: tuple, config):
    """Returns the reader for a backbone spec (by its `kind`) configured from `config`: an
    `ExtractConfig`, or a mapping of some extract options (the rest take the CLI's defaults).
    The spec is read, never imported, here."""
    from pipeline.extract.options import ExtractConfig

    _load_builtin_readers()
    if spec.kind not in READERS:
        raise ValueError(f"no reader for source kind {spec.kind!r}; registered: "
                         f"{', '.join(sorted(READERS))} (see register_reader)")
    return READERS[spec.kind].from_config(spec, tuple(input_shape),
                                          ExtractConfig.from_mapping(config))


def thumbnail(path, size: int):
    """A PIL picture of one sample (a clip's first frame) by the reader that claims it."""
    _load_builtin_readers()
    for reader_class in READERS.values():
        if reader_class.claims(path):
            return reader_class.thumbnail(path, size)
    raise ValueError(f"no reader reads {path}")


__all__ = ["ClipRecipe", "Dataset", "Sample", "discover", "create_reader", "register_reader",
           "reader_class_for", "thumbnail", "READERS"]
