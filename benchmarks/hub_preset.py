"""A KerasHub preset as backbone: extract's steady rate vs the bare forward pass, ViT-S/14-sized DINOv2.

The preset is made here with random weights at the size of `dinov2_with_registers_small`
(patch 14, 12 layers, width 384, 6 heads, MLP 1536, 4 register tokens, 224 px, about 22 M
parameters) and saved with `save_to_preset`, since pretrained weights cannot be downloaded on an
offline machine; speed does not depend on the weights' values. All paths run in one process on
the same photos:

  extract tensorflow   run_extraction(--engine tensorflow), images/s after its first batch
  extract openvino     run_extraction(--engine openvino), the same (conversion not counted)
  forward only         model.predict_on_batch on the same images already decoded, in memory

Usage:
    python benchmarks/hub_preset.py [--images 64] [--batch-size 16] [--layers 12]
Uses ../shared/data/flowers5 when present, else random JPEGs.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from extract_throughput import _image_folder  # noqa: E402
from machine import RESULTS, append_rows, machine_fields  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def make_preset(folder: Path, layers: int) -> int:
    """Saves a ViT-S/14-sized DINOv2 preset with random weights; returns its parameter count."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.DINOV2Backbone(
        patch_size=14, num_layers=layers, hidden_dim=384, num_heads=6, intermediate_dim=1536,
        num_register_tokens=4, image_shape=(224, 224, 3), position_embedding_shape=(518, 518, 3))
    backbone.save_to_preset(str(folder))
    keras_hub.layers.DINOV2ImageConverter(
        image_size=(224, 224), scale=[1 / (255 * s) for s in STD],
        offset=[-m / s for m, s in zip(MEAN, STD)], interpolation="bicubic",
        antialias=True).save_to_preset(str(folder))
    return int(backbone.count_params())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--layers", type=int, default=12)
    args = parser.parse_args()
    before = machine_fields()

    from pipeline.extract.backbones import get_backbone
    from pipeline.extract.backbones.feature_model import build_feature_model
    from pipeline.extract.run import run_extraction
    from pipeline.extract.sources import create_reader, discover

    workdir = Path(tempfile.mkdtemp(prefix="bench-hub-"))
    try:
        data = _image_folder(args.images, workdir)
        preset = workdir / "dinov2_vits14_random"
        params = make_preset(preset, args.layers)
        spec = get_backbone(str(preset))
        reader = create_reader(spec, spec.input_shape, {})
        samples = discover(data, reader.extensions).samples
        n, bs = len(samples), args.batch_size
        rates = {}
        for engine in ("tensorflow", "openvino"):
            opts = {"data": str(data), "backbone": str(preset), "layer": "pooled",
                    "batch_size": bs, "engine": engine, "cache_dir": str(workdir / engine)}
            t = time.perf_counter()
            result = run_extraction(opts, progress=False, echo=lambda *_: None)
            rates[f"extract {engine}"] = (result.steady_rate, n / (time.perf_counter() - t))
        model = build_feature_model(spec, "imagenet", "pooled", raw_input=True)
        x = np.stack([next(iter(reader.read(s.path)))[0] for s in samples])
        model.predict_on_batch(x[:bs])  # trace once, outside the timing
        t = time.perf_counter()
        for i in range(0, n - n % bs, bs):
            model.predict_on_batch(x[i:i + bs])
        forward = (n - n % bs) / (time.perf_counter() - t)
        rates["forward only"] = (forward, forward)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"\nDINOv2 ViT-S/14-sized preset, random weights, {params / 1e6:.1f} M parameters, "
          f"{args.layers} layers, {n} images -> 224 px, batch {bs}, {os.cpu_count()} cores")
    print(f"{'path':<22}{'steady img/s':>14}{'whole cmd img/s':>17}{'vs forward':>12}")
    rows = []
    for name, (steady, whole) in rates.items():
        print(f"{name:<22}{steady:>14.2f}{whole:>17.2f}{steady / forward:>12.2f}")
        rows.append({"backbone": "DINOv2 ViT-S/14-sized preset, random weights",
                     "params_m": round(params / 1e6, 1), "layers": args.layers, "images": n,
                     "batch_size": bs, "path": name, "steady_per_s": round(steady, 2),
                     "whole_cmd_per_s": round(whole, 2), "vs_forward": round(steady / forward, 2)})
    append_rows(RESULTS / "hub_preset.csv", rows, before)


if __name__ == "__main__":
    main()
