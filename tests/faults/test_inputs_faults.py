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
