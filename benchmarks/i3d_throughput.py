"""I3D on CPU: steady clips/s of `extract` beside the forward pass alone, in one run.

  extract   run_extraction() over H.264 MP4s (320x240): decoding threads, the short-side-256
            resize and centre crop, the forward pass, the store; its steady rate (clips/s after
            the first batch, from the run's summary)
  forward   model.predict_on_batch on the same clips, decoded and preprocessed in memory

Both use the TensorFlow engine and the same model (pooled, 64x224x224 clips by default). The
real Kinetics-400 checkpoint is used when ../shared has it (else random weights: the same
arithmetic, so the same speed; the row says which). One row goes to
benchmarks/results/i3d_throughput.csv with the machine's load before and after.

Usage:
    python benchmarks/i3d_throughput.py [--videos 4] [--video-frames 128] [--frames 64]
        [--input-size 224] [--batch-size 2]
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

from clip_throughput import write_video  # noqa: E402
from machine import append_rows, machine_fields  # noqa: E402

CHECKPOINT = Path(__file__).resolve().parents[2] / "shared" / "weights" / \
    "i3d_kinetics400_rgb.ckpt"
MAX_CLIPS = 64  # a size cap: 64 clips of 64x224x224 take minutes on a small machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--video-frames", type=int, default=128, help="frames per video")
    parser.add_argument("--frames", type=int, default=64, help="frames per clip")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=2)
    args = parser.parse_args()
    clips_per_video = max(1, args.video_frames // args.frames)
    if args.videos * clips_per_video > MAX_CLIPS:
        parser.error(f"at most {MAX_CLIPS} clips: lower --videos or --video-frames")
    before = machine_fields()
    workdir = Path(tempfile.mkdtemp(prefix="bench-i3d-"))
    try:
        row = measure(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\ni3d pooled, {row['clips']} clips of {row['clip_shape']}, batch {args.batch_size}, "
          f"{os.cpu_count()} CPU cores, weights {row['weights']}")
    print(f"{'path':<52}{'clips/s':>10}{'vs forward':>12}")
    for name, key in (("extract, steady (after the first batch)", "extract_steady_clips_s"),
                      ("extract, whole command incl. model build", "extract_whole_clips_s"),
                      ("model.predict_on_batch, clips in memory", "forward_clips_s")):
        print(f"{name:<52}{row[key]:>10.3f}{row[key] / row['forward_clips_s']:>12.2f}")
    append_rows(Path(__file__).resolve().parent / "results" / "i3d_throughput.csv", [row], before)


def measure(args, workdir: Path) -> dict:
    from pipeline.extract.backbones import get_backbone
    from pipeline.extract.backbones.feature_model import build_feature_model
    from pipeline.extract.run import run_extraction
    from pipeline.extract.sources import create_reader

    weights = str(CHECKPOINT) if CHECKPOINT.is_file() else "none"
    data = workdir / "videos"
    paths = [write_video(data / f"c{i % 2}" / f"v{i}.mp4", args.video_frames, 320, 240, seed=i)
             for i in range(args.videos)]
    opts = {"data": str(data), "backbone": "i3d", "weights": weights, "layer": "pooled",
            "input_size": args.input_size, "frames": args.frames, "batch_size": args.batch_size,
            "engine": "tensorflow", "dtype": "float32", "cache_dir": str(workdir / "cache")}
    spec = get_backbone("i3d")
    shape = spec.input_shape_for(args.input_size, args.frames)
    reader = create_reader(spec, shape, opts)
    clips = np.concatenate([chunk for p in paths for chunk in reader.read(p)])
    x = spec.preprocess(clips)
    n, bs = len(x), args.batch_size

    model = build_feature_model(spec, weights, "pooled", "avg", args.input_size,
                                frames=args.frames)
    batch = np.zeros((bs, *shape), np.float32)
    model.predict_on_batch(batch)  # compile once, outside the timing
    started = time.perf_counter()
    for i in range(0, n, bs):
        part = x[i:i + bs]
        batch[:len(part)] = part  # the padded batch shape extract uses
        model.predict_on_batch(batch)
    forward = n / (time.perf_counter() - started)
    del model

    started = time.perf_counter()
    result = run_extraction(opts, progress=False, echo=lambda *_: None)
    whole = result.n_inputs / (time.perf_counter() - started)
    return {"backbone": "i3d", "layer": "pooled", "weights": "kinetics400" if weights != "none"
            else "none", "clip_shape": "x".join(map(str, shape)), "clips": n,
            "batch_size": bs, "engine": "tensorflow",
            "extract_steady_clips_s": round(result.steady_rate, 4),
            "extract_whole_clips_s": round(whole, 4), "forward_clips_s": round(forward, 4)}


if __name__ == "__main__":
    main()
