"""Still-image decoding with Pillow: any mode to 8-bit RGB, EXIF orientation, resize policy.

Runs in worker threads (Pillow releases the GIL while decoding and resizing).

JPEG draft decoding (`jpeg_draft`, on by default): a JPEG at least twice the input
size in both sides is decoded at 1/2, 1/4 or 1/8 scale inside libjpeg (the DCT-domain scaling of
Pillow's `Image.draft`), still at least the input size, then resized as usual. A 12-megapixel
photo decodes several times faster (benchmarks/decode.py); the pixels differ slightly from a
full decode, so the setting is part of the reader's settings and of the cache key.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from pipeline.errors import ConfigError, DecodeError
from pipeline.extract.sources.base import environment_problem, require_regular
from pipeline.extract.sources.converter_resize import ConverterResize, resolve

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
RESIZE_POLICIES = ("squash", "center_crop")

# A truncated file must fail loudly, not decode as a grey bottom half.
ImageFile.LOAD_TRUNCATED_IMAGES = False


def to_rgb(img: Image.Image) -> Image.Image:
    """Converts any Pillow mode (L, P, RGBA, CMYK, I;16, I, F, ...) to 8-bit RGB."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        # Transparent pixels become white, as image viewers show them.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def fit_to_size(img: Image.Image, size: tuple, resize: str) -> Image.Image:
    """Resizes to (height, width): `squash` ignores aspect ratio; `center_crop` keeps it."""
    height, width = size
    if resize == "center_crop":
        src_w, src_h = img.size
        scale = min(src_w / width, src_h / height)
        crop_w, crop_h = round(width * scale), round(height * scale)
        left, top = (src_w - crop_w) // 2, (src_h - crop_h) // 2
        img = img.crop((left, top, left + crop_w, top + crop_h))
    elif resize != "squash":
        raise ValueError(f"resize must be one of {RESIZE_POLICIES}; received: {resize!r}")
    if img.size != (width, height):
        img = img.resize((width, height), Image.Resampling.BILINEAR)
    return img


def fit_array(img: Image.Image, size: tuple, resize) -> np.ndarray:
    """An RGB image at (height, width) as uint8: by a `--resize` policy, or by a backbone's
    own resize (a `ConverterResize`, called on the photo's pixels)."""
    if callable(resize):
        return resize(np.asarray(img, dtype=np.uint8))
    return np.asarray(fit_to_size(img, size, resize), dtype=np.uint8)


