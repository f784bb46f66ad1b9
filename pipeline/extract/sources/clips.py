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
import re
import struct
from collections import deque
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.errors import ConfigError, DecodeError
from pipeline.extract.sources.base import ClipRecipe, environment_problem
from pipeline.extract.sources.discover import FRAME_EXTENSIONS
from pipeline.extract.sources.images import to_rgb

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".avi", ".webm", ".mov", ".mkv", ".mpg", ".mpeg", ".wmv",
                    ".flv", ".ogv", ".3gp")
CLIP_EXTENSIONS = (".gif",) + VIDEO_EXTENSIONS
CLIPS_PER_CHUNK = 2
# Browsers show GIF frames with a delay of 10 ms or less (or none) for 100 ms; so do we.
GIF_DEFAULT_DURATION = 0.1
SHORT_RULES, SAMPLINGS = ("loop", "pad"), ("stride", "uniform")


class _LazyFrame:
    """One decoded frame, converted to the model's size only if a clip asks for it."""

    __slots__ = ("_convert", "_array", "start", "duration")

    def __init__(self, convert, start=None, duration=None):
        self._convert, self._array = convert, None
        self.start, self.duration = start, duration

    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = self._convert()
        return self._array


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
        from pipeline.extract.options import ExtractConfig

        config = ExtractConfig.from_mapping(options)
        self.frames, self.size = int(input_shape[0]), int(input_shape[1])
        self.short, self.sampling = config.short, config.sampling
        self.stride, self.num_clips = int(config.stride), int(config.num_clips)
        self.fps = float(config.fps) if config.fps is not None else None
        self.mean_rows = config.aggregate == "mean"
        self.l2_normalize = config.l2_normalize
        if int(config.frames) != self.frames:
            raise ConfigError(f"frames must be {self.frames} for this backbone (its input is "
                              f"{tuple(input_shape)}); received: frames={config.frames}")
        if self.short not in SHORT_RULES or self.sampling not in SAMPLINGS:
            raise ConfigError(f"short must be one of {', '.join(SHORT_RULES)} and sampling one "
                              f"of {', '.join(SAMPLINGS)}; received: short={self.short!r}, "
                              f"sampling={self.sampling!r}")
        if self.stride < 1 or self.num_clips < 1 or (self.fps is not None and self.fps <= 0):
            raise ConfigError(f"stride and num_clips must be at least 1 and fps above 0; received: "
                              f"stride={self.stride}, num_clips={self.num_clips}, fps={self.fps}")
        self.resize_to = recipe.resize_shape(self.size)
        self.crop_at = recipe.crop_offsets(self.size)
        self.resize, self.resize_name = recipe.resize, recipe.resize_name
        self.mean_id = recipe.mean_name
        mean_file = config.mean_file
        if mean_file and recipe.load_mean is None:
            raise ConfigError("--mean-file is not used by this backbone; leave it out")
        if mean_file:
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
        return {"reader": "clip", "frames": self.frames, "short": self.short,
                "sampling": self.sampling, **window, "fps": self.fps,
                "resize": f"{height}x{width} {self.resize_name}, "
                          f"crop {self.size} at (top, left) {self.crop_at}",
                "alpha": "white", "gif_default_duration": GIF_DEFAULT_DURATION,
                "mean": self.mean_id}

    def read(self, path) -> Iterator[np.ndarray]:
        """Yields the clips of one GIF, video or frame folder, CLIPS_PER_CHUNK at a time.

        Raises:
            DecodeError: the source is unreadable, truncated or holds no frames.
            ResourceError: the machine failed (permission, open files, memory, vanished file).
        """
        path = Path(path)
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
            raise DecodeError(f"{path.name}: {_first_line(exc)}") from None
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

    def _frames(self, path: Path) -> Iterator[_LazyFrame]:
        if path.is_dir():
            frames = _folder_frames(path, self._fit)
            if self.fps is not None:
                raise DecodeError(f"{path.name}: a frame folder has no timestamps to resample to "
                                  "--fps; extract frame folders without --fps")
        elif path.suffix.lower() in VIDEO_EXTENSIONS:
            frames = _video_frames(path, self._fit_video)
        else:
            frames = _gif_frames(path, self._fit)
        return _resample(frames, self.fps) if self.fps is not None else frames

    def _fit(self, img: Image.Image) -> np.ndarray:
        """RGB, resized as the recipe says (C3D: 128x171 at 112), then cropped."""
        return self._fit_array(np.asarray(to_rgb(img), dtype=np.uint8))

    def _fit_video(self, frame) -> np.ndarray:
        """As `_fit`: FFmpeg only converts YUV to RGB (at full size); its own scaler would
        antialias, so the recipe's resize does the scaling, exactly as for GIFs and frames."""
        return self._fit_array(frame.to_ndarray(format="rgb24"))

    def _fit_array(self, array: np.ndarray) -> np.ndarray:
        top, left = self.crop_at
        small = self.resize(array, self.resize_to)
        return np.ascontiguousarray(small[top:top + self.size, left:left + self.size])


