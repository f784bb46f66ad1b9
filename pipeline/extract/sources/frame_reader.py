"""Clip embeddings from an image backbone: K frames per GIF, video or frame folder.

With `--temporal-pool mean|max|none`, an image backbone (ResNet50, MobileNet, any
keras.applications model or registered image backbone) reads clip files instead of still
images. Each source gives exactly `--frames K` frames:

- K evenly spaced frames: the source's n frames (after `--fps` resampling, when given) are cut
  into K equal segments and the middle frame of each is taken, index floor((i + 0.5) * n / K);
- a source with fewer than K frames is completed by `--short`: loop (0, 1, 2, 0, 1, ...) or
  pad (repeat the last frame).

Every frame meets the input size exactly as a still image does (Pillow, RGB, transparent
pixels white, `--resize squash|center_crop`, bilinear; a KerasHub preset: its converter's own
resize), so frame 0 of a GIF gives the vector
the image reader gives the same GIF. The backbone runs on each frame; `aggregate` pools the K
vectors over time (mean or max) into one row per source, or keeps them (`none`): K rows, each
with its source as its group, so a split never separates the frames of one video.

Usage:
    reader = FrameReader((224, 224, 3), {"frames": 8, "temporal_pool": "mean"})
    for chunk in reader.read(Path("a.gif")):  # uint8, shape (k, 224, 224, 3), k <= 16
        ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.errors import ConfigError, DecodeError
from pipeline.extract.sources.base import environment_problem, require_regular
from pipeline.extract.sources.clips import CLIP_EXTENSIONS, VIDEO_EXTENSIONS, _resample
from pipeline.extract.sources.frames import (GIF_DEFAULT_DURATION, first_line, folder_frames,
                                             gif_frames, video_frames, video_packet_count)
from pipeline.extract.sources.converter_resize import ConverterResize, resolve
from pipeline.extract.sources.images import RESIZE_POLICIES, fit_array, to_rgb
from pipeline.extract.options import ExtractConfig

TEMPORAL_POOLS = ("mean", "max", "none")
DEFAULT_FRAMES = 16  # --frames when it is not given (clip backbones have their own clip length)
FRAMES_PER_CHUNK = 16  # frames handed to the batcher at a time: a long K never sits whole


def sampled_indices(n: int, k: int, short: str = "loop") -> list[int]:
    """The K frame indices taken from a source of n frames (see the module doc)."""
    if n <= 0:
        raise DecodeError("no frames could be decoded")
    if n >= k:
        return [min(int((i + 0.5) * n / k), n - 1) for i in range(k)]
    if short == "loop":
        return [i % n for i in range(k)]
    return [min(i, n - 1) for i in range(k)]


class FrameReader:
    """Reads K frames per clip source for an image backbone; pools their vectors over time.

    Args:
        input_shape: (size, size, 3) of the image backbone.
        options: an `ExtractConfig`, or a mapping of some extract options: frames, short, fps,
            resize, temporal_pool (the rest take the CLI's defaults).

    Raises:
        ConfigError: an option is out of range, or one that only clip backbones use is set.
    """

    kind = "image"  # the backbones it feeds (an image backbone, frame by frame)
    name = "frames"  # the "reader" entry of its settings()
    extensions = CLIP_EXTENSIONS
    leaf_dirs = True  # a folder of frames is one clip
    unit = "frames"  # what one model input is called (summary, progress bar)
    process_decode = "files"  # a decode process returns a whole file's frames
    auto_processes = False  # as for clips: a worker holds a whole file's frames
    needs_recipe = False

    @staticmethod
    def serves(config) -> bool:
        """Reads for an image backbone when `--temporal-pool` is given."""
        return getattr(config, "temporal_pool", None) is not None

    @classmethod
    def from_config(cls, spec, input_shape: tuple, config) -> "FrameReader":
        return cls(input_shape, config, image_resize=getattr(spec, "image_resize", None), backbone=spec.name)

    @staticmethod
    def claims(path) -> bool:
        path = Path(path)
        return path.is_dir() or path.suffix.lower() in CLIP_EXTENSIONS

    def __init__(self, input_shape: tuple, options, image_resize=None, backbone: str = ""):
        config = ExtractConfig.from_mapping(options)
        self.input_shape = tuple(int(d) for d in input_shape)
        self.size = self.input_shape[:2]
        self.frames = int(config.frames) if config.frames is not None else DEFAULT_FRAMES
        self.short = config.short
        self.fps = float(config.fps) if config.fps is not None else None
        # A backbone's own resize (a KerasHub preset's converter), or the --resize policy.
        self.resize = resolve(image_resize, config.resize, backbone or "this backbone")
        self.pool = config.temporal_pool
        if self.pool not in TEMPORAL_POOLS:
            raise ConfigError(f"--temporal-pool must be one of {', '.join(TEMPORAL_POOLS)}; "
                              f"received: {self.pool!r}")
        if not isinstance(self.resize, ConverterResize) and self.resize not in RESIZE_POLICIES:
            raise ConfigError(f"resize must be one of {', '.join(RESIZE_POLICIES)}; "
                              f"received: {self.resize!r}")
        if config.mean_file:
            raise ConfigError("--mean-file is a C3D mean cube; an image backbone brings its own "
                              "preprocessing. Leave out --mean-file.")
        if config.aggregate != "mean":  # the default: rows are set by --temporal-pool here
            raise ConfigError("--aggregate is how a clip backbone's clips become rows; with "
                              "--temporal-pool, leave it out and use --temporal-pool none for "
                              "one row per frame.")
        if config.l2_normalize:
            raise ConfigError("--l2-normalize normalises a clip backbone's per-video mean; with "
                              "--temporal-pool the pooled rows are stored as they are. Leave "
                              "out --l2-normalize (normalise in stage two, e.g. grid-search's "
                              "l2_normalize preprocessing).")

    @property
    def rows_per_file(self) -> int | None:
        """1: the pooled row; None: one row per frame."""
        return None if self.pool == "none" else 1

    @property
    def mean_rows(self) -> bool:
        """True when a source's row is the mean of its inputs' vectors (export reads it)."""
        return self.pool == "mean"

    @property
    def rows_pool(self) -> str | None:
        """How a source's inputs' vectors become its one row: mean, max, or None (kept)."""
        return None if self.pool == "none" else self.pool

    def settings(self) -> dict:
        """What about reading changes the vectors (part of the cache key)."""
        resize = self.resize.settings() if isinstance(self.resize, ConverterResize) else \
            {"resize": self.resize, "interpolation": "bilinear"}
        return {"reader": self.name, "frames": self.frames, "sampling": "even segment centres",
                "short": self.short, "fps": self.fps, **resize, "alpha": "white",
                "gif_default_duration": GIF_DEFAULT_DURATION}

    def aggregation_settings(self) -> dict:
        """How a source's frame vectors become its rows (part of the vectors' identity)."""
        return {"temporal_pool": self.pool}

    def aggregate(self, rows: np.ndarray) -> np.ndarray:
        """The stored rows of one source from its K frames' vectors."""
        if self.pool == "mean":
            return rows.mean(axis=0, keepdims=True)
        if self.pool == "max":
            return rows.max(axis=0, keepdims=True)
        return rows

    @staticmethod
    def describe(prov: dict) -> str:
        """A store's frame reader settings in words (for `info`)."""
        reader = prov.get("reader") or {}
        return (f"{reader.get('frames')} frames per clip ({reader.get('sampling')}, short "
                f"{reader.get('short')}, fps {reader.get('fps') or 'as decoded'}), resize "
                f"{reader.get('resize')} ({reader.get('interpolation', 'bilinear')}); "
                f"image backbone per frame, temporal pool "
                f"{prov.get('temporal_pool')}")

    def read(self, path) -> Iterator[np.ndarray]:
        """Yields the K frames of one source, FRAMES_PER_CHUNK at a time, uint8 (k, S, S, 3).

        Raises:
            DecodeError: the source is unreadable, truncated or holds no frames.
            ResourceError: the machine failed (permission, open files, memory, vanished file).
        """
        path = Path(path)
        require_regular(path)
        try:
            frames = self.frames_of(path)
        except (OSError, SyntaxError, ValueError, EOFError, UnidentifiedImageError,
                Image.DecompressionBombError, MemoryError) as exc:
            problem = environment_problem(exc, path)
            if problem is not None:
                raise problem from None
            raise DecodeError(f"{path.name}: {first_line(exc)}") from None
        for start in range(0, len(frames), FRAMES_PER_CHUNK):
            yield np.stack(frames[start:start + FRAMES_PER_CHUNK])

    def frames_of(self, path: Path) -> list[np.ndarray]:
        """The K sampled frames of one source.

        The frames are counted first: a video (without --fps) by its packets, demuxed without
        decoding, and checked against the frames its one decoding pass sees (when they differ,
        the decoded count is used, in a third pass); other sources by a pass that converts no
        pixels, after which the second pass stops at the last frame it needs.
        """
        quick = self._quick_count(path)
        n = quick if quick is not None else sum(1 for _ in self._timeline(path))
        wanted = sampled_indices(n, self.frames, self.short)
        arrays, seen = self._collect(path, set(wanted), to_the_end=quick is not None)
        if quick is not None and seen != n:  # a packet without a frame, or with two
            wanted = sampled_indices(seen, self.frames, self.short)
            arrays, seen = self._collect(path, set(wanted), to_the_end=False)
        if not set(wanted) <= set(arrays):  # the file changed between the passes
            raise DecodeError(f"{path.name}: fewer frames on the second read than the first")
        return [arrays[i] for i in wanted]

    def _quick_count(self, path: Path) -> int | None:
        if self.fps is not None or path.is_dir() or \
                path.suffix.lower() not in VIDEO_EXTENSIONS:
            return None
        return video_packet_count(path)

    def _collect(self, path: Path, needed: set, to_the_end: bool) -> tuple[dict, int]:
        """{index: pixels} of the needed frames, and how many frames the pass saw."""
        arrays, seen = {}, 0
        timeline = self._timeline(path)
        try:
            for index, frame in enumerate(timeline):
                seen = index + 1
                if index in needed:
                    arrays[index] = frame.array()
                if not to_the_end and len(arrays) == len(needed):
                    break
        finally:
            timeline.close()  # closes the file now, not when the generator is collected
        return arrays, seen

    def _timeline(self, path: Path):
        if path.is_dir():
            if self.fps is not None:
                raise DecodeError(f"{path.name}: a frame folder has no timestamps to resample to "
                                  "--fps; extract frame folders without --fps")
            frames = folder_frames(path, self._fit)
        elif path.suffix.lower() in VIDEO_EXTENSIONS:
            frames = video_frames(path, self._fit_video)
        else:
            frames = gif_frames(path, self._fit)
        return _resample(frames, self.fps) if self.fps is not None else frames

    def _fit(self, img: Image.Image) -> np.ndarray:
        """As a still image: RGB (transparent -> white), resized by the --resize policy."""
        return fit_array(to_rgb(img), self.size, self.resize)

    def _fit_video(self, frame) -> np.ndarray:
        return self._fit(frame.to_image())
