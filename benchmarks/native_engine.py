"""Steady extract rates of TensorFlow float32 and OpenVINO float32, default (auto), int8, with each one's share of the CPU's peak.

For each backbone, all configurations run `extract` in this one process, in interleaved rounds
(TF float32, OV float32, the default, OV int8, TF, ...), on the same files, so a busy machine
slows them alike; the table gives each one's median steady rate (inputs/s after the first
batch: the figure extract's summary prints) and the ratios. The default row is a plain
`extract` (`--engine auto --precision auto`): on a CPU with native bfloat16 it is OpenVINO in
bfloat16 after its guard, elsewhere float32; the row names what it resolved to and what its
guard cost. Converted and quantized IRs (and the guard's measurement) are made in round 0 and
reused afterwards, as a second extract would; the stores are removed between rounds.

Share of peak: steady images/s x FLOPs per image (benchmarks/flops.py: the conv and dense
layers of the Keras model, 2 per multiply-add) / (cores x clock from /proc/cpuinfo x the
ISA's FLOPs per cycle at that row's precision, flops.flops_per_cycle). A GEMM of 1024 x 1024
in float32 and bfloat16 on OpenVINO is timed too: its ratio checks the ISA's bf16/f32 figure.

Usage:
    python benchmarks/native_engine.py [--backbones resnet50,mobilenet,vgg19] [--images 96] \
        [--rounds 2] [--data ../shared/data/flowers5]

Each run appends its rows (one per backbone, engine and precision, with the machine, CPU
flags and the load before and after) to benchmarks/results/native_engine_precisions.csv.
The load columns say whether the cores were shared: compare rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

# (engine, precision) as passed to extract; ("auto", "auto") is a default extract.
CONFIGS = (("tensorflow", "float32"), ("openvino", "float32"), ("auto", "auto"),
           ("openvino", "int8"))
RESULTS = ROOT / "benchmarks" / "results" / "native_engine_precisions.csv"


def gemm_gflops(seconds: float = 3.0, n: int = 1024) -> dict:
    """GFLOP/s of one n x n x n MatMul on OpenVINO at f32 and bf16 (best of two timings)."""
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)
    x = ops.parameter([n, n], np.float32)
    model = ov.Model([ops.matmul(x, ops.constant(rng.normal(size=(n, n)).astype(np.float32)),
                                 False, False)], [x])
    data, cores = rng.normal(size=(n, n)).astype(np.float32), len(os.sched_getaffinity(0))
    rates = {}
    for hint, precision in (("f32", "float32"), ("bf16", "bfloat16")):
        request = ov.Core().compile_model(model, "CPU", {
            "INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": str(cores),
            "NUM_STREAMS": "1"}).create_infer_request()
        request.infer([data])
        best = 0.0
        for _ in range(2):
            start, runs = time.perf_counter(), 0
            while time.perf_counter() - start < seconds / 2:
                request.infer([data])
                runs += 1
            best = max(best, 2 * n ** 3 * runs / (time.perf_counter() - start) / 1e9)
        rates[precision] = best
    return rates


def gflop_per_image(backbone: str) -> float:
    from flops import model_flops
    from pipeline.extract.backbones import get_backbone
    from pipeline.extract.backbones.feature_model import build_feature_model

    return model_flops(build_feature_model(get_backbone(backbone), "none", "pooled", "avg",
                                           224)) / 1e9


def measure(backbone: str, args, data: Path, workdir: Path) -> list[dict]:
    from pipeline.extract.run import run_extraction
    from pipeline.store.feature_store import open_store

    rates = {c: [] for c in CONFIGS}
    whole, resolved = {}, {}
    for rnd in range(args.rounds):
        for engine, precision in CONFIGS:
            opts = {"data": str(data), "backbone": backbone, "weights": "none",
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
                with open_store(result.path) as store:
                    prov = store.provenance
                guard = (prov.get("precision_choice") or {}).get("bfloat16_guard") or {}
                resolved[(engine, precision)] = (prov["engine"], prov["precision"],
                                                 guard.get("seconds", ""))
            result.path.unlink()
            print(f"{backbone} round {rnd} {engine} {precision}: steady "
                  f"{result.steady_rate:.1f}/s", flush=True)
    from flops import cpu_peak_gflops

    gflop = gflop_per_image(backbone)
    tf = statistics.median(rates[("tensorflow", "float32")])
    ov32 = statistics.median(rates[("openvino", "float32")])
    rows = []
    for config, values in rates.items():
        ran_on, computed_in, guard_seconds = resolved[config]
        median = statistics.median(values)
        peak, basis = cpu_peak_gflops(computed_in)
        rows.append({"backbone": backbone, "images": args.images, "batch_size": args.batch_size,
                     "rounds": args.rounds, "asked": "default" if config == ("auto", "auto")
                     else f"{config[0]} {config[1]}", "engine": ran_on, "precision": computed_in,
                     "steady_per_s_median": round(median, 2),
                     "steady_per_s_rounds": " ".join(f"{v:.1f}" for v in values),
                     "whole_cmd_per_s_round0": round(whole[config], 2),
                     "guard_s": guard_seconds,
                     "vs_tensorflow_f32": round(median / tf, 3),
                     "vs_openvino_f32": round(median / ov32, 3),
                     "gflop_per_image": round(gflop, 3), "peak_gflops": round(peak, 1),
                     "share_of_peak": round(median * gflop / peak, 3), "peak_basis": basis})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbones", default="resnet50,mobilenet,vgg19")
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--calibration-size", type=int, default=300)
    default_data = ROOT.parent / "shared" / "data" / "flowers5"
    parser.add_argument("--data", default=str(default_data) if default_data.is_dir() else None)
    args = parser.parse_args()

    from engines import _image_folder
    from machine import append_rows, machine_fields

    machine = machine_fields()
    gemm = gemm_gflops()
    print(f"GEMM 1024^3 on OpenVINO: f32 {gemm['float32']:.0f}, bf16 {gemm['bfloat16']:.0f} "
          f"GFLOP/s ({gemm['bfloat16'] / gemm['float32']:.2f}x)", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-native-"))
    try:
        data = _image_folder(args.images, workdir, Path(args.data) if args.data else None)
        for backbone in args.backbones.split(","):  # each backbone's rows kept as it ends
            rows = measure(backbone, args, data, workdir)
            for row in rows:
                row.update(gemm_f32_gflops=round(gemm["float32"], 1),
                           gemm_bf16_gflops=round(gemm["bfloat16"], 1))
            _print_table(rows, args)
            append_rows(RESULTS, rows, machine)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _print_table(rows: list, args) -> None:
    print(f"\n{args.images} images, batch {args.batch_size}, 224 px, random weights, "
          f"{args.rounds} interleaved rounds; cores: {os.cpu_count()}, load "
          f"{os.getloadavg()[0]:.1f}")
    head = f"{'backbone':<10}{'asked':<20}{'ran':<20}{'steady /s':>10}{'vs TF':>7}" \
           f"{'vs OV f32':>10}{'of peak':>9}{'guard s':>9}"
    print(head + "\n" + "-" * len(head))
    for r in rows:
        print(f"{r['backbone']:<10}{r['asked']:<20}{r['engine'] + ' ' + r['precision']:<20}"
              f"{r['steady_per_s_median']:>10.1f}{r['vs_tensorflow_f32']:>7.2f}"
              f"{r['vs_openvino_f32']:>10.2f}{r['share_of_peak']:>9.1%}{r['guard_s']!s:>9}")
    print(f"peak: {rows[0]['peak_basis'] if rows else ''}", flush=True)


if __name__ == "__main__":
    main()
