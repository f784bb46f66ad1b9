"""Real faults of the machine around the feature store: a disk that fills while extract writes
its journal or assembles the store (a small tmpfs), and a read-only cache (a read-only bind
mount). Each needs root and a working `mount`; without them the tests skip and say why. Every
mount is undone, whatever the test does.

Extract runs in a subprocess here, so a crash of the HDF5 library (a segfault) fails the test
instead of killing pytest.
"""

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import write_images

REPO = Path(__file__).resolve().parents[2]

# A real Keras trunk whose vectors are big (32x32x16 float32 = 64 KiB per image), so a few
# images fill a disk of a few MiB. Imported by extract's --plugin in each subprocess.
BIG_TRUNK_PLUGIN = '''
import keras
from keras.applications import resnet50
from pipeline.extract.backbones import BackboneSpec, register_backbone


def _big(weights, input_shape):
    inputs = keras.Input(shape=tuple(input_shape))
    x = keras.layers.Conv2D(16, 3, padding="same", name="big_conv")(inputs)
    return keras.Model(inputs, keras.layers.ReLU(name="pool5")(x))


register_backbone(BackboneSpec(
    name="big_trunk", build=_big, preprocess=resnet50.preprocess_input,
    preprocess_name="keras.applications.resnet50.preprocess_input",
    input_shape=(32, 32, 3), notes="test-only trunk with big vectors"), overwrite=True)
'''
N_IMAGES = 24  # 24 x 64 KiB = 1.5 MiB of vectors: the journal fits in 2 MiB, journal + store not


def _mount(*args):
    return subprocess.run(["mount", *args], capture_output=True, text=True)


