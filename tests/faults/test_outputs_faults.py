"""Where commands write, under real faults of the machine: a full disk (a small tmpfs), read-only
folders (a read-only bind mount), a SIGKILL mid-run, two runs at the same moment.

Mount tests need root and a working `mount`; elsewhere they skip, saying why. Every mount is
undone in a `finally`.
"""

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from rows_outputs import USER_TEXT, extracted_run

REPO = Path(__file__).resolve().parents[2]
SCRATCH = ".featcache-scratch"


def _cli(argv, capsys):
    from run_pipeline import main

    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_error_line(err: str, *words):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _mount(*args):
    if os.geteuid() != 0:
        pytest.skip("mount tests need root")
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"mount not allowed here: {done.stderr.strip()[:120]}")


@contextmanager
def read_only(folder: Path):
    """`folder` seen read-only through a bind mount of itself."""
    _mount("--bind", str(folder), str(folder))
    try:
        done = subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)],
                              capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"read-only remount not allowed: {done.stderr.strip()[:120]}")
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@contextmanager
def small_tmpfs(folder: Path, size: str = "2m"):
    folder.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder))
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return extracted_run(tmp_path_factory.mktemp("outputs"))


def _store(tmp_path, rows=20, features=4):
    from pipeline.store.feature_store import write_store

    rng = np.random.default_rng(0)
    labels = np.arange(rows) % 2
    return write_store(tmp_path / "vectors.h5", rng.normal(size=(rows, features)).astype(
        np.float32) + labels[:, None], labels, class_names=["a", "b"])


def test_audit_out_dot_never_touches_the_folder_you_are_in(tmp_path, monkeypatch, capsys):
    store = _store(tmp_path)
    here = tmp_path / "work"
    here.mkdir()
    (here / "notes.txt").write_text(USER_TEXT)
    monkeypatch.chdir(here)
    code, _, err = _cli(["audit", "--store", store, "--out", "."], capsys)
    assert code == 2
    _one_error_line(err, "--out")
    assert [p.name for p in here.iterdir()] == ["notes.txt"]


def test_two_audits_of_one_store_at_once(tmp_path, monkeypatch, capsys):
    """The second audit, started while the first writes, is refused with one line; the first
    finishes whole."""
    from pipeline.audit import report

    store = _store(tmp_path)
    write_report = report.write_report
    second = {}

    def write_while_another_starts(*args, **kwargs):
        if not second:
            second["code"], _, second["err"] = _cli(["audit", "--store", store], capsys)
        return write_report(*args, **kwargs)

    monkeypatch.setattr(report, "write_report", write_while_another_starts)
    code, out, err = _cli(["audit", "--store", store], capsys)
    assert code == 0, err
    assert second["code"] == 2
    _one_error_line(second["err"], "audit")
    folder = Path(out.strip().splitlines()[-1])
    assert (folder / "report.html").is_file() and (folder / "summary.json").is_file()
    assert not list(tmp_path.glob("*.lock"))


def test_two_fit_heads_finishing_in_the_same_second_keep_both(tmp_path, monkeypatch, capsys):
    """Another run publishes the very name this run chose while this run writes: both stay."""
    import keras

    store = _store(tmp_path)
    runs = tmp_path / "runs"
    save = keras.Model.save
    taken = []

    def another_run_finishes_now(self, path, *args, **kwargs):
        save(self, path, *args, **kwargs)
        if not taken:
            now = time.time()
            for delta in range(-3, 4):  # the name chosen this second, or the next
                stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now + delta))
                other = runs / f"{store.stem}-head-{stamp}"
                other.mkdir(parents=True, exist_ok=True)
                (other / "run.json").write_text("{}")
                taken.append(other)

    monkeypatch.setattr(keras.Model, "save", another_run_finishes_now)
    code, out, err = _cli(["fit-head", "--store", store, "--out", runs, "--epochs", "2",
                           "--no-progress"], capsys)
    assert code == 0, err
    run = Path(out.strip().splitlines()[-1])
    assert run not in taken and (run / "head.keras").is_file() and (run / "run.json").is_file()
    assert all((t / "run.json").read_text() == "{}" for t in taken)


