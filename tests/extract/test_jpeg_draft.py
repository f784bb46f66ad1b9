"""JPEG draft decoding: DCT-scaled only when the file is much larger, and keyed apart."""

import numpy as np
from PIL import Image

from pipeline.extract.sources import create_reader
from pipeline.extract.sources.images import load_image


class _ImageSpec:
    kind = "image"


def _photo(path, size):
    """A smooth JPEG (gradients plus a little noise), like a photo rather than pure noise."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(0)
    arr = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (w + h)], -1)
    arr = np.clip(arr + rng.normal(0, 8, arr.shape), 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path, quality=92)
    return path


def test_large_jpeg_is_draft_decoded_close_to_but_not_equal_to_a_full_decode(tmp_path):
    path = _photo(tmp_path / "big.jpg", (1600, 1200))
    for resize in ("squash", "center_crop"):
        full = load_image(path, (64, 64), resize).astype(int)
        draft = load_image(path, (64, 64), resize, jpeg_draft=True).astype(int)
        assert draft.shape == full.shape == (64, 64, 3)
        assert 0 < np.abs(draft - full).mean() < 3  # slightly different pixels, same picture


def test_jpeg_less_than_twice_the_input_decodes_exactly_as_before(tmp_path):
    path = _photo(tmp_path / "small.jpg", (120, 100))
    np.testing.assert_array_equal(load_image(path, (64, 64), jpeg_draft=True),
                                  load_image(path, (64, 64)))


def test_draft_decoding_is_part_of_the_reader_settings():
    full = create_reader(_ImageSpec(), (64, 64, 3), {"resize": "squash", "jpeg_draft": False})
    draft = create_reader(_ImageSpec(), (64, 64, 3), {"resize": "squash", "jpeg_draft": True})
    assert "jpeg_draft" not in full.settings()  # stores made before the option keep their key
    assert draft.settings() != full.settings()


def test_the_library_default_of_jpeg_draft_is_the_cli_default():
    import run_pipeline
    from pipeline.extract.options import ExtractConfig

    args = run_pipeline.build_parser().parse_args(["extract", "--data", "x"])
    from_cli = create_reader(_ImageSpec(), (64, 64, 3), ExtractConfig.from_cli(args))
    from_library = create_reader(_ImageSpec(), (64, 64, 3), {"resize": "squash"})
    assert from_library.settings() == from_cli.settings()
    assert from_library.jpeg_draft is True
