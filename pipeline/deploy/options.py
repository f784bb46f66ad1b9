"""Options of `predict` and `export`, the two commands that reuse a run folder."""

from __future__ import annotations

from pipeline.config import Option
from pipeline.deploy.formats import FORMAT_NAMES
from pipeline.errors import ConfigError
from pipeline.plugins import plugin_names
from pipeline.settings import Settings, settings_class

# Where a run's input files are now, when they have moved: predict and export look them up alike.
MOVED_FILE_OPTIONS = (
    Option("weights", str, None, "where the run's backbone weights file is now, when it has "
           "moved (checked by sha256) [default: the path recorded in the run]", metavar="FILE"),
    Option("mean_file", str, None, "where the run's C3D mean cube is now, when it has moved "
           "(checked by sha256)", metavar="NPY"),
    Option("backbone", str, None, "where the run's KerasHub preset directory is now, when it "
           "has moved (checked by its weights' sha256 and its config.json) [default: the path "
           "recorded in the run, or the same folder beside the run folder]", metavar="DIR"),
    Option("plugin", plugin_names, (), "modules to import first, which register the run's "
           "backbone, reader or engine: the plugins its store was extracted with are imported "
           "only when named here (or installed as featcache.plugins entry points)",
           metavar="MODULE[,MODULE]"),
)

PREDICT_OPTIONS = (
    Option("run_dir", str, None, "run folder printed by fit-head or grid-search",
           metavar="RUN_DIR", aliases=("--run",)),
    Option("data", str, None, "folder, single file or CSV manifest of new inputs",
           metavar="PATH"),
    Option("out", str, None, "the CSV file to write, or an existing folder to write "
           "predictions-<data name>.csv into; an existing file is replaced only when it is a "
           "predictions CSV [default: RUN_DIR/predictions-<data name>.csv]", metavar="CSV"),
    Option("cache_dir", str, None, "folder where the new files' vectors are cached [default: "
           "RUN_DIR/predict]", metavar="DIR"),
    Option("batch_size", int, 32, "images (or clips) per backbone forward pass", minimum=1),
    Option("workers", int, None, "decoding threads or processes [default: one per core, at most "
           "32]", minimum=1),
    Option("progress", bool, True, "show a progress bar"),
    *MOVED_FILE_OPTIONS,
    Option("calibrate", bool, True, "apply the temperature fit-head fitted on validation "
           "(--no-calibrate: raw softmax)"),
    Option("tta", int, 0, "test-time augmentation: average each file's probabilities over its "
           "plain view and this many augmented views (0: off)", minimum=0, maximum=256),
    Option("augment", str, None, "the --tta views' recipe [default: the recipe of the run's "
           "training views, else flip,crop=0.7-1.0]", metavar="RECIPE"),
)


EXPORT_OPTIONS = (
    Option("run_dir", str, None, "run folder printed by fit-head (or a grid-search whose best "
           "model is the Keras head)",
           metavar="RUN_DIR", aliases=("--run",)),
    Option("format", str, "keras", "the artifact to write: a Keras model, or ONNX, OpenVINO IR, "
           "LiteRT or a TensorFlow SavedModel taking uint8 pixels (a scikit-learn grid-search "
           "winner: onnx only)", choices=FORMAT_NAMES),
    Option("out", str, None, "the artifact to write, ending in .keras, .onnx, .xml (with its "
           ".bin), .tflite, or a folder name for saved_model; its model.json (STEM.FORMAT.json) "
           "goes beside it. An existing artifact is replaced only when it holds exactly the "
           "files an earlier export recorded there [default: "
           "RUN_DIR/export/model.keras, or RUN_DIR/export/FORMAT/model.EXT]", metavar="PATH"),
    Option("check", bool, True, "load the artifact in its own runtime and compare it with "
           "predict on the run's files (max difference 1e-4, recorded in model.json)"),
    *MOVED_FILE_OPTIONS,
    Option("calibrate", bool, True, "keep the temperature fit-head fitted on validation in the "
           "model (--no-calibrate: raw softmax)"),
    Option("tta", int, 0, "refused when above 0: the exported model scores the pixels it is "
           "given once (use predict --tta)", minimum=0),
)


class _ExportRules(Settings):
    def validate(self) -> None:
        if self.tta:
            raise ConfigError(
                "export --tta: an exported model sees only pixels, while each test-time view "
                "is drawn from the file's id (sha256 of the seed, the id and the view), so the "
                "exported model cannot reproduce predict --tta; use predict --tta K, or export "
                "without --tta (the model scores the plain view)")

# The typed, frozen settings of `predict` and `export` (pipeline/settings.py).
PredictConfig = settings_class("PredictConfig", PREDICT_OPTIONS, section="predict",
                               command="predict")
ExportConfig = settings_class("ExportConfig", EXPORT_OPTIONS, section="export", command="export",
                              base=_ExportRules)
