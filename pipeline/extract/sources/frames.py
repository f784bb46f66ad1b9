"""Frame timelines of clip files: animated GIFs, videos (PyAV) and folders of frames.

Each decoder yields `LazyFrame`s (start and duration in seconds where the file has them), so a
frame is converted to the model's size only when a clip needs it.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from pipeline.errors import DecodeError
from pipeline.extract.sources.base import environment_problem
from pipeline.extract.sources.discover import FRAME_EXTENSIONS

# Browsers show GIF frames with a delay of 10 ms or less (or none) for 100 ms; so do we.
GIF_DEFAULT_DURATION = 0.1


class LazyFrame:
    """One decoded frame, converted to the model's size only if a clip asks for it."""

    __slots__ = ("_convert", "_array", "start", "duration")

    def __init__(self, convert, start=None, duration=None):
        self._convert, self._array = convert, None
        self.start, self.duration = start, duration

    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = self._convert()
        return self._array


def gif_frames(path: Path, fit) -> Iterator[LazyFrame]:
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

            yield LazyFrame(convert, start, duration)
            start += duration
            index += 1


def _ends_with_gif_trailer(path: Path) -> bool:
    """A cut between two frames decodes cleanly; only the missing trailer (0x3B) tells."""
    with open(path, "rb") as fh:
        fh.seek(-1, 2)
        return fh.read(1) == b";"


def video_frames(path: Path, fit) -> Iterator[LazyFrame]:
    """Frames of a video through PyAV (FFmpeg), with their presentation times."""
    import av

    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        if environment_problem(exc, path) is not None:
            raise  # PyAV's errors are OSErrors too: `read` turns it into a ResourceError
        raise DecodeError(f"{path.name}: not a readable video ({first_line(exc)})") from None
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
                previous = LazyFrame(lambda frame=frame: fit(frame), start)
        except av.FFmpegError as exc:
            raise DecodeError(f"{path.name}: video data is corrupt ({first_line(exc)})") from None
        if previous is not None:
            last = frame.duration * frame.time_base if frame.duration and frame.time_base else 0
            previous.duration = float(last) or 1.0 / rate
            yield previous


def video_packet_count(path: Path) -> int | None:
    """The video stream's packets with data, read without decoding: the frame count of
    nearly every file, cheaply. None when the file cannot tell (the decoder then counts).
    Callers check it against the frames decoded: a packet may hold no frame, or two."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            return sum(1 for packet in container.demux(stream) if packet.size)
    except (av.FFmpegError, OSError):
        return None  # decoding reports what is wrong, with the file's name


def folder_frames(path: Path, fit) -> Iterator[LazyFrame]:
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
                raise DecodeError(f"frame {file.name}: {first_line(exc)}") from None

        yield LazyFrame(convert)


def first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

