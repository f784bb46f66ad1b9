"""Stage one's options: every `extract` flag and `[extract]` TOML key, with its default."""

from __future__ import annotations

from pipeline.config import Option


EXTRACT_OPTIONS = (
    Option("data", str, None, "folder of class folders (optionally in train/val/test) or CSV "
           "manifest with path,label[,split,group]", metavar="DIR_OR_CSV"),
    Option("backbone", str, "resnet50", "registered backbone (resnet50, vgg19, c3d) or any "
           "keras.applications name (mobilenet, efficientnetb0, ...)", metavar="NAME"),
    Option("weights", str, "imagenet", "imagenet (Keras download), none (random), or a "
           ".weights.h5 / legacy .h5 / .keras file", metavar="imagenet|none|FILE"),
    Option("layer", str, "pooled", "pooled (global pooling of the last conv block), pool5 "
           "(the last conv block's map) or a layer name", metavar="pooled|pool5|LAYER"),
    Option("pooling", str, "avg", "pooling used by --layer pooled", choices=("avg", "max")),
    Option("input_size", int, None, "square input size overriding the backbone's default",
           metavar="PIXELS", minimum=1),
    Option("resize", str, "squash", "how images meet the input size",
           choices=("squash", "center_crop")),
    Option("batch_size", int, 32, "images (or clips) per forward pass", minimum=1),
    Option("workers", int, None, "decoding threads or processes [default: one per core, at "
           "most 32]", minimum=1),
    Option("decode", str, "auto", "decode in threads or processes (auto: processes for still "
           "images on machines with 8+ cores; processes for clips only when asked, as each "
           "worker holds a whole file's clips)", choices=("auto", "threads", "processes")),
    Option("dtype", str, "float32", "stored vector type", choices=("float32", "float16")),
    Option("cache_dir", str, "cache", "folder of the feature stores", metavar="DIR"),
    Option("progress", bool, True, "show a progress bar"),
    Option("engine", str, "auto", "Keras backend that runs the backbone (auto: the fastest "
           "measured here: TensorFlow on a CPU, JAX on an NVIDIA GPU)",
           choices=("auto", "tensorflow", "openvino", "jax", "torch")),
    Option("precision", str, "float32", "compute precision of the backbone (half precision is "
           "for GPUs; vectors are stored as --dtype)", choices=("float32", "float16", "bfloat16")),
    # Clip options (C3D); ignored for still-image backbones.
    Option("frames", int, 16, "frames per clip (clip backbones)"),
    Option("short", str, "loop", "clips shorter than --frames", choices=("loop", "pad")),
    Option("sampling", str, "stride", "clip windows of longer inputs", choices=("stride", "uniform")),
    Option("stride", int, 8, "frames between clip starts for --sampling stride"),
    Option("num_clips", int, 10, "clips per video for --sampling uniform"),
    Option("fps", float, None, "resample frames to this rate from their timestamps"),
    Option("aggregate", str, "mean", "per-video mean of clip features, or one row per clip",
           choices=("mean", "per_clip")),
    Option("l2_normalize", bool, False, "L2-normalise each per-video mean (the C3D recipe)"),
    Option("mean_file", str, None, "Sports-1M mean cube (.npy) for C3D", metavar="NPY"),
)
