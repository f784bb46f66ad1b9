"""`run_pipeline.py export`: one deployable artifact (Keras, ONNX, OpenVINO IR, LiteRT, SavedModel),
raw RGB in, class probabilities out, checked against predict in its own runtime."""

from __future__ import annotations

from pipeline.config import add_options
from pipeline.deploy.options import EXPORT_OPTIONS, ExportConfig
from pipeline.errors import ConfigError

HELP = ("write one artifact (preprocessing + frozen backbone + head) serving raw decoded RGB: "
        "Keras, ONNX, OpenVINO IR, LiteRT or SavedModel, parity-checked against predict")


def add_arguments(parser) -> None:
    add_options(parser, EXPORT_OPTIONS)


def run(args) -> str:
    from pipeline.deploy.export import export_model  # lazy: h5py; the CLI starts without it

    cfg = ExportConfig.from_cli(args)
    if not cfg.run_dir:
        raise ConfigError("export needs --run RUN_DIR")
    return str(export_model(cfg.run_dir, cfg))
