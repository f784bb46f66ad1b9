"""Each export format beside predict: file size, export time, load time and images/s, one run.

A small fit-head run (MobileNet with the shared ImageNet weights when /work/shared or ../shared
has them, else random weights; `--images` photos of flowers5, or generated images) is exported
to every format; each artifact is then loaded in its own runtime and timed on the same uint8
batch. `predict` is timed on the same files (it decodes them too, so it is the end-to-end
figure a user sees; the artifacts' figures exclude decoding). All rows of one run share the
load before and after, recorded by machine.py.

    python benchmarks/export.py                   # 48 images at 128x128, 3 timed passes
    python benchmarks/export.py --images 96 --input-size 160
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import RESULTS, append_rows, machine_fields  # noqa: E402

SHARED = next((p for p in (ROOT.parent / "shared", Path("/work/shared")) if p.is_dir()), None)


def _data(root: Path, n: int) -> tuple[Path, str]:
    """`n` images in class folders: flowers5 photos when the shared data is there."""
    import shutil

    flowers = SHARED / "data" / "flowers5" if SHARED else None
    out = root / "photos"
    if flowers and flowers.is_dir():
        classes = sorted(p for p in flowers.iterdir() if p.is_dir())
        for k, folder in enumerate(classes):
            (out / folder.name).mkdir(parents=True)
            for f in sorted(folder.iterdir())[: max(2, n // len(classes))]:
                shutil.copy(f, out / folder.name / f.name)
        return out, "flowers5 photos"
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        folder = out / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return out, "generated images"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--passes", type=int, default=3, help="timed passes over the batch")
    parser.add_argument("--formats", default="keras,onnx,openvino,litert,saved_model")
    args = parser.parse_args(argv)
    machine = machine_fields()

    from pipeline.deploy.export import export_model
    from pipeline.deploy.formats import contract_path, get_format
    from pipeline.deploy.prediction import predict
    from pipeline.extract.run import run_extraction
    from pipeline.extract.sources.images import load_image
    from pipeline.fit.run import fit_head

    weights_file = SHARED / "weights" / "mobilenet_imagenet_notop.weights.h5" if SHARED else None
    weights = str(weights_file) if weights_file and weights_file.is_file() else "none"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data, what = _data(tmp, args.images)
        store = run_extraction({"data": str(data), "backbone": "mobilenet", "weights": weights,
                                "input_size": args.input_size, "cache_dir": str(tmp / "cache")},
                               progress=False, echo=lambda *_: None).path
        run = fit_head(store, {"epochs": 3, "progress": False}, out_dir=tmp / "runs",
                       echo=lambda *_: None)
        files = sorted(p for p in data.rglob("*") if p.is_file())
        x = np.stack([load_image(f, (args.input_size,) * 2, "squash") for f in files])
        start = time.perf_counter()
        for _ in range(args.passes):
            predict(run, data, {"cache_dir": str(tmp / f"p{_}"), "progress": False,
                                "out": str(tmp / f"p{_}.csv")}, echo=lambda *_: None)
        per_pass = (time.perf_counter() - start) / args.passes
        base = {"backbone": "mobilenet", "weights": "imagenet" if weights != "none" else "none",
                "input_size": args.input_size, "images": len(files), "data": what}
        rows.append({**base, "format": "predict (decode + extract + head)", "runtime": "pipeline",
                     "size_mb": "", "export_s": "", "load_s": "",
                     "images_per_s": round(len(files) / per_pass, 1), "max_abs_difference": ""})
        for name in args.formats.split(","):
            fmt = get_format(name)
            start = time.perf_counter()
            path = export_model(run, {"format": name, "out": str(tmp / "out" / name /
                                                                   fmt.file_name)},
                                echo=lambda *_: None)
            export_s = time.perf_counter() - start
            import json

            parity = json.loads(contract_path(path, name).read_text())["parity"]
            size = sum(f.stat().st_size for part in fmt.files(path)
                       for f in ([part] if part.is_file() else part.rglob("*")) if f.is_file())
            start = time.perf_counter()
            runner = fmt.load(path)
            runner(x[:1])  # the first call builds the runtime's kernels: part of loading
            load_s = time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(args.passes):
                runner(x)
            per_pass = (time.perf_counter() - start) / args.passes
            rows.append({**base, "format": name, "runtime": fmt.runtime,
                         "size_mb": round(size / 2**20, 2), "export_s": round(export_s, 1),
                         "load_s": round(load_s, 2),
                         "images_per_s": round(len(files) / per_pass, 1),
                         "max_abs_difference": f"{parity['max_abs_difference']:.1e}"})
    print(f"{'format':34} {'runtime':14} {'MB':>6} {'export s':>8} {'load s':>7} {'img/s':>7} "
          f"{'max diff':>8}")
    for r in rows:
        print(f"{r['format']:34} {r['runtime']:14} {r['size_mb']!s:>6} {r['export_s']!s:>8} "
              f"{r['load_s']!s:>7} {r['images_per_s']!s:>7} {r['max_abs_difference']:>8}")
    append_rows(RESULTS / "export.csv", rows, machine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
