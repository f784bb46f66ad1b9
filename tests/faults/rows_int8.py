"""Fault-table rows: `--precision int8` settings out of range, and int8 vectors the guard refuses
with `--int8-refusal error` (one line with the fix, and no store, no model file written)."""

from conftest import write_images
from fault_case import Fault

from tests.extract.guard_models import register_spread_backbone


def build(root):
    """Tiny photos and the test trunk whose int8 vectors lose most of their signal."""
    return {"root": root, "name": register_spread_backbone(),
            "images": write_images(root / "flowers", per_class=6, size=(40, 40))}


def _nothing_written(files):
    cache = files["root"] / "cache"
    written = sorted(p.name for p in cache.rglob("*") if p.is_file()) if cache.exists() else []
    assert not [n for n in written if n.endswith((".h5", ".xml", ".bin"))], written


_INT8 = ["extract", "--data", "{images}", "--backbone", "{name}", "--weights", "none",
         "--engine", "openvino", "--precision", "int8", "--calibration-size", "8",
         "--cache-dir", "{root}/cache", "--no-progress"]

CASES = [Fault(*row) for row in [
    ("extract-int8-min-cosine-above-one", [*_INT8, "--int8-min-cosine", "1.5"],
     "--int8-min-cosine", 2, _nothing_written),
    ("extract-int8-min-cosine-negative", [*_INT8, "--int8-min-cosine", "-0.1"],
     "--int8-min-cosine", 2, _nothing_written),
    ("extract-int8-refusal-unknown", [*_INT8, "--int8-refusal", "warn"], "--int8-refusal"),
    ("extract-int8-refused-as-error", [*_INT8, "--int8-refusal", "error"],
     "--precision float32", 2, _nothing_written),
]]
