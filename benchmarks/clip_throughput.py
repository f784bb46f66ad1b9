"""Clip extraction with C3D: clips/s of `extract` against the bare forward pass, and peak memory
as a video gets longer.

Throughput (one process, the same clips, the same model):
  extract   run_extraction() from MP4 files: decoding threads beside the forward pass
  predict   model.predict_on_batch on the same clips, decoded and preprocessed in memory
Memory: one subprocess per video length extracts one synthetic video (default 1280x720) and
reports its peak RSS and the tracemalloc peak; streaming keeps both flat as the video grows,
where holding the decoded video would grow by the last column.

Usage:
    python benchmarks/clip_throughput.py [--videos 8] [--frames 64] [--input-size 112]
        [--batch-size 8] [--lengths 64,256,1024] [--memory-size 1280x720]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def write_video(path: Path, frames: int, width: int, height: int, seed: int = 0) -> Path:
    """An H.264 MP4 of a smooth random texture sliding sideways (so frames differ)."""
    import av
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
    texture = np.asarray(Image.fromarray(small).resize((width * 2, height), Image.BILINEAR))
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for i in range(frames):
            shift = (i * 8) % width
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(
                texture[:, shift:shift + width]), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def _options(data: Path, cache: Path, args) -> dict:
    return {"data": str(data), "backbone": "c3d", "weights": "none", "layer": "fc6",
            "pooling": "avg", "input_size": args.input_size, "batch_size": args.batch_size,
            "dtype": "float32", "cache_dir": str(cache)}


def throughput(args, workdir: Path) -> None:
    from pipeline.extract.backbones import get_backbone
    from pipeline.extract.backbones.feature_model import build_feature_model
    from pipeline.extract.run import run_extraction
    from pipeline.extract.sources import create_reader

    data = workdir / "videos"
    paths = [write_video(data / f"c{i % 2}" / f"v{i}.mp4", args.frames, 320, 240, seed=i)
             for i in range(args.videos)]
    spec = get_backbone("c3d")
    shape = spec.input_shape_for(args.input_size)
    reader = create_reader(spec, shape, {})
    clips = np.concatenate([chunk for p in paths for chunk in reader.read(p)])
    x = np.asarray(spec.preprocess(clips.astype(np.float32)), dtype=np.float32)
    n, bs = len(x), args.batch_size

    started = time.perf_counter()
    model = build_feature_model(spec, "none", "fc6", "avg", args.input_size)
    build_s = time.perf_counter() - started
    batch = np.zeros((bs, *shape), np.float32)
    model.predict_on_batch(batch)  # compile once, outside every timing
    started = time.perf_counter()
    for i in range(0, n, bs):
        part = x[i:i + bs]
        batch[:len(part)] = part  # the same padded batch shape extract uses
        model.predict_on_batch(batch)
    predict_rate = n / (time.perf_counter() - started)
    del model

    started = time.perf_counter()
    run_extraction(_options(data, workdir / "cache", args), progress=False, echo=lambda *_: None)
    extract_s = time.perf_counter() - started

    print(f"\nc3d fc6, {args.videos} videos x {args.frames} frames (320x240 H.264) -> {n} clips "
          f"of {shape}, batch {bs}, {os.cpu_count()} CPU cores, keras backend "
          f"{os.environ.get('KERAS_BACKEND', 'tensorflow')}, {_device()}; "
          f"one model build takes {build_s:.1f}s")
    print(f"{'path':<50}{'clips/s':>10}{'vs predict':>12}")
    for name, rate in (("extract, whole command incl. model build", n / extract_s),
                       ("model.predict_on_batch, clips in memory", predict_rate)):
        print(f"{name:<50}{rate:>10.2f}{rate / predict_rate:>12.2f}")


def memory(args, workdir: Path) -> None:
    width, height = (int(v) for v in args.memory_size.split("x"))
    print(f"\npeak memory extracting one {width}x{height} H.264 video, one subprocess per length")
    print(f"{'frames':>8}{'clips':>7}{'peak RSS MB':>13}{'traced peak MB':>16}{'seconds':>9}"
          f"{'whole video decoded MB':>24}")
    for length in (int(v) for v in args.lengths.split(",")):
        data = workdir / f"long{length}"
        write_video(data / "x" / "long.mp4", length, width, height)
        child = subprocess.run(
            [sys.executable, __file__, "--child", str(data), "--input-size", str(args.input_size),
             "--batch-size", str(args.batch_size)],
            capture_output=True, text=True, check=True)
        got = json.loads(child.stdout.strip().splitlines()[-1])
        print(f"{length:>8}{got['clips']:>7}{got['peak_rss_mb']:>13.0f}{got['traced_peak_mb']:>16.1f}"
              f"{got['seconds']:>9.1f}{length * width * height * 3 / 2**20:>24.0f}")


def child(args) -> None:
    """One extraction of the one video under `args.child`; prints a JSON line of its memory."""
    import tracemalloc

    import keras  # noqa: F401  (imported before tracing starts: its import is not extraction)

    from pipeline.extract.run import run_extraction
    from pipeline.store.feature_store import open_store

    data = Path(args.child)
    tracemalloc.start()
    started = time.perf_counter()
    opts = _options(data, data / "cache", args)
    opts["aggregate"] = "per_clip"  # one row per clip: the clip count comes from the store
    path = run_extraction(opts, progress=False, echo=lambda *_: None).path
    seconds = time.perf_counter() - started
    traced_peak = tracemalloc.get_traced_memory()[1]
    with open_store(path) as store:
        clips = len(store)
    print(json.dumps({"clips": clips, "seconds": seconds, "traced_peak_mb": traced_peak / 2**20,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def _device() -> str:
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return f"{len(gpus)} GPU(s)" if gpus else "CPU only"
    return "see backend"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--frames", type=int, default=64, help="frames per throughput video")
    parser.add_argument("--input-size", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lengths", default="64,256,1024", help="frames of the memory videos")
    parser.add_argument("--memory-size", default="1280x720")
    parser.add_argument("--skip", choices=("throughput", "memory"), default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    workdir = Path(tempfile.mkdtemp(prefix="bench-clips-"))
    try:
        if args.skip != "throughput":
            throughput(args, workdir)
        if args.skip != "memory":
            memory(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