def _kill_when(argv, ready, tmp_path, timeout=240):
    """Starts the CLI in a subprocess, SIGKILLs it as soon as `ready()` is true."""
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp"), "PYTHONPATH": str(REPO)}
    (tmp_path / "tmp").mkdir(exist_ok=True)
    proc = subprocess.Popen([sys.executable, str(REPO / "run_pipeline.py"), *map(str, argv)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"ended before the kill: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the state to kill in never appeared")
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()


def _scratch_files(folder: Path, name: str) -> list:
    return list((folder / SCRATCH).glob(f"*/{name}")) if (folder / SCRATCH).is_dir() else []


def test_a_killed_grid_search_leaves_nothing_the_next_run_keeps(tmp_path, capsys):
    store = _store(tmp_path, rows=400, features=64)
    runs = tmp_path / "runs"
    _kill_when(["grid-search", "--store", store, "--out", runs, "--models", "rbf_svm,knn",
                "--cv", "3", "--n-jobs", "1", "--no-progress"],
               lambda: bool(_scratch_files(runs, "features.npy")), tmp_path)
    assert not list((tmp_path / "tmp").iterdir())  # nothing in the system's temporary folder
    assert _scratch_files(runs, "features.npy")  # the dead run's copy, under --out
    code, out, err = _cli(["grid-search", "--store", store, "--out", runs, "--models", "knn",
                           "--cv", "2", "--n-jobs", "1", "--no-progress"], capsys)
    assert code == 0, err
    assert not (runs / SCRATCH).exists()
    assert [p for p in runs.iterdir()] == [Path(out.strip().splitlines()[-1])]


def test_a_killed_fit_head_leaves_no_hidden_run_folder(tmp_path, capsys):
    store = _store(tmp_path)
    runs = tmp_path / "runs"
    _kill_when(["fit-head", "--store", store, "--out", runs, "--epochs", "2", "--no-progress"],
               lambda: bool(_scratch_files(runs, "run/head.keras")), tmp_path)
    code, out, err = _cli(["fit-head", "--store", store, "--out", runs, "--epochs", "2",
                           "--no-progress"], capsys)
    assert code == 0, err
    assert not (runs / SCRATCH).exists()
    assert [p for p in runs.iterdir()] == [Path(out.strip().splitlines()[-1])]


def test_a_full_disk_keeps_the_trained_head(tmp_path, monkeypatch, capsys):
    import tempfile

    import keras

    store = _store(tmp_path)
    rescue_root = tmp_path / "system_tmp"
    rescue_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(rescue_root))
    with small_tmpfs(tmp_path / "disk") as disk:
        filler = disk / "filler"
        try:  # fill the disk, then free a few kilobytes: enough to start, not to finish
            with open(filler, "wb") as fh:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
        except OSError:
            pass
        os.truncate(filler, filler.stat().st_size - (12 << 10))
        code, out, err = _cli(["fit-head", "--store", store, "--out", disk / "runs", "--epochs",
                               "2", "--no-progress"], capsys)
        assert code == 2
        line = _one_error_line(err, "space")
        saved = [p for p in rescue_root.rglob("head.keras")]
        assert len(saved) == 1 and str(saved[0]) in line
        keras.saving.load_model(saved[0], safe_mode=True)
        assert not list((disk / "runs").glob("*-head-*"))


def test_read_only_store_folder_audit_names_out(tmp_path, capsys):
    store = _store(tmp_path / "stores")
    with read_only(tmp_path / "stores"):
        code, _, err = _cli(["audit", "--store", store], capsys)
        assert code == 2
        _one_error_line(err, "--out")
        code, out, err = _cli(["audit", "--store", store, "--out", tmp_path / "elsewhere.audit"],
                              capsys)
        assert code == 0, err
    assert (tmp_path / "elsewhere.audit" / "summary.json").is_file()


def test_read_only_run_folder_predict_and_export(project, tmp_path, capsys):
    run = project["run"]
    with read_only(run):
        code, _, err = _cli(["predict", "--run", run, "--data", project["data"],
                             "--no-progress"], capsys)
        assert code == 2
        _one_error_line(err, "--out")
        code, out, err = _cli(["predict", "--run", run, "--data", project["data"], "--out",
                               tmp_path / "p.csv", "--no-progress"], capsys)
        assert code == 0, err
        assert out.strip().splitlines()[-1] == str(tmp_path / "p.csv")
        code, _, err = _cli(["export", "--run", run], capsys)
        assert code == 2
        _one_error_line(err, "--out")
        code, out, err = _cli(["export", "--run", run, "--out", tmp_path / "m.keras"], capsys)
        assert code == 0, err
    assert (tmp_path / "p.csv").is_file() and (tmp_path / "m.keras").is_file()
    assert not any(p.name.startswith(".featcache") for p in tmp_path.iterdir())