def _count_from(start: int, step: int) -> Iterator[int]:
    while True:
        yield start
        start += step


def _windows(frames: Iterator[_LazyFrame], length: int, starts: Iterator[int],
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


def _resample(frames: Iterator[_LazyFrame], fps: float) -> Iterator[_LazyFrame]:
    """Frames shown at times k/fps: each source frame covers [start, start + duration)."""
    step, k, origin = 1.0 / fps, 0, None
    for frame in frames:
        if origin is None:
            origin = frame.start
        end = frame.start - origin + frame.duration
        while k * step < end - 1e-9:
            yield frame
            k += 1


def _gif_frames(path: Path, fit) -> Iterator[_LazyFrame]:
    """Frames of an animated GIF (or any Pillow image sequence), composited as browsers do.

    Pillow applies each frame's disposal method and palette while seeking frame by frame;
    transparent pixels become white in `to_rgb`.
    """
    with Image.open(path) as img:
        start, index = 0.0, 0
        while True:
            try:
                img.seek(index)
            except EOFError:
                if img.format == "GIF" and not _ends_with_gif_trailer(path):
                    raise DecodeError(f"{path.name}: GIF ends after frame {index - 1} without its "
                                      "trailer byte (truncated file)") from None
                return
            except (IndexError, struct.error):  # Pillow reading past the end of a cut file
                raise DecodeError(f"{path.name}: GIF data ends inside frame {index} "
                                  "(truncated file)") from None
            img.load()
            delay = img.info.get("duration") or 0
            duration = delay / 1000.0 if delay > 10 else GIF_DEFAULT_DURATION

            def convert(index=index):
                if img.tell() != index:  # a caller kept a frame past the next seek: a bug
                    raise RuntimeError("GIF frame converted after the next frame was decoded")
                return fit(img)

            yield _LazyFrame(convert, start, duration)
            start += duration
            index += 1


def _ends_with_gif_trailer(path: Path) -> bool:
    """A cut between two frames decodes cleanly; only the missing trailer (0x3B) tells."""
    with open(path, "rb") as fh:
        fh.seek(-1, 2)
        return fh.read(1) == b";"


def _video_frames(path: Path, fit) -> Iterator[_LazyFrame]:
    """Frames of a video through PyAV (FFmpeg), with their presentation times."""
    import av

    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        if environment_problem(exc, path) is not None:
            raise  # PyAV's errors are OSErrors too: `read` turns it into a ResourceError
        raise DecodeError(f"{path.name}: not a readable video ({_first_line(exc)})") from None
    with container:
        if not container.streams.video:
            raise DecodeError(f"{path.name}: the file has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # FFmpeg's own decoding threads, outside the GIL
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        previous = None
        try:
            for index, frame in enumerate(container.decode(stream)):
                start = frame.time if frame.time is not None else index / rate
                if previous is not None:
                    previous.duration = max(start - previous.start, 1e-6)
                    yield previous
                previous = _LazyFrame(lambda frame=frame: fit(frame), start)
        except av.FFmpegError as exc:
            raise DecodeError(f"{path.name}: video data is corrupt ({_first_line(exc)})") from None
        if previous is not None:
            last = frame.duration * frame.time_base if frame.duration and frame.time_base else 0
            previous.duration = float(last) or 1.0 / rate
            yield previous


def _folder_frames(path: Path, fit) -> Iterator[_LazyFrame]:
    """The still images of one folder, in natural order (frame2 before frame10)."""
    def natural(p: Path):
        parts = re.split(r"(\d+)", p.name)
        return [int(part) if part.isdigit() else part.lower() for part in parts]

    files = sorted((p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                    and p.suffix.lower() in FRAME_EXTENSIONS), key=natural)
    for file in files:
        def convert(file=file):
            try:
                with Image.open(file) as img:
                    img.load()
                    return fit(img)
            except (OSError, SyntaxError, ValueError) as exc:
                problem = environment_problem(exc, file)
                if problem is not None:
                    raise problem from None
                raise DecodeError(f"frame {file.name}: {_first_line(exc)}") from None

        yield _LazyFrame(convert)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

