"""Refusals whose words must name the user's own flag or a path that can work: `--views` with
`--temporal-pool none` (refused before anything runs, naming that flag, not --aggregate), and
`audit --out FILE` (the folder it suggests lies beside the file, not inside it)."""

import io
from contextlib import redirect_stderr, redirect_stdout

import numpy as np


def _main(argv) -> tuple[int, list]:
    from run_pipeline import main

    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, err.getvalue().strip().splitlines()


def _gifs(root):
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for i in range(2):
            frames = [Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8))
                      for _ in range(4)]
            frames[0].save(root / label / f"{i}.gif", save_all=True, append_images=frames[1:])
    return root


def test_views_with_temporal_pool_none_names_that_flag_before_any_work(tmp_path):
    cache = tmp_path / "cache"
    code, err = _main(["extract", "--data", _gifs(tmp_path / "gifs"), "--backbone", "mobilenet",
                       "--weights", "none", "--input-size", "32", "--frames", "2",
                       "--temporal-pool", "none", "--views", "2", "--cache-dir", cache,
                       "--no-progress"])
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert "--temporal-pool none" in err[0] and "--aggregate" not in err[0], err[0]
    assert not cache.exists() or not list(cache.glob("*.h5")), "a store was built first"


def test_audit_out_a_file_suggests_a_folder_beside_it(tmp_path):
    from pipeline.store.feature_store import write_store

    labels = np.arange(12) % 2
    store = write_store(tmp_path / "pets.h5", np.random.default_rng(0).normal(
        size=(12, 4)).astype(np.float32), labels, class_names=["a", "b"])
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    code, err = _main(["audit", "--store", store, "--out", notes])
    assert code == 2 and len(err) == 1, err
    assert f"{notes}/" not in err[0], err[0]  # never a folder inside the file
    assert f"--out {tmp_path / 'pets.audit'}" in err[0], err[0]
    assert notes.read_text() == "mine\n"
