"""Clips for clip backbones (C3D): animated GIFs, videos and folders of frames, streamed.

A source is read as a timeline of frames (start and duration in seconds when it has them),
optionally resampled to a target fps, and cut into clips of `frames` frames: longer inputs at a
stride (C3D: 16 frames overlapping by 8) or as N evenly spaced clips, shorter ones looped (seed
000's rule) or padded with their last frame. Frames are decoded one at a time and converted
(the backbone's recipe: C3D resizes to 128x171 without antialiasing and crops rows 8:120,
columns 30:142) only when a clip needs them; `read` yields a few clips at a
time, so a long or 1080p video never sits whole in memory.

Usage:
    reader = ClipReader((16, 112, 112, 3), {"sampling": "stride", "stride": 8},
                        get_backbone("c3d").clip_recipe)
    for chunk in reader.read(Path("a.gif")):  # uint8, shape (k, 16, 112, 112, 3), k <= 2
        ...
"""

from __future__ import annotations

import hashlib
from collections import deque
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.errors import ConfigError, DecodeError
from pipeline.extract.sources.base import ClipRecipe, environment_problem, require_regular
from pipeline.extract.sources.frames import (GIF_DEFAULT_DURATION, LazyFrame, first_line,
                                             folder_frames, gif_frames, video_frames)
from pipeline.extract.sources.images import to_rgb
from pipeline.extract.options import ExtractConfig
from pipeline.outputs import require_regular_file

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".avi", ".webm", ".mov", ".mkv", ".mpg", ".mpeg", ".wmv",
                    ".flv", ".ogv", ".3gp")
CLIP_EXTENSIONS = (".gif",) + VIDEO_EXTENSIONS
CLIPS_PER_CHUNK = 2
SHORT_RULES, SAMPLINGS = ("loop", "pad"), ("stride", "uniform")


