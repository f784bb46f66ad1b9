"""Inputs that need a real fault of the machine: FIFOs (a read would block forever), a store
made from `.`, and how soon extract speaks (before TensorFlow is imported)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import register_tiny_trunk, write_images

REPO = Path(__file__).resolve().parents[2]


def _extract(argv, **kw):
    from run_pipeline import main

    return main(["extract", *argv])


@pytest.mark.parametrize("decode", ["threads", "processes"])
def test_a_fifo_in_a_manifest_is_a_failure_not_a_hang(tmp_path, capsys, decode):
    """Threads (prefetch.py) and processes (decode_pool.py) alike look before they open."""
    weights = register_tiny_trunk(tmp_path / "tiny.weights.h5")
    pets = write_images(tmp_path / "pets", per_class=2, size=(24, 24))
    os.mkfifo(pets / "cat" / "pipe.png")
    manifest = pets / "list.csv"
    manifest.write_text("path,label\n" + "".join(
        f"{c}/{c}_{i}.png,{c}\n" for c in ("cat", "dog") for i in range(2)) + "cat/pipe.png,cat\n")
    started = time.monotonic()
    code = _extract(["--data", str(manifest), "--backbone", "tiny_trunk", "--weights",
                     str(weights), "--cache-dir", str(tmp_path / "cache"), "--no-progress",
                     "--decode", decode, "--workers", "2"])
    assert time.monotonic() - started < 120
    assert code == 0, capsys.readouterr().err
    from pipeline.store.feature_store import open_store

    with open_store(next((tmp_path / "cache").glob("*.h5"))) as store:
        assert len(store) == 4
        reasons = dict(store.failures())
        assert "FIFO" in reasons["cat/pipe.png"], reasons


@pytest.mark.parametrize("kind", ["fifo", "fifo.csv"])
def test_data_given_as_a_fifo_is_refused(tmp_path, capsys, kind):
    pipe = tmp_path / kind
    os.mkfifo(pipe)
    assert _extract(["--data", str(pipe)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "FIFO" in err[0], err


def test_a_store_made_from_dot_is_named_after_the_folder(tmp_path, capsys, monkeypatch):
    weights = register_tiny_trunk(tmp_path / "tiny.weights.h5")
    pets = write_images(tmp_path / "pets", per_class=2, size=(24, 24))
    monkeypatch.chdir(pets)
    assert _extract(["--data", ".", "--backbone", "tiny_trunk", "--weights", str(weights),
                     "--no-progress"]) == 0
    store = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert store.name.startswith("pets-tiny_trunk-"), store.name
    # The default cache/ now lies inside the data folder: the next run is a cache hit on the
    # same two classes, not a third class `cache`.
    assert _extract(["--data", ".", "--backbone", "tiny_trunk", "--weights", str(weights),
                     "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "cache hit" in out, out


def test_a_bad_manifest_is_refused_before_tensorflow_is_imported(tmp_path):
    """The first stdout line (the file count) and any refusal of the inputs come before the
    backend is imported: a manifest climbing out with `..` is refused without loading
    TensorFlow or Keras, whatever the machine's load (what is imported, not how long it took)."""
    data = write_images(tmp_path / "pets", per_class=1, size=(24, 24))
    (data / "bad.csv").write_text("path,label\n../outside.png,cat\n")
    probe = ("import sys, runpy; sys.argv = ['run_pipeline.py', 'extract', '--data', "
             f"{str(data / 'bad.csv')!r}]\n"
             "from run_pipeline import main\n"
             "code = main(sys.argv[1:])\n"
             "heavy = sorted({'tensorflow', 'keras'} & set(sys.modules))\n"
             "print('loaded:' + ','.join(heavy), code)\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                          text=True, timeout=600)  # a hang fails here, not a slow machine
    assert done.stdout.strip().splitlines()[-1] == "loaded: 2", (done.stdout, done.stderr)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "outside" in errors[0], done.stderr


def test_the_file_count_is_printed_before_tensorflow_is_imported(tmp_path):
    data = write_images(tmp_path / "pets", per_class=2, size=(24, 24))
    probe = ("import sys\n"
             "import pipeline.extract.run as run\n"
             "real = run.run_extraction\n"
             "def echo(line):\n"
             "    print(('TF ' if 'tensorflow' in sys.modules else 'NO_TF ') + line, flush=True)\n"
             "    if 'file' in line: raise SystemExit(0)\n"
             f"real({{'data': {str(data)!r}, 'backbone': 'mobilenet', 'weights': 'none', "
             "'input_size': 32, 'progress': False}, echo=echo)\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                          text=True, timeout=180)
    first = done.stdout.strip().splitlines()[0]
    assert first.startswith("NO_TF ") and "4 file" in first, (done.stdout, done.stderr)


# A backbone whose own input is 20000 px square (as a preset's image converter may declare):
# refused by the memory bound before it is built, so its layers never matter.
WIDE_TRUNK_PLUGIN = '''
import keras
from pipeline.extract.backbones import BackboneSpec, register_backbone


def _wide(weights, input_shape):
    inputs = keras.Input(shape=tuple(input_shape))
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs))


register_backbone(BackboneSpec(
    name="wide_trunk", build=_wide, preprocess=lambda x: x / 255.0, preprocess_name="x / 255",
    input_shape=(20000, 20000, 3), notes="test-only trunk with a huge input"), overwrite=True)
'''


def _capped_extract(argv, plugin_dir: Path):
    """The CLI in a subprocess whose address space is capped at 8 GB, so a batch that does not
    fit fails there (never the machine) if it is not refused first."""
    import resource

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))

    env = dict(os.environ, PYTHONPATH=f"{plugin_dir}{os.pathsep}{REPO}", TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, str(REPO / "run_pipeline.py"), "extract", *argv,
                           "--no-progress"], capture_output=True, text=True, timeout=300,
                          cwd=REPO, env=env, preexec_fn=cap)


