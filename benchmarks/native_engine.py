"""Steady extract rates of Keras-TensorFlow vs the native OpenVINO engine (float32, int8).

All configurations run `extract` in this one process, in interleaved rounds (TF, OV float32,
OV int8, TF, ...), on the same files, so a busy machine slows them alike; the table gives each
one's median steady rate (inputs/s after the first batch, the figure extract's summary prints)
and the ratios the issue asks about. The converted and quantized IRs are made in round 0 and
reused afterwards (as a second extract would), and the stores are removed between rounds.

Usage:
    python benchmarks/native_engine.py [--backbone resnet50] [--images 96] [--rounds 3] \
        [--data ../shared/data/flowers5]

Each run appends its rows (one per engine and precision, with the ratios, cores, CPU flags and
the load average before and after) to benchmarks/results/native_engine.csv. Run it when nothing
else runs: the load columns say whether it was quiet.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

CONFIGS = (("tensorflow", "float32"), ("openvino", "float32"), ("openvino", "int8"))
RESULTS = ROOT / "benchmarks" / "results" / "native_engine.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calibration-size", type=int, default=300)
    default_data = ROOT.parent / "shared" / "data" / "flowers5"
    parser.add_argument("--data", default=str(default_data) if default_data.is_dir() else None)
    args = parser.parse_args()

    from engines import _image_folder
    from machine import append_rows, machine_fields

    machine = machine_fields()
    from pipeline.extract.run import run_extraction

    workdir = Path(tempfile.mkdtemp(prefix="bench-native-"))
    rates = {c: [] for c in CONFIGS}
    whole = {}
    try:
        data = _image_folder(args.images, workdir, Path(args.data) if args.data else None)
        for rnd in range(args.rounds):
            for engine, precision in CONFIGS:
                opts = {"data": str(data), "backbone": args.backbone, "weights": "none",
                        "layer": "pooled", "pooling": "avg", "input_size": 224,
                        "resize": "squash", "batch_size": args.batch_size, "dtype": "float32",
                        "cache_dir": str(workdir / "cache"), "engine": engine,
                        "precision": precision, "jpeg_draft": True,
                        "calibration_size": args.calibration_size,
                        "int8_min_cosine": 0.0}  # speed only: keep int8 whatever its accuracy
                result = run_extraction(opts, progress=False, echo=lambda *_: None)
                rates[(engine, precision)].append(result.steady_rate)
                if rnd == 0:
                    whole[(engine, precision)] = args.images / result.seconds
                result.path.unlink()
                print(f"round {rnd} {engine} {precision}: steady {result.steady_rate:.1f}/s",
                      flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    median = {c: statistics.median(r) for c, r in rates.items()}
    tf, ov32, ov8 = (median[c] for c in CONFIGS)
    print(f"\n{args.backbone}, {args.images} images, batch {args.batch_size}, 224 px, random "
          f"weights, {args.rounds} interleaved rounds; cores: {os.cpu_count()}, load "
          f"{os.getloadavg()[0]:.1f}")
    head = f"{'engine':<12}{'precision':<11}{'steady /s (median)':>20}{'rounds':>26}" \
           f"{'whole cmd, round 0':>20}"
    print(head)
    print("-" * len(head))
    for (engine, precision), values in rates.items():
        print(f"{engine:<12}{precision:<11}{median[(engine, precision)]:>20.1f}"
              f"{' '.join(f'{v:.1f}' for v in values):>26}{whole[(engine, precision)]:>20.1f}")
    print(f"\nopenvino float32 / tensorflow: {ov32 / tf:.2f}x (target >= 1.15)")
    print(f"openvino int8 / openvino float32: {ov8 / ov32:.2f}x (target >= 1.6)")
    print(f"openvino int8 / tensorflow: {ov8 / tf:.2f}x (target >= 2)")
    ratio = {("openvino", "float32"): ov32 / tf, ("openvino", "int8"): ov8 / tf,
             ("tensorflow", "float32"): 1.0}
    append_rows(RESULTS, [{"backbone": args.backbone, "images": args.images,
                           "batch_size": args.batch_size, "rounds": args.rounds,
                           "engine": engine, "precision": precision,
                           "steady_per_s_median": round(median[(engine, precision)], 2),
                           "steady_per_s_rounds": " ".join(
                               f"{v:.1f}" for v in rates[(engine, precision)]),
                           "whole_cmd_per_s_round0": round(whole[(engine, precision)], 2),
                           "vs_tensorflow": round(ratio[(engine, precision)], 3),
                           "int8_vs_openvino_float32": round(ov8 / ov32, 3)}
                          for engine, precision in CONFIGS], machine)


if __name__ == "__main__":
    main()
