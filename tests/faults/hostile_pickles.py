"""Hostile weights pickles, written opcode by opcode (each a few hundred bytes, or a few MB of
nesting): what a `.ckpt` found online could hold instead of a checkpoint.

Every one names only what the restricted unpickler allows (numpy's array constructor, dtypes,
dicts, strings), so each is refused for its shape, never for naming a forbidden function.
"""

from __future__ import annotations

import struct
from pathlib import Path

PROTO = b"\x80\x02"
RECONSTRUCT = b"cnumpy.core.multiarray\n_reconstruct\n"
NDARRAY = b"cnumpy\nndarray\n"
DTYPE_F8 = b"cnumpy\ndtype\nX\x02\x00\x00\x00f8\x89\x88\x87R"  # dtype('f8', False, True)


def _text(value: str) -> bytes:
    raw = value.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw  # BINUNICODE


def _int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)  # BININT


def shared_levels(path: Path, levels: int = 60) -> Path:
    """A "billion laughs": each level a dict whose two keys hold the one dict of the level
    below, so a walk that follows every reference visits 2**levels dicts."""
    body = PROTO + b"}q\x00"  # the innermost dict, memo 0
    for _ in range(levels):  # {a: memo 0, b: memo 0}, then memo 0 := this dict
        body += b"}(" + _text("a") + b"h\x00" + _text("b") + b"h\x00uq\x00"
    return _write(path, body + b".")


def cyclic(path: Path) -> Path:
    """{"params": d} where d holds itself under "self"."""
    body = PROTO + b"}" + _text("params") + b"}q\x00" + _text("self") + b"h\x00ss."
    return _write(path, body)


def nested(path: Path, levels: int = 200_000) -> Path:
    """Dicts nested `levels` deep: {"a": {"a": ... {}}}."""
    body = PROTO + b"}" + (_text("a") + b"}") * levels + b"s" * levels + b"."
    return _write(path, body)


def declared_arrays(path: Path, arrays: int = 3, elements: int = 10**8) -> Path:
    """{"params": {"a": ..., "b": ..., "c": ...}}, each an array constructed at `elements`
    float64s (numpy itself always constructs at 0 and sets the data after): 2.4 GB from a
    file of a few hundred bytes."""
    body = PROTO + b"}" + _text("params") + b"}("
    for i in range(arrays):
        body += _text(f"w{i}") + RECONSTRUCT + NDARRAY + _int(elements) + b"\x85" + DTYPE_F8 + \
            b"\x87R"
    return _write(path, body + b"us.")


def shared_data(path: Path, arrays: int = 400, elements: int = 125_000) -> Path:
    """{"params": {...}} of `arrays` float64 arrays that all take their data from one bytes
    object of the file (1 MB): 400 MB of arrays declared by a 1 MB file."""
    raw = b"\x00" * (elements * 8)
    body = PROTO + b"}" + _text("params") + b"}(" + b"B" + struct.pack("<I", len(raw)) + raw + \
        b"q\x010"  # BINBYTES, memo 1, POP
    for i in range(arrays):
        body += (_text(f"w{i}") + RECONSTRUCT + NDARRAY + _int(0) + b"\x85" + _text("b") +
                 b"\x87R" +  # _reconstruct(ndarray, (0,), "b")
                 b"(" + _int(1) + _int(elements) + b"\x85" + DTYPE_F8 + b"\x89h\x01tb")
    return _write(path, body + b"us.")


def _write(path: Path, body: bytes) -> Path:
    path.write_bytes(body)
    return path
