"""Epoch time of a head on cached vectors vs the same head trained end to end through the backbone.

One run, same images, same head config, same batch size: (1) extract once, then time epochs of
the head on the cached vectors; (2) time epochs of input -> preprocessing -> frozen backbone
(inference mode) -> the same head, fed the already decoded images from memory (the end-to-end
side is spared decoding, so the ratio is, if anything, modest).

Usage:
    python benchmarks/head_epoch_time.py [--images 250] [--epochs 3] [--input-size 224]
Uses ../shared/data/flowers5 and the shared MobileNet weights when present, else generated
images and random weights (timings stay meaningful, accuracy does not).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"
FLOWERS = SHARED / "data" / "flowers5"
WEIGHTS = SHARED / "weights" / "mobilenet_imagenet_notop.weights.h5"


def pick_images(folder: Path, n: int, workdir: Path) -> Path:
    """Links the first n/K images of each class into workdir/<class>/ (same files, one run)."""
    target = workdir / f"{folder.name}-{n}"
    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    for c in classes:
        (target / c.name).mkdir(parents=True, exist_ok=True)
        for f in sorted(c.iterdir())[: n // len(classes)]:
            link = target / c.name / f.name
            if not link.exists():
                link.symlink_to(f.resolve())
    return target


def generated_images(n: int, workdir: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    target = workdir / f"generated-{n}"
    for i in range(n):
        folder = target / f"class{i % 5}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
    return target


class EpochTimer:
    def __new__(cls):
        import keras

        class Timer(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.times = []

            def on_epoch_begin(self, epoch, logs=None):
                self._t = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.times.append(time.perf_counter() - self._t)

        return Timer()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=250)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    import keras

    from pipeline.extract.backbones import get_backbone
    from pipeline.extract.backbones.feature_model import build_feature_model
    from pipeline.deploy.frozen_preprocessing import affine_preprocessing, apply_preprocessing
    from pipeline.extract.run import run_extraction
    from pipeline.store.feature_store import open_store
    from pipeline.fit.heads import HeadConfig, build_head
    from pipeline.extract.sources.images import load_image

    work = Path(tempfile.mkdtemp(prefix="head_epoch_time-"))
    real = FLOWERS.is_dir() and WEIGHTS.is_file()
    data = pick_images(FLOWERS, args.images, work) if real else generated_images(args.images, work)
    weights = str(WEIGHTS) if real else "none"
    opts = {"data": str(data), "backbone": "mobilenet", "weights": weights, "layer": "pooled",
            "pooling": "avg", "input_size": args.input_size, "resize": "squash",
            "dtype": "float32", "batch_size": args.batch_size, "cache_dir": str(work / "cache")}
    started = time.perf_counter()
    store_path = run_extraction(opts, progress=False, echo=lambda *_: None).path
    extract_s = time.perf_counter() - started

    config = HeadConfig(batch_size=args.batch_size, epochs=args.epochs)
    with open_store(store_path) as store:
        x, y = store.load()
        ids, names = store.column("ids"), store.class_names
    head = build_head(x.shape[1:], len(names), config)
    cached = EpochTimer()
    head.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, shuffle=True, verbose=0,
             callbacks=[cached])

    spec = get_backbone("mobilenet")
    shape = spec.input_shape_for(args.input_size)
    images = np.stack([load_image(data / i, shape[:2], "squash") for i in ids]).astype(np.float32)
    backbone = build_feature_model(spec, weights, "pooled", "avg", args.input_size)
    inputs = keras.Input(shape=shape)
    z = apply_preprocessing(inputs, affine_preprocessing(spec.preprocess, shape))
    end_head = build_head(x.shape[1:], len(names), config)  # same config, fresh weights
    model = keras.Model(inputs, end_head(backbone(z, training=False)))
    model.compile(optimizer=end_head.optimizer, loss=end_head.loss, metrics=["accuracy"])
    end_to_end = EpochTimer()
    model.fit(images, y, batch_size=args.batch_size, epochs=args.epochs, shuffle=True,
              verbose=0, callbacks=[end_to_end])

    # Epoch 1 includes tracing/compilation on both sides; the steady state is the later epochs.
    steady = lambda t: float(np.median(t[1:] if len(t) > 1 else t))  # noqa: E731
    c, e = steady(cached.times), steady(end_to_end.times)
    print(f"head epoch time, {len(ids)} images, MobileNet at {args.input_size}px, "
          f"{'shared ImageNet weights' if real else 'random weights, generated images'}, "
          f"head {list(config.hidden_units)}, batch {args.batch_size}, {os.cpu_count()} CPU cores")
    print(f"  {'':34}{'epoch 1':>10}{'later epochs (median)':>24}")
    print(f"  {'head on cached vectors':34}{cached.times[0]:>9.3f}s{c:>23.3f}s")
    print(f"  {'same head end to end (frozen)':34}{end_to_end.times[0]:>9.3f}s{e:>23.3f}s")
    print(f"  {'ratio end to end / cached':34}{end_to_end.times[0] / cached.times[0]:>9.0f}x"
          f"{e / c:>23.0f}x")
    print(f"  one-off extraction of the cache: {extract_s:.1f}s "
          f"(= {extract_s / e:.1f} end-to-end epochs)")


if __name__ == "__main__":
    main()
