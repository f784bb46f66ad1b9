"""`--weights imagenet` with no way to download: one `error:` line that points to the page saying
where each backbone's weights files come from, before the backbone is built or a download tried.

The download host is replaced by a name under `.invalid` (a top-level domain that never
resolves), and KERAS_HOME by an empty folder, so the test is offline on every machine.
"""

import os
import subprocess
import sys
from pathlib import Path

from conftest import write_images

ROOT = Path(__file__).resolve().parents[2]

_RUN = """
import sys
import pipeline.extract.backbones.imagenet_download as download
download.DOWNLOAD_HOST = "weights.invalid"
from run_pipeline import main
code = main(sys.argv[1:])
print("exit", code)
"""


def _extract(tmp_path, *args):
    env = dict(os.environ, KERAS_HOME=str(tmp_path / "keras_home"), PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", _RUN, "extract", "--no-progress", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_imagenet_offline_fails_before_the_build_with_the_weights_page(tmp_path):
    write_images(tmp_path / "photos", classes=("cat", "dog"), per_class=2, size=(24, 24))
    done = _extract(tmp_path, "--data", "photos", "--backbone", "resnet50",
                    "--weights", "imagenet", "--cache-dir", "cache")
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert "exit 2" in done.stdout, (done.stdout, done.stderr[-800:])
    assert "Downloading data from" not in done.stdout  # Keras' download was never started
    assert len(errors) == 1 and "Traceback" not in done.stderr
    assert "docs/weights.md" in errors[0] and "--weights" in errors[0]
    assert not (tmp_path / "cache").exists()  # nothing was written


def test_a_weights_file_in_keras_cache_is_still_used_offline(tmp_path, monkeypatch):
    """A file Keras downloaded earlier (in KERAS_HOME/models) may serve the run: no fast refusal."""
    from pipeline.extract.backbones import imagenet_download

    models = tmp_path / "keras_home" / "models"
    models.mkdir(parents=True)
    (models / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5").write_bytes(b"x")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    assert imagenet_download.cached_weights_file("resnet50") is not None
    assert imagenet_download.cached_weights_file("vgg19") is None
