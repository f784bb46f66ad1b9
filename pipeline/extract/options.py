"""Stage one's options: every `extract` flag and `[extract]` TOML key, with its default."""

from __future__ import annotations

import math
import os

from pipeline.config import Option
from pipeline.errors import ConfigError
from pipeline.extract.engines import engine_names, get_engine
from pipeline.plugins import plugin_names
from pipeline.settings import Settings, settings_class
from pipeline.extract.augment import parse_recipe

# Upper bounds of the counts a user sets, far above any real use and far below what would
# exhaust memory or run for days (`--fps 1e9` makes a 4-second video 4e9 frames).
MAX_INPUT_SIZE = 4096
MAX_BATCH_SIZE = 16384
MAX_WORKERS = 256
MAX_CLIP_FRAMES = 1024
MAX_STRIDE = 100_000
MAX_NUM_CLIPS = 1000
MAX_FPS = 1000.0
MAX_VIEWS = 256
# One batch of float32 pixels may take at most this share of the memory available now.
BATCH_MEMORY_SHARE = 0.5


def check_batch_memory(batch_size: int, input_shape: tuple) -> None:
    """One batch of model inputs as float32 (batch x every axis of one input: a clip's frames,
    height, width, channels, at the backbone's own size) must fit in half the memory available
    now; checked once the backbone's input shape is known, before any file is decoded, instead
    of a MemoryError deep in the forward pass."""
    shape = [int(d) for d in input_shape]
    need = int(batch_size) * math.prod(shape) * 4
    have = available_memory()
    if have is not None and need > BATCH_MEMORY_SHARE * have:
        raise ConfigError(
            f"--batch-size {batch_size} inputs of {' x '.join(map(str, shape))} need "
            f"{need / 1e9:.1f} GB of memory for one batch of float32 pixels, more than half of "
            f"the {have / 1e9:.1f} GB available; lower --batch-size (or --frames, or "
            "--input-size).")


