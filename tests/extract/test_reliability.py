"""Nothing lost, nothing stuck: odd file names, environment errors that are not the file's
fault, decode workers that die. Real files, a real (tiny) ResNet50, real processes."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.extract.run import run_extraction
from pipeline.store.feature_store import open_store
from tests.conftest import write_images


def _extract(data, cache, **kw):
    opts = {"data": str(data), "backbone": "resnet50", "weights": "none", "layer": "pooled",
            "pooling": "avg", "input_size": 32, "resize": "squash", "batch_size": 4,
            "workers": 2, "dtype": "float32", "cache_dir": str(cache), **kw}
    return run_extraction(opts, progress=False, echo=lambda *_: None)


def test_file_names_that_are_not_utf8_are_stored_with_an_escape(tmp_path):
    data = write_images(tmp_path / "data", per_class=2)
    odd = os.fsencode(data / "cat") + b"/caf\xe9 \xff.png"  # Latin-1 bytes: not UTF-8
    shutil.copy(data / "cat" / "cat_0.png", odd)
    odd_dir = os.fsencode(data / "dog") + b"/sub\xfe"
    os.mkdir(odd_dir)
    shutil.copy(data / "dog" / "dog_0.png", odd_dir + b"/x.png")
    with open(os.fsencode(data / "dog") + b"/bad\xff.png", "wb") as fh:
        fh.write(b"not an image")
    first = _extract(data, tmp_path / "cache")
    with open_store(first.path) as store:
        ids = list(store.column("ids"))
        assert "cat/caf\\xe9 \\xff.png" in ids and "dog/sub\\xfe/x.png" in ids
        assert len(ids) == 6 and [f for f, _ in store.failures()] == ["dog/bad\\xff.png"]
        X, _ = store.load()
        np.testing.assert_allclose(X[ids.index("cat/caf\\xe9 \\xff.png")],
                                   X[ids.index("cat/cat_0.png")], atol=1e-6)
    assert _extract(data, tmp_path / "cache").cache_hit  # the store is complete and reusable


def test_a_file_that_vanishes_mid_run_stops_it_and_is_never_cached(tmp_path):
    from pipeline.errors import ResourceError

    data = write_images(tmp_path / "data", per_class=4)
    victim = data / "dog" / "dog_3.png"

    def remove_after_discovery(line):  # called once the files are listed, before decoding
        if "to extract" in line:
            victim.unlink()

    with pytest.raises(ResourceError, match="dog_3.png.*vanished.*run the same command again"):
        run_extraction({"data": str(data), "backbone": "resnet50", "weights": "none",
                        "layer": "pooled", "pooling": "avg", "input_size": 32, "batch_size": 4,
                        "workers": 2, "dtype": "float32", "cache_dir": str(tmp_path / "cache"),
                        "decode": "threads"}, progress=False, echo=remove_after_discovery)
    import h5py

    parts = list((tmp_path / "cache").glob(".*.parts/part-*.h5"))
    assert parts  # what was finished before the stop is kept for the next run
    for part in parts:  # and the vanished file is not recorded as a "failure"
        with h5py.File(part, "r") as fh:
            assert fh["fail_ids"].shape == (0,)
    result = _extract(data, tmp_path / "cache")
    assert result.n_failures == 0 and result.n_rows == 7


def _samples(folder, n):
    from pipeline.extract.sources.base import Sample

    write_images(folder, classes=("a",), per_class=n, size=(32, 32))
    return [Sample(id=p.name, path=p) for p in sorted((folder / "a").glob("*.png"),
                                                       key=lambda p: int(p.stem.split("_")[1]))]


@pytest.mark.parametrize("feeder", ["files", "batches"])
def test_process_decoding_stays_a_bounded_window_ahead(tmp_path, feeder):
    """The workers decode only a window ahead of the consumer: files deleted beyond it, while
    the consumer is busy, are found missing (a ResourceError, not a cached failure)."""
    import time

    from pipeline.errors import ResourceError
    from pipeline.extract.decode_pool import ProcessBatchFeeder, ProcessChunkFeeder
    from pipeline.extract.sources.images import ImageReader

    samples = _samples(tmp_path, 40)
    reader = ImageReader((32, 32, 3))
    if feeder == "files":  # window: 2 workers x 2 files
        feed = iter(ProcessChunkFeeder(samples, reader, processes=2))
    else:  # window: 3 blocks of 2 images
        feed = iter(ProcessBatchFeeder(reader, [s.path for s in samples], 2, 2, depth=4))
    next(feed)
    time.sleep(3)  # the consumer is slow: unbounded workers would decode everything now
    for sample in samples[10:]:
        sample.path.unlink()
    with pytest.raises(ResourceError, match="vanished"):
        for _ in feed:
            pass


def _children(pid: int) -> list:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"spawn_main" in cmdline:
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize("what", ["images", "clips"])
def test_a_killed_decode_worker_ends_the_run_with_an_error(tmp_path, what):
    import signal
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parents[2]
    if what == "images":
        data = write_images(tmp_path / "data", per_class=60, size=(64, 64))
        args = ["--backbone", "resnet50", "--input-size", "96", "--batch-size", "2"]
    else:
        from test_clips import write_gif

        for i in range(40):
            write_gif(tmp_path / "data" / ("a" if i % 2 else "b") / f"{i}.gif", 24)
        data = tmp_path / "data"
        args = ["--backbone", "c3d", "--input-size", "32", "--batch-size", "1", "--layer", "fc6"]
    proc = subprocess.Popen(
        [sys.executable, str(root / "run_pipeline.py"), "extract", "--data", str(data), *args,
         "--weights", "none", "--decode", "processes", "--workers", "2", "--no-progress",
         "--cache-dir", str(tmp_path / "cache"), "--engine", "tensorflow"],
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        workers = []
        while time.time() < deadline and not workers and proc.poll() is None:
            workers = _children(proc.pid)
            time.sleep(0.05)
        assert workers, "no decode worker was seen"
        time.sleep(1.0)  # let it work a little
        os.kill(workers[0], signal.SIGKILL)
        out, err = proc.communicate(timeout=90)  # a hang fails here
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 2, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("error: a decoding worker process died")
    assert "Traceback" not in err


CHATTER = ("cudart_stub", "cuInit", "absl::InitializeLog", "oneDNN", "cpu_feature_guard",
           "This TensorFlow binary is optimized")


def test_tensorflow_start_up_chatter_never_reaches_the_terminal(tmp_path):
    """extract with decode worker processes, then grid-search with the Keras head in joblib's
    worker processes: stderr holds none of TensorFlow's start-up notices."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    data = write_images(tmp_path / "data", per_class=6)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "GLOG", "ABSL"))}

    def run(*args):
        proc = subprocess.run([sys.executable, str(root / "run_pipeline.py"), *args], cwd=root,
                              env=env, capture_output=True, text=True, timeout=400)
        assert proc.returncode == 0, proc.stderr[-3000:]
        noise = [line for line in proc.stderr.splitlines() if any(c in line for c in CHATTER)]
        assert not noise, noise
        return proc.stdout.strip().splitlines()[-1]

    store = run("extract", "--data", str(data), "--backbone", "mobilenet", "--weights", "none",
                "--input-size", "32", "--decode", "processes", "--workers", "2",
                "--no-progress", "--cache-dir", str(tmp_path / "cache"))
    grid = tmp_path / "grid.toml"  # one small Keras head: TensorFlow in each joblib worker
    grid.write_text('[models.keras_head]\n[models.keras_head.params]\nhidden_units = [[8]]\n'
                    'epochs = 2\n')
    run("grid-search", "--store", store, "--grid", str(grid), "--cv", "2", "--n-jobs", "2",
        "--top-k", "1", "--no-progress", "--out", str(tmp_path / "runs"))


def test_too_many_open_files_is_the_machines_fault_not_the_files(tmp_path):
    """A real EMFILE: the open-file limit is lowered to what a process already holds."""
    import subprocess
    import sys

    data = write_images(tmp_path / "data", classes=("a",), per_class=1)
    script = f"""
import os, resource, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from pipeline.errors import DecodeError, ResourceError
from pipeline.extract.sources.images import load_image
n_open = len(os.listdir("/proc/self/fd"))
resource.setrlimit(resource.RLIMIT_NOFILE, (n_open - 1, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
try:
    load_image({str(data / "a" / "a_0.png")!r}, (8, 8))
except ResourceError as exc:
    print("resource:", exc)
except DecodeError as exc:
    print("decode:", exc)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60).stdout
    assert out.startswith("resource:") and "open-file limit" in out, out