def _unmount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.fixture
def mounts():
    """Mounts made by a test (tmpfs or read-only binds), all undone afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs or a read-only bind mount")
    made: list[Path] = []

    def mount(*args, target: Path):
        target.mkdir(parents=True, exist_ok=True)
        done = _mount(*args, str(target))
        if done.returncode != 0:
            pytest.skip(f"mount is not allowed here: {done.stderr.strip()}")
        made.append(target)
        return target

    try:
        yield mount
    finally:
        for target in reversed(made):
            _unmount(target)


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plugin")
    (folder / "big_trunk_plugin.py").write_text(BIG_TRUNK_PLUGIN)
    write_images(folder / "data", per_class=N_IMAGES // 2, size=(32, 32))
    return folder


def _extract(plugin_dir: Path, cache: Path, journal_rows: int = 256, *more: str):
    env = dict(os.environ, PYTHONPATH=f"{plugin_dir}{os.pathsep}{REPO}",
               PIPELINE_JOURNAL_ROWS=str(journal_rows), TF_CPP_MIN_LOG_LEVEL="2")
    argv = [sys.executable, str(REPO / "run_pipeline.py"), "extract", "--data",
            str(plugin_dir / "data"), "--backbone", "big_trunk", "--weights", "none",
            "--layer", "pool5", "--input-size", "32", "--batch-size", "4", "--decode",
            "threads", "--cache-dir", str(cache), "--plugin", "big_trunk_plugin",
            "--no-progress", *more]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=REPO, env=env)


def _one_error_line(done) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and done.stderr.strip().splitlines()[-1] == errors[0], done.stderr
    return errors[0]


def _store_of(done) -> Path:
    assert done.returncode == 0, done.stderr[-3000:]
    return Path(done.stdout.strip().splitlines()[-1])


def _contents(path: Path):
    with h5py.File(path, "r") as fh:
        return fh["features"][:], [i.decode() for i in fh["ids"][:]], fh["labels"][:]


@pytest.fixture(scope="module")
def uninterrupted(plugin_dir, tmp_path_factory):
    """The store an extract that never met a full disk makes."""
    return _contents(_store_of(_extract(plugin_dir, tmp_path_factory.mktemp("whole"))))


def _same_store(path: Path, expected) -> None:
    features, ids, labels = _contents(path)
    assert ids == expected[1]
    np.testing.assert_array_equal(labels, expected[2])
    np.testing.assert_allclose(features, expected[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("where, size, journal_rows", [
    ("assembly", "2m", 256),  # the journal fits; the store being assembled beside it does not
    ("journal", "1m", 4),     # part files of 4 images fill the disk mid-run
])
def test_a_full_disk_is_one_error_and_the_same_command_resumes(
        mounts, plugin_dir, uninterrupted, tmp_path, where, size, journal_rows):
    disk = mounts("-t", "tmpfs", "-o", f"size={size}", "tmpfs", target=tmp_path / "disk")
    cache = disk / "cache"
    line = _one_error_line(_extract(plugin_dir, cache, journal_rows))
    assert "space" in line and str(cache) in line and "re-run" in line, line
    assert not list(cache.glob("*.lock")) and not list(cache.glob("*.tmp-*")), \
        list(cache.iterdir())
    assert not list(cache.glob("*.h5"))
    parts = list(cache.glob(".*.parts/part-*.h5"))
    if where == "assembly":
        assert len(parts) >= 1  # the finished work is kept for the next run

    assert _mount("-o", "remount,size=16m", str(disk)).returncode == 0
    again = _extract(plugin_dir, cache, journal_rows)
    _same_store(_store_of(again), uninterrupted)
    if where == "assembly":
        assert f"of {N_IMAGES} file(s) to extract" not in again.stdout, again.stdout


VIEWS = ("--views", "2", "--augment", "flip")  # views store: 3 x 1.5 MiB, its journal 3 MiB


@pytest.fixture(scope="module")
def uninterrupted_views(plugin_dir, tmp_path_factory):
    return _contents(_store_of(_extract(plugin_dir, tmp_path_factory.mktemp("views"), 256,
                                        *VIEWS)))


@pytest.mark.parametrize("where, size", [
    ("views store", "6m"),   # the plain store and the views' journal fit; the views store not
    ("views journal", "4m"),  # the plain store fits; the views' part files fill the disk
])
def test_a_full_disk_while_views_are_written_is_one_error_and_the_same_command_resumes(
        mounts, plugin_dir, uninterrupted_views, tmp_path, where, size):
    disk = mounts("-t", "tmpfs", "-o", f"size={size}", "tmpfs", target=tmp_path / "disk")
    cache = disk / "cache"
    line = _one_error_line(_extract(plugin_dir, cache, 4, *VIEWS))
    assert "space" in line and str(cache) in line and "re-run" in line, line
    assert not list(cache.glob("*.lock")) and not list(cache.glob("*.tmp-*")), \
        list(cache.iterdir())
    assert len(list(cache.glob("*.h5"))) == 1  # the plain store, complete
    kept = list(cache.glob(".*-views2-*.parts/part-*.h5"))
    if where == "views store":
        assert len(kept) >= 1  # the finished views are kept for the next run

    assert _mount("-o", "remount,size=32m", str(disk)).returncode == 0
    again = _extract(plugin_dir, cache, 4, *VIEWS)
    _same_store(_store_of(again), uninterrupted_views)
    if where == "views store":
        assert "views: 0 new view(s)" in again.stdout, again.stdout
    assert not list(cache.glob(".*.parts"))


def test_a_read_only_cache_serves_its_hits_and_names_cache_dir_on_a_miss(
        mounts, tmp_path, capsys):
    from conftest import register_tiny_trunk
    from run_pipeline import main

    weights = register_tiny_trunk(tmp_path / "tiny.weights.h5", 32)
    data = write_images(tmp_path / "data", per_class=8, size=(32, 32))
    flags = ["extract", "--data", str(data), "--backbone", "tiny_trunk", "--weights",
             str(weights), "--input-size", "32", "--no-progress"]
    assert main([*flags, "--cache-dir", str(tmp_path / "cache")]) == 0
    made = Path(capsys.readouterr().out.strip().splitlines()[-1])
    shared = mounts("--bind", str(tmp_path / "cache"), target=tmp_path / "shared")
    assert _mount("-o", "remount,bind,ro", str(shared)).returncode == 0
    before = sorted(p.name for p in shared.iterdir())

    assert main([*flags, "--cache-dir", str(shared)]) == 0
    out = capsys.readouterr()
    assert "cache hit" in out.out and "Traceback" not in out.err, out
    store = Path(out.out.strip().splitlines()[-1])
    assert store == shared / made.name
    assert main(["info", str(store)]) == 0
    assert "checksums verified" in capsys.readouterr().out
    assert main(["fit-head", "--store", str(store), "--epochs", "1", "--out",
                 str(tmp_path / "runs")]) == 0
    capsys.readouterr()

    assert main([*flags, "--dtype", "float16", "--cache-dir", str(shared)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "--cache-dir" in err[0], err
    assert sorted(p.name for p in shared.iterdir()) == before