class ClipReader:
    """Reads one clip source per sample: `read(path)` yields uint8 chunks (k, T, S, S, 3).

    Args:
        input_shape: (frames, size, size, 3) of the backbone.
        options: an `ExtractConfig`, or a mapping of some extract options (the rest take the
            CLI's defaults): frames, short, sampling, stride, num_clips, fps, mean_file,
            aggregate, l2_normalize.
        recipe: the backbone's `ClipRecipe` (resize, crop, mean): the reader obeys it.

    Raises:
        ConfigError: an option is out of range or does not fit the backbone.
    """

    kind = "clip"  # the backbones it feeds (BackboneSpec.kind)
    extensions = CLIP_EXTENSIONS
    leaf_dirs = True
    unit = "clips"  # what one model input is called (summary, progress bar)
    process_decode = "files"  # a decode process returns a whole file's clips
    auto_processes = False  # a worker holds a whole file's clips: processes only when asked
    needs_recipe = True  # a backbone it feeds must bring a ClipRecipe

    @staticmethod
    def check_settings(config) -> None:
        """Clip backbones read whole clips: `--temporal-pool` (frame by frame) is refused."""
        if getattr(config, "temporal_pool", None) is not None:
            raise ConfigError("--temporal-pool pools an image backbone's per-frame vectors; a "
                              "clip backbone takes whole clips. Leave out --temporal-pool (use "
                              "--aggregate mean|per_clip), or pick an image backbone.")

    @classmethod
    def from_config(cls, spec, input_shape: tuple, config) -> "ClipReader":
        """The reader for `spec` (its `clip_recipe`) with the extract settings `config`."""
        return cls(input_shape, config, spec.clip_recipe)

    @staticmethod
    def claims(path) -> bool:
        """Whether `path` is one of this reader's samples (a clip file or a frame folder)."""
        path = Path(path)
        return path.is_dir() or path.suffix.lower() in CLIP_EXTENSIONS

    @staticmethod
    def thumbnail(path, size: int) -> Image.Image:
        """The first frame, uncropped, at most size x size."""
        def resize(frame, shape):
            height, width = shape
            return np.asarray(Image.fromarray(frame).resize((width, height),
                                                            Image.Resampling.BILINEAR))

        recipe = ClipRecipe(resize_shape=lambda s: (s, s), crop_offsets=lambda s: (0, 0),
                            resize=resize, resize_name="pillow bilinear", mean_name="none")
        reader = ClipReader((1, 128, 128, 3), {"frames": 1}, recipe)
        img = Image.fromarray(next(iter(reader.clips(Path(path))))[0])
        img.thumbnail((size, size))
        return img

    def __init__(self, input_shape: tuple, options, recipe: ClipRecipe):
        config = ExtractConfig.from_mapping(options)
        self.frames, self.size = int(input_shape[0]), int(input_shape[1])
        self.short, self.sampling = config.short, config.sampling
        stride = config.stride if config.stride is not None else \
            recipe.default_stride(self.frames)
        self.stride, self.num_clips = int(stride), int(config.num_clips)
        self.fps = float(config.fps) if config.fps is not None else None
        self.mean_rows = config.aggregate == "mean"
        self.l2_normalize = config.l2_normalize
        if config.frames is not None and int(config.frames) != self.frames:
            raise ConfigError(f"frames must be {self.frames} for this backbone (its input is "
                              f"{tuple(input_shape)}); received: frames={config.frames}")
        if self.short not in SHORT_RULES or self.sampling not in SAMPLINGS:
            raise ConfigError(f"short must be one of {', '.join(SHORT_RULES)} and sampling one "
                              f"of {', '.join(SAMPLINGS)}; received: short={self.short!r}, "
                              f"sampling={self.sampling!r}")
        if self.stride < 1 or self.num_clips < 1:  # --fps above 0 is its Option's own check
            raise ConfigError(f"stride and num_clips must be at least 1; received: "
                              f"stride={self.stride}, num_clips={self.num_clips}")
        self.resize_to = recipe.resize_shape(self.size)
        self.crop_at = recipe.crop_offsets(self.size)
        self.short_side = recipe.short_side(self.size) if recipe.short_side else None
        self.resize, self.resize_name = recipe.resize, recipe.resize_name
        self.mean_id = recipe.mean_name
        mean_file = config.mean_file
        if mean_file and recipe.load_mean is None:
            raise ConfigError("--mean-file is not used by this backbone; leave it out")
        if mean_file:
            require_regular_file(mean_file, "mean file", fix="pass --mean-file with a .npy file")
            if not Path(mean_file).is_file():
                raise ConfigError(f"mean file not found: {mean_file}. Pass the Sports-1M mean "
                                  "cube (.npy) with --mean-file, or leave it out to subtract "
                                  "per-channel means.")
            mean = recipe.load_mean(mean_file, tuple(input_shape))
            with open(mean_file, "rb") as fh:
                digest = hashlib.file_digest(fh, "sha256").hexdigest()
            self.mean_id = f"file sha256:{digest} shape {list(mean.shape)}"
            # Replaces the spec's preprocessing: the same recipe with the user's mean.
            self.preprocess = lambda clips: recipe.preprocess_with_mean(clips, mean)

    @property
    def rows_per_file(self) -> int | None:
        """1: the per-video mean; None: one row per clip (as many as the file has)."""
        return 1 if self.mean_rows else None

    @staticmethod
    def describe(prov: dict) -> str:
        """A store's clip reader settings in words (for `info`): frames, sampling,
        aggregation, L2 normalisation and mean."""
        reader = prov.get("reader") or {}
        window = (f"stride {reader.get('stride')}" if reader.get("sampling") == "stride" else
                  f"uniform, {reader.get('num_clips')} clips")
        mean_file = (prov.get("extract_options") or {}).get("mean_file")
        mean = f"mean file {mean_file} ({reader.get('mean')})" if mean_file else \
            f"mean {reader.get('mean')}"
        l2 = "yes" if prov.get("l2_normalize") else "no"
        return (f"clips of {reader.get('frames')} frames, sampling {window}, short "
                f"{reader.get('short')}, fps {reader.get('fps') or 'as decoded'}; "
                f"{reader.get('resize')}; aggregate {prov.get('aggregate', 'mean')}, "
                f"L2 normalise {l2}; {mean}")

    def aggregation_settings(self) -> dict:
        """How a file's model outputs become its rows (part of the vectors' identity)."""
        return {"aggregate": "mean" if self.mean_rows else "per_clip",
                "l2_normalize": bool(self.l2_normalize)}

    def aggregate(self, rows: np.ndarray) -> np.ndarray:
        """The stored rows of one file from its clips' outputs: their mean (L2-normalised with
        --l2-normalize, the C3D recipe), or one row per clip."""
        if not self.mean_rows:
            return rows
        row = rows.mean(axis=0, keepdims=True)
        if self.l2_normalize:
            row /= max(float(np.linalg.norm(row)), 1e-12)
        return row

    def settings(self) -> dict:
        """What about reading changes the vectors (part of the cache key)."""
        window = {"stride": self.stride} if self.sampling == "stride" else \
            {"num_clips": self.num_clips}
        height, width = self.resize_to
        resize = f"{height}x{width} {self.resize_name}, crop {self.size} at (top, left) " \
                 f"{self.crop_at}"
        if self.short_side:  # every frame, whatever its size (stores made when a short side
            # of the crop size was kept as it was have another key and are made again)
            resize = (f"short side {self.short_side} {self.resize_name} (always), centre crop "
                      f"{self.size}")
        return {"reader": "clip", "frames": self.frames, "short": self.short,
                "sampling": self.sampling, **window, "fps": self.fps,
                "resize": resize,
                "alpha": "white", "gif_default_duration": GIF_DEFAULT_DURATION,
                "mean": self.mean_id}

    def read(self, path) -> Iterator[np.ndarray]:
        """Yields the clips of one GIF, video or frame folder, CLIPS_PER_CHUNK at a time.

        Raises:
            DecodeError: the source is unreadable, truncated or holds no frames.
            ResourceError: the machine failed (permission, open files, memory, vanished file).
        """
        path = Path(path)
        require_regular(path)
        chunk = []
        try:
            for clip in self.clips(path):
                chunk.append(clip)
                if len(chunk) == CLIPS_PER_CHUNK:
                    yield np.stack(chunk)
                    chunk = []
        except (OSError, SyntaxError, ValueError, EOFError, UnidentifiedImageError,
                Image.DecompressionBombError, MemoryError) as exc:
            problem = environment_problem(exc, path)
            if problem is not None:
                raise problem from None
            raise DecodeError(f"{path.name}: {first_line(exc)}") from None
        if chunk:
            yield np.stack(chunk)

    def clips(self, path: Path) -> Iterator[np.ndarray]:
        """The clips of one source, one (T, S, S, 3) array at a time."""
        if self.sampling == "stride":
            starts = _count_from(0, self.stride)
        else:
            n = sum(1 for _ in self._frames(path))  # a pass without pixel conversion
            last = max(n - self.frames, 0)
            starts = sorted({int(round(s)) for s in np.linspace(0, last, self.num_clips)})
        return _windows(self._frames(path), self.frames, iter(starts), self.short)

    def _frames(self, path: Path) -> Iterator[LazyFrame]:
        if path.is_dir():
            frames = folder_frames(path, self._fit)
            if self.fps is not None:
                raise DecodeError(f"{path.name}: a frame folder has no timestamps to resample to "
                                  "--fps; extract frame folders without --fps")
        elif path.suffix.lower() in VIDEO_EXTENSIONS:
            frames = video_frames(path, self._fit_video)
        else:
            frames = gif_frames(path, self._fit)
        return _resample(frames, self.fps) if self.fps is not None else frames

    def _fit(self, img: Image.Image) -> np.ndarray:
        """RGB, resized as the recipe says (C3D: 128x171 at 112), then cropped."""
        return self._fit_array(np.asarray(to_rgb(img), dtype=np.uint8))

    def _fit_video(self, frame) -> np.ndarray:
        """As `_fit`: FFmpeg only converts YUV to RGB (at full size); its own scaler would
        antialias, so the recipe's resize does the scaling, exactly as for GIFs and frames."""
        return self._fit_array(frame.to_ndarray(format="rgb24"))

    def _fit_array(self, array: np.ndarray) -> np.ndarray:
        if self.short_side:
            return self._fit_short_side(array)
        top, left = self.crop_at
        small = self.resize(array, self.resize_to)
        return np.ascontiguousarray(small[top:top + self.size, left:left + self.size])

    def _fit_short_side(self, array: np.ndarray) -> np.ndarray:
        """Aspect ratio kept: the short side resized to `short_side` (every frame, a 224x224
        GIF at a 224 crop too, so the object scale never jumps with the source size), then the
        centre crop."""
        height, width = array.shape[:2]
        scale = self.short_side / min(height, width)
        shape = (max(self.size, round(height * scale)), max(self.size, round(width * scale)))
        array = self.resize(array, shape)
        height, width = shape
        top, left = (height - self.size) // 2, (width - self.size) // 2
        return np.ascontiguousarray(array[top:top + self.size, left:left + self.size])


