"""Data sources behind one small interface.

`discover(data, reader.extensions)` lists the samples; a reader turns one sample's path into a
uint8 array of shape (k, *input_shape): k = 1 for a still image, k clips for a video. Heavy
decoders (video) are imported only by the reader that needs them.
"""

from __future__ import annotations

from pipeline.extract.sources.base import ClipRecipe, Dataset, Sample
from pipeline.extract.sources.discover import discover
from pipeline.extract.sources.clips import ClipReader
from pipeline.extract.sources.frame_reader import FrameReader
from pipeline.extract.sources.images import ImageReader
from pipeline.extract.options import ExtractConfig


# BackboneSpec.kind -> the reader class that feeds such backbones. A reader class has `kind`,
# `extensions`, `leaf_dirs`, `unit`, `rows_per_file`, `process_decode`, `auto_processes`,
# `from_config(spec, input_shape, config)`, optionally `check_settings(config)` (refuses
# settings it cannot follow), `settings()`, `read(path)`, `aggregate(rows)`,
# `claims(path)` and `thumbnail(path, size)`; see images.ImageReader.
READERS: dict[str, type] = {}
# BackboneSpec.kind -> reader classes that take over from READERS[kind] for some settings: a
# variant's `serves(config)` says when (FrameReader: an image backbone on clip frames, asked
# for by --temporal-pool). Its `name` is the "reader" entry of its settings().
VARIANTS: dict[str, list] = {}


def register_reader(reader_class: type, *, overwrite: bool = False) -> type:
    """Makes `reader_class` the reader of the backbones whose kind is `reader_class.kind`."""
    if reader_class.kind in READERS and not overwrite:
        raise ValueError(f"a reader for kind '{reader_class.kind}' is already registered")
    READERS[reader_class.kind] = reader_class
    return reader_class


def register_reader_variant(reader_class: type) -> type:
    """Lets `reader_class` read for backbones of kind `reader_class.kind` whenever its
    `serves(config)` is true for the extract settings."""
    variants = VARIANTS.setdefault(reader_class.kind, [])
    if reader_class not in variants:
        variants.append(reader_class)
    return reader_class


def _load_builtin_readers() -> None:
    for reader_class in (ClipReader, ImageReader):  # a GIF's thumbnail: the clip reader's
        READERS.setdefault(reader_class.kind, reader_class)
    register_reader_variant(FrameReader)


def reader_class_for(kind: str, config=None):
    """The reader class registered for a backbone kind, or None. With `config` (extract
    settings), the class those settings ask for: a variant that serves them (an image backbone
    reading clip frames with `--temporal-pool`), else the kind's own reader, which may refuse
    them (`check_settings`)."""
    _load_builtin_readers()
    reader_class = READERS.get(kind)
    if reader_class is None or config is None:
        return reader_class
    for variant in VARIANTS.get(kind, ()):
        if variant.serves(config):
            return variant
    check = getattr(reader_class, "check_settings", None)
    if check is not None:
        check(config)
    return reader_class


def reader_class_named(name: str):
    """The reader class whose settings() are named `name` (a store's "reader" entry), or None."""
    _load_builtin_readers()
    for variants in VARIANTS.values():
        for variant in variants:
            if variant.name == name:
                return variant
    return READERS.get(name)


def create_reader(spec, input_shape: tuple, config):
    """Returns the reader for a backbone spec (by its `kind`) configured from `config`: an
    `ExtractConfig`, or a mapping of some extract options (the rest take the CLI's defaults).
    The spec is read, never imported, here."""
    _load_builtin_readers()
    if spec.kind not in READERS:
        raise ValueError(f"no reader for source kind {spec.kind!r}; registered: "
                         f"{', '.join(sorted(READERS))} (see register_reader)")
    config = ExtractConfig.from_mapping(config)
    return reader_class_for(spec.kind, config).from_config(spec, tuple(input_shape), config)


def thumbnail(path, size: int):
    """A PIL picture of one sample (a clip's first frame) by the reader that claims it."""
    _load_builtin_readers()
    for reader_class in READERS.values():
        if reader_class.claims(path):
            return reader_class.thumbnail(path, size)
    raise ValueError(f"no reader reads {path}")


__all__ = ["ClipRecipe", "Dataset", "Sample", "discover", "create_reader", "register_reader",
           "register_reader_variant", "reader_class_for", "reader_class_named", "thumbnail",
           "READERS", "VARIANTS"]
