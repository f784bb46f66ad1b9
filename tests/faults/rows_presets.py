"""Fault-table rows: KerasHub preset directories with a broken file, and runs whose preset
directory moved. A preset is refused, naming the file at fault, before anything is extracted
(no store, no unfinished `.parts` folder, no Keras warnings before the line); a run whose
preset directory moved is found again beside the run folder, or with `--backbone DIR`.

Presets are tiny (a two-layer DINOv2 at 28 px with random weights) and written here with
`save_to_preset`, then edited as a careless or hostile hand would.
"""

import json
import shutil

from conftest import write_images
from fault_case import Fault

SIZE = 28


def _dinov2(seed=1, hidden=32):
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    return keras_hub.models.DINOV2Backbone(
        patch_size=14, num_layers=2, hidden_dim=hidden, num_heads=2, intermediate_dim=64,
        num_register_tokens=0, image_shape=(SIZE, SIZE, 3),
        position_embedding_shape=(SIZE, SIZE, 3))


def _preset(folder, hidden=32):
    import keras_hub

    _dinov2(hidden=hidden).save_to_preset(str(folder))
    keras_hub.layers.DINOV2ImageConverter(image_size=(SIZE, SIZE), scale=1 / 255.0) \
        .save_to_preset(str(folder))
    return folder


def _edit(folder, name, change):
    path = folder / name
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def _converter_size(size):
    def change(config):
        config["config"]["image_size"] = size
        return config
    return change


def build(root):
    f = {"root": root, "pets": write_images(root / "pets", per_class=2, size=(SIZE, SIZE))}
    good = _preset(root / "presets" / "good")
    for name in ("unregistered", "zero_size", "size_56", "config_garbage", "converter_garbage",
                 "foreign_weights"):
        f[name] = root / "presets" / name
        shutil.copytree(good, f[name])
    _edit(f["unregistered"], "config.json", lambda c: {**c, "registered_name": "os>system"})
    _edit(f["zero_size"], "image_converter.json", _converter_size([0, 0]))
    _edit(f["size_56"], "image_converter.json", _converter_size([56, 56]))
    (f["config_garbage"] / "config.json").write_text("{ not json")
    (f["converter_garbage"] / "image_converter.json").write_text("{ not json")
    _preset(root / "presets" / "wider", hidden=48)  # weights of another architecture
    shutil.copy(root / "presets" / "wider" / "model.weights.h5", f["foreign_weights"])
    _moved_preset_runs(root, f)
    return f


def _moved_preset_runs(root, f):
    """A fit-head run on a preset, then its project folder (preset, data, store, run) moved
    elsewhere, and a copy of the run folder alone somewhere the preset is not."""
    from pipeline.extract.run import run_extraction
    from pipeline.fit.run import fit_head

    project = root / "project"
    preset = _preset(project / "presets" / "dino_tiny")
    data = write_images(project / "pets", per_class=4, size=(SIZE, SIZE))
    store = run_extraction({"data": str(data), "backbone": str(preset), "engine": "tensorflow",
                            "cache_dir": str(project / "cache"), "progress": False},
                           echo=lambda *_: None)
    run = fit_head(store, {"epochs": 1, "hidden_units": (4,), "progress": False,
                           "learning_curve": False, "test_fraction": 0.0,
                           "calibration_fraction": 0.0},
                   out_dir=project / "runs", echo=lambda *_: None)
    moved = root / "moved_project"
    project.rename(moved)
    f["moved_run"] = moved / "runs" / run.name
    f["moved_preset"] = moved / "presets" / "dino_tiny"
    f["moved_data"] = moved / "pets"
    f["lone_run"] = root / "elsewhere" / run.name
    shutil.copytree(f["moved_run"], f["lone_run"])


def _nothing_left(cache):
    """No store and no unfinished `.parts` folder (nor any other file) in the cache."""
    def check(files):
        folder = files["root"] / cache
        left = sorted(p.name for p in folder.rglob("*")) if folder.exists() else []
        assert not [n for n in left if n.endswith((".h5", ".parts"))], left
    return check


def _extract(preset, cache):
    return ["extract", "--data", "{pets}", "--backbone", "{%s}" % preset, "--engine",
            "tensorflow", "--cache-dir", "{root}/%s" % cache, "--no-progress"]


def _predict(run, *extra):
    return ["predict", "--run", "{%s}" % run, "--data", "{moved_data}", "--out",
            "{root}/%s.csv" % run, "--no-progress", *extra]


CASES = [Fault(*row) for row in [
    ("preset-config-names-unregistered-class", _extract("unregistered", "c_unreg"),
     "'os>system'", 2, _nothing_left("c_unreg")),
    ("preset-converter-size-zero", _extract("zero_size", "c_zero"), "image_size [0, 0]", 2,
     _nothing_left("c_zero")),
    ("preset-converter-size-contradicts-backbone", _extract("size_56", "c_56"),
     "takes 28x28 images only", 2, _nothing_left("c_56")),
    ("preset-config-not-json", _extract("config_garbage", "c_cfg"),
     "config.json is not valid JSON", 2, _nothing_left("c_cfg")),
    ("preset-converter-not-json", _extract("converter_garbage", "c_conv"),
     "image_converter.json is not valid JSON", 2, _nothing_left("c_conv")),
    ("preset-weights-of-another-architecture", _extract("foreign_weights", "c_foreign"),
     "do not fit the model its config.json describes", 2, _nothing_left("c_foreign")),
    # A run whose preset directory moved: found beside the run, or named with --backbone.
    ("predict-preset-moved-with-the-run", _predict("moved_run"), "", 0),
    ("predict-preset-directory-gone", _predict("lone_run"), "--backbone DIR"),
    ("predict-preset-directory-given", _predict("lone_run", "--backbone", "{moved_preset}"),
     "", 0),
]]