def _batch_beyond_memory_by_frames() -> int:
    """A --batch-size whose 1024-frame I3D clips need more than half the memory available,
    while the same batch of single 224 px images needs a thousandth of that."""
    from pipeline.extract.options import BATCH_MEMORY_SHARE, available_memory

    have = available_memory()
    if have is None:
        pytest.skip("the memory available cannot be told here")
    return int(BATCH_MEMORY_SHARE * have // (1024 * 224 * 224 * 3 * 4)) + 1


@pytest.mark.parametrize("case", ["i3d frames", "backbone's own size"])
def test_the_batch_memory_bound_counts_every_axis_before_decoding(tmp_path, case):
    (tmp_path / "wide_trunk_plugin.py").write_text(WIDE_TRUNK_PLUGIN)
    data = tmp_path / "clips"
    from PIL import Image

    for name in ("a/1.gif", "b/1.gif"):
        (data / name).parent.mkdir(parents=True)
        frames = [Image.new("RGB", (32, 32), (40 * i, 0, 0)) for i in range(4)]
        frames[0].save(data / name, save_all=True, append_images=frames[1:], duration=40)
    if case == "i3d frames":
        argv = ["--backbone", "i3d", "--frames", "1024", "--batch-size",
                str(_batch_beyond_memory_by_frames())]
    else:  # 32 inputs of 20000 x 20000 x 3 float32: 154 GB
        argv = ["--backbone", "wide_trunk", "--plugin", "wide_trunk_plugin", "--temporal-pool",
                "mean", "--frames", "2", "--batch-size", "32"]
    done = _capped_extract(["--data", str(data), "--weights", "none", "--cache-dir",
                            str(tmp_path / "cache"), *argv], tmp_path)
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "memory" in lines[0] and "--batch-size" in lines[0], lines[0]
    assert "to extract" not in done.stdout  # refused before any file was decoded
    assert not list((tmp_path / "cache").glob("*.h5"))
