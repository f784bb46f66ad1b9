"""Fault-table rows: what extract and predict read. The tool's own output folders are never
collected as data, counts a user sets are bounded before any model is built, manifests with bad
rows are refused naming the row, and files that cannot be read (a PNG cut short, symlink loops,
dangling symlinks, /dev/null) are recorded or refused, never silently skipped or hung on.

Rows that must extract use `tiny_trunk` (tests/conftest.py) at 32 px: real vectors, in seconds.
"""

import struct
import zlib

import numpy as np
from PIL import Image

from conftest import register_tiny_trunk, write_images
from fault_case import Fault


def truncated_png(path, side=9000, rows=4):
    """A PNG whose header declares side x side pixels but whose data holds only `rows` rows."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    scanlines = b"".join(b"\x00" + bytes([200]) * (side * 3) for _ in range(rows))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" +
                     chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)) +
                     chunk(b"IDAT", zlib.compress(scanlines)) + chunk(b"IEND", b""))
    return path


def _store_of(files, cache):
    from pipeline.store.feature_store import open_store

    stores = sorted((files["root"] / cache).glob("*.h5"))
    assert len(stores) == 1, stores
    return open_store(stores[0])


def build(root):
    f = {"root": root, "weights": register_tiny_trunk(root / "tiny.weights.h5")}
    # A data folder the tool has written into: its default cache with a store and a run's
    # plots, an audit folder, and a folder carrying the tool's ownership marker (every folder
    # of plots the tool writes carries it).
    inside = write_images(root / "inside", per_class=2, size=(24, 24))
    for own in ("cache", "cache/runs/head-1", "audit-1", "marked"):
        (inside / own).mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(inside / "cache/runs/head-1/curve.png")
    (inside / "cache/inside-tiny_trunk-pooled-0123456789.h5").write_bytes(b"")
    Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(inside / "audit-1/thumb.png")
    (inside / "audit-1/report.html").write_text("<html></html>")
    (inside / "audit-1/summary.json").write_text("{}")
    for own in ("cache/runs/head-1", "audit-1", "marked"):
        (inside / own / ".featcache-output").write_text("{}")
    Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(inside / "marked/plot.png")
    f["inside"] = inside
    # A class folder holding a PNG cut short, a symlink loop and a dangling symlink.
    odd = write_images(root / "odd", per_class=2, size=(24, 24))
    truncated_png(odd / "cat" / "huge.png")
    (odd / "dog" / "loop_a.png").symlink_to("loop_b.png")
    (odd / "dog" / "loop_b.png").symlink_to("loop_a.png")
    (odd / "dog" / "gone.png").symlink_to(root / "nowhere.png")
    f["odd"] = odd
    # Manifests, each with one bad row (row 3: the header is row 1).
    pets = write_images(root / "pets", per_class=2, size=(24, 24))
    good = "cat/cat_0.png,cat\n"
    f["latin1_csv"] = pets / "latin1.csv"
    f["latin1_csv"].write_bytes(("path,label\n" + good + "cat/cat_1.png,chat_\xe9t\xe9\n")
                                .encode("latin-1"))
    f["long_path_csv"] = pets / "long_path.csv"
    f["long_path_csv"].write_text("path,label\n" + good + "x" * 5000 + ".png,cat\n")
    f["huge_field_csv"] = pets / "huge_field.csv"
    f["huge_field_csv"].write_text("path,label\n" + good + "cat/cat_1.png," + "c" * 200_000 + "\n")
    f["empty_path_csv"] = pets / "empty_path.csv"
    f["empty_path_csv"].write_text("path,label\n" + good + ",dog\n")
    f["blank_label_csv"] = pets / "blank_label.csv"
    f["blank_label_csv"].write_text("path,label\n" + good + "dog/dog_0.png,\n")
    f["pets"] = pets
    # Predict on data where nothing decodes: a run trained on the tiny trunk's vectors.
    from pipeline.extract.run import run_extraction
    from pipeline.fit.run import fit_head

    train = write_images(root / "train_pets", per_class=8, size=(24, 24))
    store = run_extraction({"data": str(train), "backbone": "tiny_trunk", "weights":
                            str(f["weights"]), "cache_dir": str(root / "train_cache"),
                            "progress": False}, echo=lambda *_: None)
    f["run"] = fit_head(store, {"epochs": 1, "progress": False},
                        out_dir=root / "runs", echo=lambda *_: None)
    f["gifs"] = root / "gifs"  # clips for frame pooling (--temporal-pool), 4 frames each
    rng = np.random.default_rng(0)
    for name in ("cat/a.gif", "cat/b.gif", "dog/a.gif", "dog/b.gif"):
        frames = [Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
                  for _ in range(4)]
        (f["gifs"] / name).parent.mkdir(parents=True, exist_ok=True)
        frames[0].save(f["gifs"] / name, save_all=True, append_images=frames[1:], duration=40)
    broken = root / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"not a picture")
    (broken / "b.jpg").write_bytes(b"")
    f["broken"] = broken
    return f


TINY = ["--backbone", "tiny_trunk", "--weights", "{weights}", "--no-progress"]


def _nothing_stored(cache):
    def check(files):
        assert not list((files["root"] / cache).glob("*.h5")), cache
    return check


def _nothing_predicted(files):
    assert not list(files["run"].glob("predictions-*")), list(files["run"].iterdir())
    assert not list(files["run"].glob("predict/*.h5"))


def _only_the_classes(files):
    with _store_of(files, "c_inside") as store:
        assert list(store.class_names) == ["cat", "dog"], store.class_names
        ids = list(store.column("ids"))
        assert len(ids) == 4 and not any("cache" in i or "audit" in i or "marked" in i
                                         for i in ids), ids


def _failures_listed(*names):
    def check(files):
        with _store_of(files, "c_odd") as store:
            reasons = dict(store.failures())
            for name in names:
                assert name in reasons, reasons
            assert len(store) == 4  # the four good images still extracted
    return check


CASES = [Fault(*row) for row in [
    # The tool's own outputs inside the data folder are never data.
    ("extract-own-output-folders-not-collected",
     ["extract", "--data", "{inside}", *TINY, "--cache-dir", "{root}/c_inside"], "", 0,
     _only_the_classes),
    # Files that cannot be read are listed as failures with their reason.
    ("extract-truncated-png-recorded",
     ["extract", "--data", "{odd}", *TINY, "--cache-dir", "{root}/c_odd"], "", 0,
     _failures_listed("cat/huge.png", "dog/loop_a.png", "dog/loop_b.png", "dog/gone.png")),
    ("extract-data-dev-null", ["extract", "--data", "/dev/null"], "not a folder"),
    # Counts a user sets are bounded before any model is built.
    ("extract-fps-huge", ["extract", "--data", "{pets}", "--fps", "1e9"], "--fps"),
    ("extract-input-size-huge", ["extract", "--data", "{pets}", "--input-size", "100000"],
     "--input-size"),
    ("extract-batch-size-huge", ["extract", "--data", "{pets}", "--batch-size", "100000000"],
     "--batch-size"),
    ("extract-batch-size-float-huge", ["extract", "--data", "{pets}", "--batch-size", "1e8"],
     "--batch-size"),
    ("extract-batch-times-size-over-memory",
     ["extract", "--data", "{pets}", "--batch-size", "4096", "--input-size", "4096"], "memory"),
    # --fps resamples frames by time: it must be above 0 for frame pooling as for clips.
    ("extract-fps-zero-frame-pooling",
     ["extract", "--data", "{gifs}", *TINY, "--temporal-pool", "mean", "--frames", "2",
      "--fps", "0", "--cache-dir", "{root}/c_fps"], "--fps", 2, _nothing_stored("c_fps")),
    ("extract-fps-negative-frame-pooling",
     ["extract", "--data", "{gifs}", *TINY, "--temporal-pool", "mean", "--frames", "2",
      "--fps", "-5", "--cache-dir", "{root}/c_fps"], "--fps", 2, _nothing_stored("c_fps")),
    # A recipe that cannot be drawn is refused before the plain store is built.
    ("extract-views-tjitter-over-int64",
     ["extract", "--data", "{gifs}", *TINY, "--temporal-pool", "mean", "--frames", "2",
      "--views", "1", "--augment", "tjitter=99999999999999999999", "--cache-dir",
      "{root}/c_tjitter"], "tjitter", 2, _nothing_stored("c_tjitter")),
    ("predict-tta-tjitter-over-int64",
     ["predict", "--run", "{run}", "--data", "{pets}", "--tta", "1", "--augment",
      "tjitter=99999999999999999999", "--no-progress"], "tjitter", 2, _nothing_predicted),
    ("extract-frames-huge", ["extract", "--data", "{pets}", "--frames", "100000000"],
     "--frames"),
    ("extract-stride-huge", ["extract", "--data", "{pets}", "--stride", "100000000"],
     "--stride"),
    ("extract-num-clips-huge", ["extract", "--data", "{pets}", "--num-clips", "100000000"],
     "--num-clips"),
    ("extract-workers-huge", ["extract", "--data", "{pets}", "--workers", "100000"],
     "--workers"),
    # Manifests: one clear error naming the row and the fix.
    ("extract-manifest-latin1", ["extract", "--data", "{latin1_csv}"], ":3: the manifest is not UTF-8"),
    ("extract-manifest-path-5000-chars", ["extract", "--data", "{long_path_csv}"], ":3:"),
    ("extract-manifest-field-200k-chars", ["extract", "--data", "{huge_field_csv}"], ":3:"),
    ("extract-manifest-empty-path", ["extract", "--data", "{empty_path_csv}"], ":3: empty path"),
    ("extract-manifest-blank-label", ["extract", "--data", "{blank_label_csv}"],
     ":3: empty label"),
    # predict agrees with extract on data where nothing decodes.
    ("predict-nothing-decodes", ["predict", "--run", "{run}", "--data", "{broken}",
                                 "--no-progress"], "could be decoded"),
]]