def load_image(path, size: tuple, resize="squash", jpeg_draft: bool = False) -> np.ndarray:
    """Decodes one file to a uint8 array of shape (height, width, 3).

    `resize`: a `--resize` policy, or a backbone's own resize (see `fit_array`).

    `jpeg_draft`: decode large JPEGs at a reduced scale in the DCT domain (see the module doc).

    Raises:
        DecodeError: the file is empty, truncated, not an image, or unreadable.
        ResourceError: the machine failed (permission, open files, memory, a vanished file).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.seek(0)  # first frame of GIF/TIFF/WebP animations
                if jpeg_draft and img.format == "JPEG":
                    # Square request: both sides stay >= the input whatever EXIF rotation does.
                    side = max(size)
                    img.draft(img.mode, (side, side))
                if img.format == "PNG":  # before load(): a short file never fills memory
                    _refuse_short_png(path, img.size)
                img.load()
                img = ImageOps.exif_transpose(img)
                return fit_array(to_rgb(img), size, resize)
    except MemoryError as exc:
        raise environment_problem(exc, path) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError,
            Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        problem = environment_problem(exc, path)
        if problem is not None:
            raise problem from None
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, UnidentifiedImageError):
            text = "not a recognised image file"
        try:
            if path.stat().st_size == 0:
                text = "empty file (0 bytes)"
        except (AttributeError, OSError):
            pass
        raise DecodeError(text) from None


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel


def _png_data_bytes(width: int, height: int, depth: int, colour: int, interlaced: bool) -> int:
    """How many bytes the image data of a PNG of this header inflates to (a filter byte per
    row; Adam7 interlacing stores seven smaller passes)."""
    bits = depth * _PNG_CHANNELS.get(colour, 4)
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
              (0, 1, 1, 2)] if interlaced else [(0, 0, 1, 1)]
    total = 0
    for x0, y0, dx, dy in passes:
        w, h = (width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy
        if w > 0 and h > 0:
            total += h * (1 + (w * bits + 7) // 8)
    return total


def _refuse_short_png(path, size: tuple) -> None:
    """Pillow takes a PNG whose compressed data ends early for a whole image (the missing rows
    stay black); its header says how much data there must be, so count it (streamed, never
    held whole)."""
    with open(path, "rb") as fh:
        fh.read(8)
        inflater, inflated, header = zlib.decompressobj(), 0, None
        while len(head := fh.read(8)) == 8:
            length, kind = struct.unpack(">I4s", head)
            if kind == b"IHDR":
                header = struct.unpack(">IIBBBBB", fh.read(13))
                fh.seek(length - 13 + 4, 1)
            elif kind == b"IDAT":
                left = length
                while left:
                    piece = fh.read(min(left, 1 << 20))
                    if not piece:
                        break
                    left -= len(piece)
                    inflated += _inflated_size(inflater, piece)
                fh.read(4)
            elif kind == b"IEND":
                break
            else:
                fh.seek(length + 4, 1)
    if header is None:
        return
    width, height, depth, colour, _, _, interlace = header
    expected = _png_data_bytes(width, height, depth, colour, bool(interlace))
    if inflated < expected:
        rows = height * inflated // max(expected, 1)
        raise DecodeError(f"image file is truncated: the header declares {width}x{height} but "
                          f"the data holds about {rows} row(s)")


def _inflated_size(inflater, piece: bytes) -> int:
    """Bytes `piece` inflates to, in bounded steps (a small piece may inflate to a lot)."""
    total = 0
    try:
        out = inflater.decompress(piece, 1 << 22)
        total += len(out)
        while inflater.unconsumed_tail:
            out = inflater.decompress(inflater.unconsumed_tail, 1 << 22)
            total += len(out)
    except zlib.error:
        pass  # Pillow decoded the image already; a damaged stream counts what it gave
    return total


class ImageReader:
    """Reads one still image per sample: `read` yields one chunk of shape (1, H, W, 3), uint8.

    Reader contract (images and clips alike): `read(path)` is an iterator of uint8 chunks of
    shape (k, *input_shape); `settings()` lists what changes the vectors; `extensions` and
    `leaf_dirs` tell discovery which files (or frame folders) are samples.
    """

    kind = "image"  # the backbones it feeds (BackboneSpec.kind)
    extensions = IMAGE_EXTENSIONS
    leaf_dirs = False
    unit = "images"  # what one model input is called (summary, progress bar)
    rows_per_file = 1  # stored rows per file
    mean_rows = False  # one model input per file: its row is that output, nothing averaged
    process_decode = "batches"  # decode processes write images straight into batches
    auto_processes = True  # `--decode auto` may use processes (each file is small)
    needs_recipe = False  # a backbone it feeds brings no ClipRecipe

    @staticmethod
    def check_settings(config) -> None:
        """A still image has one frame: `--frames` alone would read the first frame of each
        clip and reuse a store of first frames, so it is refused."""
        if getattr(config, "frames", None) is not None:
            raise ConfigError("--frames K takes K frames of each clip only together with "
                              "--temporal-pool mean|max|none (how the frames' vectors become "
                              "rows); add --temporal-pool, or leave out --frames to read each "
                              "GIF's first frame as a still image.")

    @classmethod
    def from_config(cls, spec, input_shape: tuple, config) -> "ImageReader":
        """The reader for `spec` with the extract settings `config` (an ExtractConfig)."""
        resize = resolve(getattr(spec, "image_resize", None), config.resize,
                         getattr(spec, "name", "this backbone"))
        return cls(input_shape, resize=resize, jpeg_draft=config.jpeg_draft)

    @staticmethod
    def claims(path) -> bool:
        """Whether `path` is one of this reader's samples (for a thumbnail of it)."""
        return Path(path).suffix.lower() in IMAGE_EXTENSIONS

    @staticmethod
    def thumbnail(path, size: int) -> Image.Image:
        """The picture as a person sees it (EXIF orientation applied), at most size x size."""
        with Image.open(path) as opened:
            img = ImageOps.exif_transpose(opened.convert("RGB"))
        img.thumbnail((size, size))
        return img

    @staticmethod
    def describe(prov: dict) -> str:
        """A store's image reader settings in words (for `info`)."""
        reader = prov.get("reader") or {}
        aspect = f", {reader['aspect']}" if reader.get("aspect") else ""
        return (f"images, resize {reader.get('resize', prov.get('resize', '?'))} "
                f"({reader.get('interpolation', 'bilinear')}{aspect})")

    def aggregation_settings(self) -> dict:
        """How a file's model outputs become its rows: one image, its one row (nothing keyed)."""
        return {}

    def aggregate(self, rows: np.ndarray) -> np.ndarray:
        """The stored rows of one file from its model outputs (one image: its one row)."""
        return rows

    def __init__(self, input_shape: tuple, resize="squash", jpeg_draft: bool = False):
        own = isinstance(resize, ConverterResize)
        if not own and resize not in RESIZE_POLICIES:
            raise ConfigError(f"resize must be one of {', '.join(RESIZE_POLICIES)}; "
                              f"received: {resize!r}")
        self.input_shape = tuple(input_shape)
        self.size = tuple(input_shape[:2])
        self.resize = resize
        # A backbone's own resize sees the photo as decoded in full, as its converter would.
        self.jpeg_draft = bool(jpeg_draft) and not own
        if own:  # the resize runs in Keras, which releases the GIL: threads, unless asked
            self.auto_processes = False

    def settings(self) -> dict:
        """What about reading changes the vectors (part of the cache key)."""
        resize = self.resize.settings() if isinstance(self.resize, ConverterResize) else \
            {"resize": self.resize, "interpolation": "bilinear"}
        settings = {"reader": "image", **resize, "alpha": "white", "exif_transpose": True}
        if self.jpeg_draft:  # absent when off: stores made before the option keep their key
            settings["jpeg_draft"] = "dct_scale_to_input"
        return settings

    def read(self, path):
        require_regular(path)
        yield load_image(path, self.size, self.resize, self.jpeg_draft)[None]
