"""JPEG decoding to the model's input: images/s per core for each decoder, and in threads.

Decoders (each ends in a 224x224 uint8 RGB array, squashed with Pillow's bilinear resize):
  pillow-full   Image.open + load: the full-size decode (the reader with --no-jpeg-draft)
  pillow-draft  Image.draft: libjpeg's DCT-domain 1/2-1/8 scaling (the reader's default)
  turbojpeg     PyTurboJPEG with the largest scaling factor that keeps >= 224 px
  simplejpeg    simplejpeg with min_width/min_height (DCT scaling) and fastdct off

Inputs: generated 12-megapixel JPEGs (4000x3000, smooth gradients plus noise, quality 90) and,
when ../shared is there, flowers5 (~320x240, little to scale). "1 thread" is images/s on one
core; "N threads" shows whether the decoder releases the GIL.

Usage:
    python benchmarks/decode.py [--images 24] [--flowers 400] [--threads 2]
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SIZE = (224, 224)


def _resize(arr: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(arr).resize(SIZE, Image.Resampling.BILINEAR))


def pillow_full(data: bytes) -> np.ndarray:
    from pipeline.extract.sources.images import load_image

    return load_image(io.BytesIO(data), SIZE, "squash", jpeg_draft=False)


def pillow_draft(data: bytes) -> np.ndarray:
    from pipeline.extract.sources.images import load_image

    return load_image(io.BytesIO(data), SIZE, "squash", jpeg_draft=True)


def _turbojpeg():
    from turbojpeg import TurboJPEG

    jpeg = TurboJPEG()

    def decode(data: bytes) -> np.ndarray:
        width, height, _, _ = jpeg.decode_header(data)
        factor = (1, 1)
        for num, den in sorted(jpeg.scaling_factors, key=lambda f: f[0] / f[1]):
            if width * num / den >= SIZE[0] and height * num / den >= SIZE[1]:
                factor = (num, den)
                break
        from turbojpeg import TJPF_RGB

        return _resize(jpeg.decode(data, pixel_format=TJPF_RGB, scaling_factor=factor))
    return decode


def simplejpeg_decode(data: bytes) -> np.ndarray:
    import simplejpeg

    return _resize(simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=False,
                                          min_width=SIZE[0], min_height=SIZE[1]))


def _decoders() -> dict:
    decoders = {"pillow-full": pillow_full, "pillow-draft": pillow_draft}
    try:
        decoders["turbojpeg"] = _turbojpeg()
    except Exception as exc:  # the Python package or libturbojpeg missing
        print(f"turbojpeg unavailable: {exc}")
    try:
        import simplejpeg  # noqa: F401

        decoders["simplejpeg"] = simplejpeg_decode
    except ImportError:
        print("simplejpeg unavailable")
    return decoders


def _rate(decode, blobs: list[bytes], threads: int, min_seconds: float = 2.0) -> float:
    done, start = 0, time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        while True:
            for _ in pool.map(decode, blobs):
                done += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                return done / elapsed


def _large_jpegs(n: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    h, w = 3000, 4000
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    blobs = []
    for i in range(n):
        base = np.stack([(xx + 40 * i) % 256, yy * 255 / h, (xx + yy) * 255 / (w + h)], -1)
        arr = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "JPEG", quality=90)
        blobs.append(buf.getvalue())
    return blobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=12, help="generated 12 MP JPEGs")
    parser.add_argument("--flowers", type=int, default=400, help="flowers5 files (0: skip)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    sets = {"12 MP (4000x3000)": _large_jpegs(args.images)}
    flowers = ROOT.parent / "shared" / "data" / "flowers5"
    if args.flowers and flowers.is_dir():
        files = sorted(flowers.rglob("*.jpg"))[:args.flowers]
        sets[f"flowers5 ({len(files)} files)"] = [f.read_bytes() for f in files]
    decoders = _decoders()
    print(f"\ndecode + squash to 224x224, images/s (files read from memory); {args.threads} "
          "threads vs 1")
    head = f"{'input':<22}{'decoder':<14}{'1 thread':>10}{f'{args.threads} threads':>11}" \
           f"{'x pillow-full':>15}"
    print(head)
    print("-" * len(head))
    for name, blobs in sets.items():
        base = None
        for dname, decode in decoders.items():
            one = _rate(decode, blobs, 1)
            many = _rate(decode, blobs, args.threads)
            base = base or one
            print(f"{name:<22}{dname:<14}{one:>10.1f}{many:>11.1f}{one / base:>15.2f}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        main()