def _count_from(start: int, step: int) -> Iterator[int]:
    while True:
        yield start
        start += step


def _windows(frames: Iterator[LazyFrame], length: int, starts: Iterator[int],
             short: str) -> Iterator[np.ndarray]:
    """Cuts clips [s, s + length) for increasing starts s; a too-short input gives one clip."""
    next_start = next(starts, None)
    open_starts: deque = deque()  # windows begun and not yet complete
    kept: deque = deque()  # arrays of the frames from open_starts[0] on
    n = emitted = 0
    for index, frame in enumerate(frames):
        n = index + 1
        while next_start is not None and next_start <= index:
            open_starts.append(next_start)
            next_start = next(starts, None)
        if not open_starts:
            continue  # in no window: never converted
        kept.append(frame.array())
        if index == open_starts[0] + length - 1:
            yield np.stack(kept)  # exactly the window: kept starts at open_starts[0]
            emitted += 1
            done = open_starts.popleft()
            drop = (open_starts[0] if open_starts else index + 1) - done
            for _ in range(min(drop, len(kept))):
                kept.popleft()
    if emitted:
        return
    if n == 0:
        raise DecodeError("no frames could be decoded")
    frames_seen = list(kept)  # fewer than `length`: window 0 kept them all
    if short == "loop":
        order = [i % len(frames_seen) for i in range(length)]
    else:
        order = [min(i, len(frames_seen) - 1) for i in range(length)]
    yield np.stack([frames_seen[i] for i in order])


def _resample(frames: Iterator[LazyFrame], fps: float) -> Iterator[LazyFrame]:
    """Frames shown at times k/fps: each source frame covers [start, start + duration)."""
    step, k, origin = 1.0 / fps, 0, None
    for frame in frames:
        if origin is None:
            origin = frame.start
        end = frame.start - origin + frame.duration
        while k * step < end - 1e-9:
            yield frame
            k += 1
