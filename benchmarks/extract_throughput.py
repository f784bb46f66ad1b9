"""Stage-one throughput: `extract` from files vs the bare forward pass vs a seed-style loop.

All three run in one process on the same images and the same model, so the ratios are fair:
  extract      run_extraction() from JPEG files (decode threads overlap the forward pass)
  predict      model.predict_on_batch on the same images already decoded and preprocessed
  seed loop    decode one batch in the main thread, then predict it (what the seeds do)

Usage:
    python benchmarks/extract_throughput.py [--backbone mobilenet] [--images 256] [--input-size 224]
Uses ../shared/data/flowers5 when present, else writes random JPEGs of the same size.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

FLOWERS = Path(__file__).resolve().parents[2] / "shared" / "data" / "flowers5"


def _image_folder(n: int, workdir: Path) -> Path:
    """n real flower photos (symlinked) or, without ../shared, random 320x240 JPEGs."""
    from PIL import Image

    root = workdir / "images"
    if FLOWERS.is_dir():
        files = sorted(FLOWERS.rglob("*.jpg"))[::7][:n]
        for f in files:
            (root / f.parent.name).mkdir(parents=True, exist_ok=True)
            os.symlink(f, root / f.parent.name / f.name)
        return root
    rng = np.random.default_rng(0)
    for i in range(n):
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(
            root / f"c{i % 2}" / f"{i}.jpg", quality=90)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="mobilenet")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    from pipeline.extract.backbones import get_backbone
    from pipeline.extract.backbones.feature_model import build_feature_model
    from pipeline.extract.run import run_extraction
    from pipeline.extract.sources import create_reader, discover

    workdir = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    try:
        data = _image_folder(args.images, workdir)
        spec = get_backbone(args.backbone)
        shape = spec.input_shape_for(args.input_size)
        reader = create_reader(spec, shape, {})
        samples = discover(data, reader.extensions).samples
        n = len(samples)
        # The model extract builds: uint8 pixels in, preprocessing on the device.
        model = build_feature_model(spec, "none", "pooled", "avg", args.input_size,
                                    raw_input=True)
        bs = args.batch_size

        x = np.stack([next(iter(reader.read(s.path)))[0] for s in samples])  # uint8
        model.predict_on_batch(x[:bs])  # compile once, outside every timing
        t = time.perf_counter()
        for i in range(0, n, bs):
            model.predict_on_batch(x[i:i + bs])
        predict_rate = n / (time.perf_counter() - t)

        t = time.perf_counter()
        for i in range(0, n, bs):  # the seeds' way: decode a batch, then run it, in one thread
            batch = np.stack([next(iter(reader.read(s.path)))[0] for s in samples[i:i + bs]])
            model.predict_on_batch(batch)
        seed_rate = n / (time.perf_counter() - t)

        opts = {"data": str(data), "backbone": args.backbone, "weights": "none",
                "layer": "pooled", "pooling": "avg", "input_size": args.input_size,
                "resize": "squash", "batch_size": bs, "dtype": "float32",
                "cache_dir": str(workdir / "cache")}
        t = time.perf_counter()
        result = run_extraction(opts, progress=False, echo=lambda *_: None)
        extract_rate = n / (time.perf_counter() - t)
        steady_rate = result.steady_rate
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"\n{args.backbone} pooled, {n} images -> {args.input_size}px, batch {bs}, "
          f"{os.cpu_count()} CPU cores, keras backend {os.environ.get('KERAS_BACKEND', 'tensorflow')}")
    print(f"{'path':<44}{'images/s':>10}{'vs predict':>12}")
    for name, rate in (("extract, whole command incl. model build", extract_rate),
                       ("extract, after its first batch", steady_rate),
                       ("model.predict_on_batch, decoded in memory", predict_rate),
                       ("seed-style loop (decode, then predict)", seed_rate)):
        print(f"{name:<44}{rate:>10.1f}{rate / predict_rate:>12.2f}")


if __name__ == "__main__":
    main()
