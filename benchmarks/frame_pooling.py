"""Image backbone on clips: clips/s over K sampled frames against every frame, forward-only frames/s.

For each real clip of ../shared/clips (a GIF, an MP4, a 1080p AVI), in one process with one
MobileNet (the real ImageNet weights of ../shared/weights, 224x224, pooled 1024-d):
  k_frames     the extract path of `--temporal-pool mean --frames K`: the frame reader decodes
               the clip, takes K evenly spaced frames, the backbone runs on them, mean over time
  every_frame  every frame of the clip, decoded once, through the same model and pooling
               (frame-by-frame embedding)
  forward      model.predict_on_batch alone on a batch of K decoded frames (frames/s)
  choose_*     the reader alone choosing and converting the K frames: as it does (a video's
               frames counted by its packets, decoded once) and counting by decoding first
Each figure is the fastest of --repeats runs (the machine is shared: the load is recorded).

Usage:
    python benchmarks/frame_pooling.py [--frames 8] [--repeats 2] [--input-size 224]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from machine import RESULTS, append_rows, machine_fields  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
WEIGHTS = SHARED / "weights" / "mobilenet_imagenet_notop.weights.h5"
CLIPS = ("ucf101_cricket_shot.gif", "arm_wrestling.mp4", "ntu_drink_water.avi")
BATCH = 32  # frames per forward pass when every frame is embedded


def frame_count(path: Path) -> int:
    from pipeline.extract.sources.frame_reader import FrameReader

    reader = FrameReader((8, 8, 3), {"frames": 1, "temporal_pool": "mean"})
    return sum(1 for _ in reader._timeline(path))


def forward(model, frames: np.ndarray) -> np.ndarray:
    return np.concatenate([np.asarray(model.predict_on_batch(frames[i:i + BATCH]))
                           for i in range(0, len(frames), BATCH)])


def embed(reader, model, path: Path) -> np.ndarray:
    """What extract stores for one clip: the reader's K frames through the model, pooled."""
    return reader.aggregate(forward(model, np.concatenate(list(reader.read(path)))))


def embed_every_frame(reader, model, path: Path) -> np.ndarray:
    """Frame-by-frame embedding: one decoding pass converting every frame, all through the
    model, then the same pooling."""
    frames = np.stack([frame.array() for frame in reader._timeline(path)])
    return reader.aggregate(forward(model, frames))


def fastest(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=8, help="K, frames sampled per clip")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--input-size", type=int, default=224)
    args = parser.parse_args(argv)
    missing = [p for p in (WEIGHTS, *(SHARED / "clips" / c for c in CLIPS)) if not p.exists()]
    if missing:
        print(f"skipped: ../shared not available ({missing[0]})")
        return 0
    machine = machine_fields()

    from pipeline.extract.backbones import get_backbone
    from pipeline.extract.backbones.feature_model import build_feature_model
    from pipeline.extract.sources.frame_reader import FrameReader

    spec = get_backbone("mobilenet")
    shape = spec.input_shape_for(args.input_size)
    model = build_feature_model(spec, str(WEIGHTS), "pooled", "avg", args.input_size,
                                raw_input=True)  # uint8 in, as extract's TensorFlow engine
    sampled = FrameReader(shape, {"frames": args.frames, "temporal_pool": "mean"})
    model.predict_on_batch(np.zeros((args.frames, *shape), np.uint8))  # build and trace once
    rows = []
    for name in CLIPS:
        path = SHARED / "clips" / name
        n = frame_count(path)
        k_s = fastest(lambda: embed(sampled, model, path), args.repeats)
        all_s = fastest(lambda: embed_every_frame(sampled, model, path), args.repeats)
        by_decoding = FrameReader(shape, {"frames": args.frames, "temporal_pool": "mean"})
        by_decoding._quick_count = lambda _path: None  # count every source by decoding it
        choose_s = fastest(lambda: sampled.frames_of(path), args.repeats + 1)
        choose_decoding_s = fastest(lambda: by_decoding.frames_of(path), args.repeats + 1)
        batch = np.concatenate(list(sampled.read(path)))
        forward_s = fastest(lambda: model.predict_on_batch(batch), args.repeats + 1)
        rows.append({"clip": name, "frames_in_clip": n, "k": args.frames,
                     "input_size": args.input_size,
                     "k_frames_s_per_clip": round(k_s, 3),
                     "k_frames_clips_per_s": round(1 / k_s, 2),
                     "every_frame_s_per_clip": round(all_s, 3),
                     "every_frame_clips_per_s": round(1 / all_s, 3),
                     "every_frame_over_k_frames": round(all_s / k_s, 1),
                     "forward_frames_per_s": round(len(batch) / forward_s, 1),
                     "choose_k_s": round(choose_s, 3),
                     "choose_k_counting_by_decoding_s": round(choose_decoding_s, 3)})
    columns = list(rows[0])
    print(" | ".join(columns))
    for row in rows:
        print(" | ".join(str(row[c]) for c in columns))
    append_rows(RESULTS / "frame_pooling.csv", rows, machine)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