def available_memory() -> int | None:
    """Bytes of memory available now (Linux' MemAvailable), or None where it cannot be told."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (OSError, ValueError, AttributeError):
        return None


EXTRACT_OPTIONS = (
    Option("data", str, None, "folder of class folders (optionally in train/val/test) or CSV "
           "manifest with path,label[,split,group]", metavar="DIR_OR_CSV"),
    Option("backbone", str, "resnet50", "registered backbone (resnet50, vgg19, c3d, i3d), any "
           "keras.applications name (mobilenet, efficientnetb0, ...), or a KerasHub preset: a "
           "preset directory, an hf:// or kaggle:// handle, or a preset name such as "
           "dinov2_small (downloaded; offline, pass a directory)", metavar="NAME|DIR|HANDLE"),
    Option("weights", str, "imagenet", "imagenet (Keras download; a KerasHub preset: its own "
           "weights), none (random), a .weights.h5 / legacy .h5 / .keras file, or a Flax .ckpt "
           "(i3d)", metavar="imagenet|none|FILE"),
    Option("layer", str, "pooled", "pooled (the backbone's pooled vector: global pooling of "
           "the last conv block; a KerasHub ViT-family preset: its class token; i3d: the mean "
           "of Mixed_5c), pool5 (the last block's map), a layer name, or for presets "
           "tokens_mean, cls_tokens_mean, projected", metavar="pooled|pool5|LAYER"),
    Option("pooling", str, "avg", "pooling used by --layer pooled", choices=("avg", "max")),
    Option("input_size", int, None, "square input size overriding the backbone's default",
           metavar="PIXELS", minimum=1, maximum=MAX_INPUT_SIZE),
    Option("resize", str, None, "how images meet the input size [default: squash; a KerasHub "
           "preset: its image converter's crop, pad or squash, which a different value may "
           "not contradict]", choices=("squash", "center_crop")),
    Option("batch_size", int, 32, "images (or clips) per forward pass", minimum=1,
           maximum=MAX_BATCH_SIZE),
    Option("workers", int, None, "decoding threads or processes [default: one per core, at "
           "most 32]", minimum=1, maximum=MAX_WORKERS),
    Option("decode", str, "auto", "decode in threads or processes (auto: processes for still "
           "images on machines with 8+ cores; processes for clips only when asked, as each "
           "worker holds a whole file's clips)", choices=("auto", "threads", "processes")),
    Option("jpeg_draft", bool, True, "decode JPEGs at least twice the input size at 1/2-1/8 "
           "scale in libjpeg (DCT domain; several times faster on large photos; pixels differ "
           "slightly, so it is part of the cache key)"),
    Option("dtype", str, "float32", "stored vector type", choices=("float32", "float16")),
    Option("cache_dir", str, "cache", "folder of the feature stores", metavar="DIR"),
    Option("progress", bool, True, "show a progress bar"),
    Option("engine", str, "auto", "what runs the backbone: a Keras backend, or openvino (the "
           "model converted to OpenVINO IR, run natively; auto: the fastest measured here)",
           choices=engine_names()),
    Option("precision", str, "auto", "compute precision of the backbone (auto: bfloat16 on a "
           "CPU with AMX or AVX512-BF16 and an engine that computes it natively, openvino, if "
           "its vectors pass a check against float32 ones; float32 elsewhere. float16/bfloat16 "
           "asked: mixed precision, OpenVINO's own bfloat16 on openvino; int8: NNCF-quantized, "
           "--engine openvino; vectors are stored as --dtype)",
           choices=("auto", "float32", "float16", "bfloat16", "int8")),
    Option("calibration_size", int, 300, "images of the dataset (seeded choice) that calibrate "
           "--precision int8"),
    Option("int8_min_cosine", float, 0.98, "--precision int8 keeps its vectors only if their "
           "median cosine similarity to float32 vectors on 64 held-back images reaches this",
           metavar="COSINE", minimum=0.0),
    Option("int8_refusal", str, "fallback", "what --precision int8 does when the guard refuses "
           "its vectors: fallback stores float32 vectors (said and recorded in the store), error "
           "stops before writing anything", choices=("fallback", "error")),
    # Running on a Ray cluster (pipeline/extract/cluster.py); needs requirements-cluster.txt.
    Option("cluster", str, None, "shard the files over a Ray cluster's actors (the one store "
           "is assembled here)", choices=("ray",)),
    Option("actors", int, None, "Ray actors, each building the backbone once [default: one per "
           "GPU (or per --gpus-per-actor GPUs) when the cluster has GPUs, else one per node]",
           metavar="N"),
    Option("gpus_per_actor", float, None, "GPUs each actor holds (0.5: two actors share one) "
           "[default: 1 when the cluster has GPUs, else 0]", metavar="G"),
    Option("ray_address", str, None, "Ray cluster to join [default: $RAY_ADDRESS, else a local "
           "one is started]", metavar="ADDRESS"),
    # Clip options (C3D, I3D, and image backbones run frame by frame with --temporal-pool).
    Option("frames", int, None, "frames per clip [default: the backbone's clip length: c3d 16, "
           "i3d 64]; an image backbone: frames taken evenly over each GIF, video or frame folder, "
           "only with --temporal-pool (refused without it) [default: 16]", minimum=1,
           maximum=MAX_CLIP_FRAMES),
    Option("temporal_pool", str, None, "run an image backbone on --frames frames of each GIF, "
           "video or frame folder and pool their vectors over time: mean or max (one row per "
           "clip), or none (one row per frame, grouped by its clip)",
           choices=("mean", "max", "none")),
    Option("short", str, "loop", "clips shorter than --frames", choices=("loop", "pad")),
    Option("sampling", str, "stride", "clip windows of longer inputs", choices=("stride", "uniform")),
    Option("stride", int, None, "frames between clip starts for --sampling stride [default: "
           "the backbone's: c3d 8, i3d the clip length]", minimum=1, maximum=MAX_STRIDE),
    Option("num_clips", int, 10, "clips per video for --sampling uniform", minimum=1,
           maximum=MAX_NUM_CLIPS),
    Option("fps", float, None, "resample frames to this rate from their timestamps",
           minimum=0.0, open_minimum=True, maximum=MAX_FPS),
    Option("aggregate", str, "mean", "per-video mean of clip features, or one row per clip",
           choices=("mean", "per_clip")),
    Option("l2_normalize", bool, False, "L2-normalise each per-video mean (the C3D recipe)"),
    Option("mean_file", str, None, "Sports-1M mean cube (.npy) for C3D", metavar="NPY"),
    # Cached augmented views (pipeline/extract/views.py): the plain store stays as it is.
    Option("views", int, 0, "also store this many seeded augmented views of every file, in a "
           "views store beside the plain one (0: none)", minimum=0, maximum=MAX_VIEWS),
    Option("augment", str, "flip,crop=0.7-1.0", "the views' recipe: comma-separated steps "
           "flip, crop=A-B (area share), rotate=DEGREES, jitter=J (colour), tjitter=FRAMES "
           "(clips)", metavar="RECIPE"),
    Option("view_seed", int, 0, "seed of the views (each file's view v is drawn from sha256 of "
           "this seed, its id and v)", minimum=0),
    Option("plugin", plugin_names, (), "modules to import first, which register backbones, "
           "readers or engines (comma separated; also the featcache.plugins entry points)",
           metavar="MODULE[,MODULE]"),
)


class _ExtractRules(Settings):
    """The rules across extract options, checked once wherever the settings are built."""

    def validate(self) -> None:
        if self.views:
            parse_recipe(self.augment)  # a wrong recipe is refused before anything runs
            if self.cluster:
                raise ConfigError("--views runs on this machine; leave out --cluster (extract "
                                  "the plain rows on the cluster first, then add --views)")
            if self.temporal_pool == "none":
                raise ConfigError("--views needs one row per file, and --temporal-pool none "
                                  "stores one row per frame; use --temporal-pool mean or max, "
                                  "or leave out --views")
        if self.engine != "auto":  # e.g. --precision int8 needs an engine that quantizes
            get_engine(self.engine).check(self)
        if self.aggregate == "per_clip" and self.l2_normalize:
            raise ConfigError("--l2-normalize normalises the per-video mean of --aggregate mean; "
                              "with --aggregate per_clip each clip's row is stored as it is. "
                              "Leave out --l2-normalize (normalise clip rows in stage two, e.g. "
                              "grid-search's l2_normalize preprocessing), or use --aggregate "
                              "mean.")


# The typed, frozen settings of `extract`, one field per option above (pipeline/settings.py).
ExtractConfig = settings_class("ExtractConfig", EXTRACT_OPTIONS, section="extract", command="extract",
                               base=_ExtractRules)
ExtractConfig.__module__ = __name__  # so a config pickles (to a worker process) by this name
