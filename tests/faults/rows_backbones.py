"""Fault-table rows: what a backbone is built from. Plugin modules that cannot be imported
(a relative name, a module that raises or has a syntax error, one missing a dependency), weights
pickles nested without end or referring to themselves, and KerasHub preset directories whose
files are broken: each ends with one `error:` line naming the module or file, and nothing is
stored.

Pickles that would hang or exhaust memory on a regression run in processes of their own, with
timeouts (test_weights_faults.py); so do plugins a run folder names (test_plugin_faults.py).
"""

import sys

from conftest import register_tiny_trunk, write_images
from fault_case import Fault

import hostile_pickles
from pipeline.extract.engines import installed

PLUGINS = {
    "fc_row_plugin_raises": "raise RuntimeError('this plugin needs a licence server')\n",
    "fc_row_plugin_syntax": "def register(:\n    pass\n",
    "fc_row_plugin_needs": "import fc_row_missing_dependency\n",
}


def build(root):
    f = {"root": root, "weights": register_tiny_trunk(root / "tiny.weights.h5"),
         "pets": write_images(root / "pets", per_class=2, size=(24, 24))}
    plugins = root / "plugins"
    plugins.mkdir()
    for name, code in PLUGINS.items():
        (plugins / f"{name}.py").write_text(code)
    sys.path.append(str(plugins))  # as PYTHONPATH would: names no other module uses
    f["nested"] = hostile_pickles.nested(root / "nested.ckpt")
    f["cyclic"] = hostile_pickles.cyclic(root / "cyclic.ckpt")
    return f


def _no_store(cache):
    def check(files):
        folder = files["root"] / cache
        assert not folder.exists() or not list(folder.glob("*.h5")), list(folder.iterdir())
    return check


EXTRACT = ["extract", "--data", "{pets}", "--no-progress"]
TINY = [*EXTRACT, "--backbone", "tiny_trunk"]

CASES = [Fault(*row) for row in [
    # Plugins: one line naming the module and what to do.
    ("plugin-relative-name", [*EXTRACT, "--plugin", ".relative"], "not a module name"),
    ("plugin-raises-on-import", [*EXTRACT, "--plugin", "fc_row_plugin_raises"],
     "fc_row_plugin_raises' raised RuntimeError"),
    ("plugin-syntax-error", [*EXTRACT, "--plugin", "fc_row_plugin_syntax"],
     "fc_row_plugin_syntax.py:1"),
    ("plugin-missing-dependency", [*EXTRACT, "--plugin", "fc_row_plugin_needs"],
     "needs module 'fc_row_missing_dependency'"),
    # Weights pickles: refused by shape, without recursion, by any engine.
    ("weights-pickle-nested-200000-deep",
     [*TINY, "--weights", "{nested}", "--cache-dir", "{root}/c_nested"],
     "nested.ckpt nests dicts deeper", 2, _no_store("c_nested")),
    *([("weights-pickle-nested-openvino",
        [*TINY, "--weights", "{nested}", "--engine", "openvino", "--cache-dir", "{root}/c_ov"],
        "nested.ckpt nests dicts deeper", 2, _no_store("c_ov"))] if installed("openvino")
      else []),
    ("weights-pickle-cycle", [*TINY, "--weights", "{cyclic}", "--cache-dir", "{root}/c_cyc"],
     "cyclic.ckpt refers to one object from two places", 2, _no_store("c_cyc")),
]]
