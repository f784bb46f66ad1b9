"""Fault-table rows: environment variables the tool reads (PIPELINE_JOURNAL_ROWS, the rows
extract journals at a time; PIPELINE_HUB_DOWNLOAD_SECONDS, how long a KerasHub preset's download
may take) set to values it cannot use. Each is read when it is used, never when a module is
imported, and a bad value is one `error:` line naming the variable; a command that does not
read it is not stopped by it. KERAS_BACKEND and keras.json, which Keras reads as it is imported,
need a process of their own: tests/faults/test_environment_faults.py.
"""

from conftest import register_tiny_trunk, write_images
from fault_case import Fault


def build(root):
    """Tiny images, the tiny trunk's weights and a store of them."""
    from pipeline.extract.run import run_extraction

    f = {"root": root, "pets": write_images(root / "pets", per_class=2, size=(24, 24)),
         "weights": register_tiny_trunk(root / "tiny.weights.h5")}
    f["store"] = run_extraction({"data": str(f["pets"]), "backbone": "tiny_trunk", "weights":
                                 str(f["weights"]), "cache_dir": str(root / "cache"),
                                 "progress": False}, echo=lambda *_: None).path
    return f


TINY = ["--backbone", "tiny_trunk", "--weights", "{weights}", "--no-progress"]


def _nothing_extracted(name):
    def check(files):
        assert not list((files["root"] / name).glob("*.h5")), "a store was written"
    return check


def _extract(cache: str):
    return ["extract", "--data", "{pets}", *TINY, "--cache-dir", "{root}/" + cache]


CASES = [
    Fault("env-journal-rows-not-a-number", _extract("c_abc"), "PIPELINE_JOURNAL_ROWS must be "
          "a whole number", after=_nothing_extracted("c_abc"),
          env={"PIPELINE_JOURNAL_ROWS": "abc"}),
    Fault("env-journal-rows-zero", _extract("c_zero"), "PIPELINE_JOURNAL_ROWS must be at least 1",
          after=_nothing_extracted("c_zero"), env={"PIPELINE_JOURNAL_ROWS": "0"}),
    Fault("env-journal-rows-unread-by-info", ["info", "{store}"], "", 0,
          env={"PIPELINE_JOURNAL_ROWS": "abc"}),
    Fault("env-hub-seconds-not-a-number",
          ["extract", "--data", "{pets}", "--backbone", "hf://nobody/no-such-preset",
           "--cache-dir", "{root}/c_hub"], "PIPELINE_HUB_DOWNLOAD_SECONDS must be a number",
          env={"PIPELINE_HUB_DOWNLOAD_SECONDS": "abc"}),
    Fault("env-hub-seconds-nan",
          ["extract", "--data", "{pets}", "--backbone", "hf://nobody/no-such-preset",
           "--cache-dir", "{root}/c_hub"], "PIPELINE_HUB_DOWNLOAD_SECONDS must be a finite",
          env={"PIPELINE_HUB_DOWNLOAD_SECONDS": "nan"}),
    Fault("env-hub-seconds-negative",
          ["extract", "--data", "{pets}", "--backbone", "hf://nobody/no-such-preset",
           "--cache-dir", "{root}/c_hub"], "PIPELINE_HUB_DOWNLOAD_SECONDS must be above 0",
          env={"PIPELINE_HUB_DOWNLOAD_SECONDS": "-5"}),
]
