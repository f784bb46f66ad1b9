"""Reusing a run folder: `predict` on new files, `export` one self-contained artifact (a Keras
model, ONNX, OpenVINO IR, LiteRT or a SavedModel; pipeline/deploy/formats.py).

    from pipeline.deploy import predict, export_model
    csv_path = predict("cache/runs/<run>", "new_photos/")

Both re-create stage one exactly as the run's store was made (same backbone, weights checked by
sha256, same preprocessing) and then apply the run's head or best model.
"""

from __future__ import annotations

from pipeline.deploy.options import EXPORT_OPTIONS, PREDICT_OPTIONS


def __getattr__(name):
    # Lazy, so reading the option tables loads neither h5py nor Keras.
    if name == "predict":
        from pipeline.deploy.prediction import predict

        return predict
    if name == "export_model":
        from pipeline.deploy.export import export_model

        return export_model
    raise AttributeError(f"module 'pipeline.deploy' has no attribute {name!r}")


__all__ = ["EXPORT_OPTIONS", "PREDICT_OPTIONS", "predict", "export_model"]
