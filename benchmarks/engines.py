"""Stage one on every engine: extract from files vs the bare forward pass, and GFLOP/s vs peak.

Each engine runs in its own process (Keras fixes its backend at import); all numbers of a row
come from that one process, on the same images, so ratios are side by side. `openvino` is the
native engine (the model converted to OpenVINO IR); `ENGINE:PRECISION` (e.g. `openvino:int8`)
overrides --precision for one engine.

Usage:
    python benchmarks/engines.py                                   # CPU engines and precisions
    python benchmarks/engines.py --engines jax --backbones resnet50 --batch-size 256 \
        --precision bfloat16 --images 4096 --data DIR              # a GPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def _image_folder(n: int, workdir: Path, source: Path | None) -> Path:
    import numpy as np
    from PIL import Image

    root = workdir / "images"
    shutil.rmtree(root, ignore_errors=True)  # the previous backbone's folder
    files = sorted(source.resolve().rglob("*.jpg")) if source else []
    for i in range(n if files else 0):  # real photos, repeated under new names when n is larger
        f = files[i % len(files)]
        (root / f.parent.name).mkdir(parents=True, exist_ok=True)
        os.symlink(f, root / f.parent.name / f"{i // len(files)}_{f.name}")
    rng = np.random.default_rng(0)
    for i in range(n if not files else 0):  # no photos given: random 320x240 JPEGs
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(
            root / f"c{i % 2}" / f"r{i}.jpg", quality=90)
    return root


def _clip_folder(n: int, workdir: Path) -> Path:
    import numpy as np
    from PIL import Image

    root = workdir / "clips"
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, 768, dtype=np.uint8).tobytes()
    for i in range(n):  # 16-frame GIFs: one clip each (palette frames: no slow quantising)
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        frames = []
        for _ in range(16):
            frame = Image.fromarray(rng.integers(0, 64, (128, 171), dtype=np.uint8), "P")
            frame.putpalette(palette)
            frames.append(frame)
        frames[0].save(root / f"c{i % 2}" / f"{i}.gif", save_all=True, append_images=frames[1:])
    return root


def measure(args) -> dict:
    """Runs inside one engine's process: extract rate and bare forward rate per backbone."""
    import keras
    import numpy as np

    from flops import model_flops
    from pipeline.extract.backbones import get_backbone
    from pipeline.extract.backbones.feature_model import build_feature_model
    from pipeline.extract.run import run_extraction
    from pipeline.extract.sources import create_reader, discover

    engine, precision = args.engine_now, args.precision_now
    native = engine == "openvino"
    rows = []
    workdir = Path(tempfile.mkdtemp(prefix="bench-engines-"))
    try:
        for name in args.backbones.split(","):
            spec = get_backbone(name)
            clip = spec.kind == "clip"
            n = args.clips if clip else args.images
            data = _clip_folder(n, workdir) if clip else \
                _image_folder(n, workdir, Path(args.data) if args.data else None)
            layer = "fc6" if clip else "pooled"
            size = None if clip else args.input_size
            opts = {"data": str(data), "backbone": name, "weights": "none", "layer": layer,
                    "pooling": "avg", "input_size": size, "resize": "squash",
                    "batch_size": args.batch_size, "dtype": "float32",
                    "precision": precision, "cache_dir": str(workdir / "cache"),
                    "workers": args.workers, "decode": args.decode, "engine": engine,
                    "jpeg_draft": True}
            label = engine if precision == "float32" else f"{engine} {precision}"
            row = {"backbone": name, "engine": label, "n": n, "unit": "clip" if clip else "img"}
            try:
                # The model extract builds: uint8 pixels in, preprocessing on the device.
                model = build_feature_model(spec, "none", layer, "avg", size,
                                            "float32" if native else precision, raw_input=True)
                row["gflop_per_sample"] = model_flops(model) / 1e9
                reader = create_reader(spec, spec.input_shape_for(size), opts)
                samples = discover(data, reader.extensions, leaf_dirs=reader.leaf_dirs).samples
                one = np.concatenate([c for c in reader.read(samples[0].path)])[:1]
                x = np.repeat(one, args.batch_size, axis=0)
                t = time.perf_counter()
                result = run_extraction(opts, progress=False, echo=lambda *_: None)
                row["extract_whole"] = n / (time.perf_counter() - t)
                row["extract"] = result.steady_rate
                if native:  # the bare forward pass of the IR extract just converted
                    from pipeline.extract.openvino_engine import NativeModel

                    (xml,) = (workdir / "cache" / "openvino").glob("*.xml")
                    model = NativeModel(xml, args.batch_size, precision)
                model.predict_on_batch(x)  # compile
                reps = max(2, n // args.batch_size)
                t = time.perf_counter()
                for _ in range(reps):
                    np.asarray(model.predict_on_batch(x))
                row["forward"] = reps * args.batch_size / (time.perf_counter() - t)
                del model
            except Exception as exc:  # an engine that cannot run a model is a row, not a crash
                row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
            rows.append(row)
            shutil.rmtree(workdir / "cache", ignore_errors=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {"rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engines", default="tensorflow,openvino,openvino:int8,jax")
    parser.add_argument("--backbones", default="resnet50,vgg19,mobilenet,c3d")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--decode", default="auto", choices=("auto", "threads", "processes"))
    parser.add_argument("--data", default=None, help="folder of JPEGs (default: random JPEGs)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.engine_now, _, args.precision_now = args.child.partition(":")
        args.precision_now = args.precision_now or args.precision
        print("RESULT " + json.dumps(measure(args)), flush=True)
        return

    from flops import cpu_peak_gflops

    rows = []
    from pipeline.extract.engines import keras_backend_for

    for engine in args.engines.split(","):
        env = dict(os.environ, KERAS_BACKEND=keras_backend_for(engine.partition(":")[0]),
                   TF_CPP_MIN_LOG_LEVEL="3")
        cmd = [sys.executable, __file__, "--child", engine, *sys.argv[1:]]
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
        found = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
        if not found:
            rows.append({"engine": engine, "backbone": "*", "error": f"exit {proc.returncode}"})
            continue
        rows += json.loads(found[-1][7:])["rows"]
    peak, cpu = cpu_peak_gflops()
    gpu = _gpu_name()
    print(f"\nstage one, {args.precision}, batch {args.batch_size}, "
          f"{'GPU ' + gpu if gpu else 'CPU'}; CPU: {cpu}, peak {peak:.0f} GFLOP/s")
    head = f"{'backbone':<10}{'engine':<15}{'extract/s':>10}{'forward/s':>10}{'ratio':>7}" \
           f"{'GFLOP/s':>9}{'of CPU peak':>12}  note"
    print(head)
    print("-" * len(head))
    for r in rows:
        if "error" in r:
            print(f"{r.get('backbone', '*'):<10}{r['engine']:<15}{'':>10}{'':>10}{'':>7}{'':>9}"
                  f"{'':>12}  cannot run: {r['error']}")
            continue
        gflops = r["forward"] * r["gflop_per_sample"]
        share = "" if gpu else f"{gflops / peak:.0%}"
        print(f"{r['backbone']:<10}{r['engine']:<15}{r['extract']:>10.1f}{r['forward']:>10.1f}"
              f"{r['extract'] / r['forward']:>7.2f}{gflops:>9.0f}{share:>12}  "
              f"{r['n']} {r['unit']}s, {r['gflop_per_sample']:.1f} GFLOP each; whole command "
              f"incl. build {r['extract_whole']:.1f}/s")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


def _gpu_name() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout else ""
    except (OSError, subprocess.TimeoutExpired):
        return ""


if __name__ == "__main__":
    main()
