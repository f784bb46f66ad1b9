"""Commands say only their own lines, as a user running them in a terminal sees them: a preset
whose weights belong to another architecture is refused in one `error:` line with no Keras
warning before it, and an ONNX export prints no TensorFlow deprecation notices.

Each runs the CLI in a process of its own: warnings raised in this process would be collected
by pytest instead of reaching standard error.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import write_images  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SIZE = 28


def _cli(*argv, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, str(ROOT / "run_pipeline.py"), *argv], env=env,
                          capture_output=True, text=True, timeout=300, cwd=cwd)


def test_a_preset_with_another_architectures_weights_is_one_line(tmp_path):
    import keras
    import keras_hub

    keras.utils.set_random_seed(3)
    vision = keras_hub.models.SigLIPVisionEncoder(
        patch_size=14, hidden_dim=32, num_layers=2, num_heads=2, intermediate_dim=64,
        image_shape=(SIZE, SIZE, 3))
    text = keras_hub.models.SigLIPTextEncoder(
        vocabulary_size=64, embedding_dim=32, hidden_dim=32, num_layers=1, num_heads=2,
        intermediate_dim=64, sequence_length=8)
    keras_hub.models.SigLIPBackbone(vision, text).save_to_preset(str(tmp_path / "siglip"))
    keras_hub.models.DINOV2Backbone(
        patch_size=14, num_layers=2, hidden_dim=32, num_heads=2, intermediate_dim=64,
        image_shape=(SIZE, SIZE, 3), position_embedding_shape=(SIZE, SIZE, 3)) \
        .save_to_preset(str(tmp_path / "dino"))
    keras_hub.layers.DINOV2ImageConverter(image_size=(SIZE, SIZE), scale=1 / 255.0) \
        .save_to_preset(str(tmp_path / "dino"))
    shutil.copy(tmp_path / "siglip" / "model.weights.h5", tmp_path / "dino")
    data = write_images(tmp_path / "pets", per_class=1, size=(SIZE, SIZE))
    proc = _cli("extract", "--data", str(data), "--backbone", str(tmp_path / "dino"),
                "--engine", "tensorflow", "--cache-dir", str(tmp_path / "cache"),
                "--no-progress", cwd=tmp_path)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(err) == 1 and err[0].startswith("error: "), proc.stderr[-3000:]
    assert "do not fit the model its config.json describes" in err[0]
    assert not list((tmp_path / "cache").rglob("*.h5"))


def test_an_onnx_export_prints_no_tensorflow_deprecation_notices(tmp_path):
    from pipeline.extract.run import run_extraction
    from pipeline.fit.run import fit_head

    data = write_images(tmp_path / "pets", per_class=4, size=(32, 32))
    store = run_extraction({"data": str(data), "backbone": "mobilenet", "weights": "none",
                            "input_size": 32, "engine": "tensorflow",
                            "cache_dir": str(tmp_path / "cache"), "progress": False},
                           echo=lambda *_: None)
    run = fit_head(store, {"epochs": 1, "hidden_units": (4,), "progress": False,
                           "learning_curve": False, "test_fraction": 0.0,
                           "calibration_fraction": 0.0},
                   out_dir=tmp_path / "runs", echo=lambda *_: None)
    out = tmp_path / "exported" / "model.onnx"
    proc = _cli("export", "--run", str(run), "--format", "onnx", "--out", str(out),
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.is_file()
    assert "deprecated" not in proc.stderr and "WARNING" not in proc.stderr, proc.stderr[-3000:]
