"""`predict --tta K` writes the mean of the head's probabilities over each file's plain view and
its K augmented views; `export --tta` is refused with the reason. Real images, a real CNN, a
real head."""

import numpy as np

import run_pipeline
from conftest import read_csv, register_tiny_trunk, write_images


def test_tta_equals_the_mean_of_the_per_view_probabilities(tmp_path, capsys):
    from pipeline.deploy.prediction import load_run, predict
    from pipeline.extract.run import run_extraction
    from pipeline.fit.run import fit_head
    from pipeline.store.feature_store import open_store

    weights = register_tiny_trunk(tmp_path / "tiny.weights.h5")
    data = write_images(tmp_path / "data", per_class=10, size=(40, 48))
    store = run_extraction({"data": str(data), "backbone": "tiny_trunk", "weights": str(weights),
                            "input_size": 32, "cache_dir": str(tmp_path / "cache"),
                            "progress": False, "views": 2, "augment": "flip,crop=0.5-0.9"},
                           echo=lambda *_: None)
    run = fit_head(store.path, {"progress": False, "epochs": 3, "learning_curve": False,
                                "calibration_fraction": 0.0}, out_dir=tmp_path / "runs",
                   echo=lambda *_: None)
    new = write_images(tmp_path / "new", per_class=2, size=(40, 48), seed=5)
    out = predict(run, new, {"tta": 3, "progress": False, "cache_dir": str(tmp_path / "pc"),
                             "out": str(tmp_path / "tta.csv")}, echo=lambda *_: None)
    plain_out = predict(run, new, {"progress": False, "cache_dir": str(tmp_path / "pc"),
                                   "out": str(tmp_path / "plain.csv")}, echo=lambda *_: None)
    views_store = next((tmp_path / "pc").glob("*-views3-*.h5"))
    loaded = load_run(run)
    with open_store(views_store) as s:
        # the run's training recipe, drawn again for the new files
        assert s.provenance["views"]["recipe"] == "crop=0.5-0.9,flip" and s.n_views == 3
        ids = s.full_column("ids")
        probs = loaded.predict_proba(s.read_rows(np.arange(len(ids))))
        expected = {sid: probs[ids == sid].mean(axis=0) for sid in s.column("ids")}
        plain = {sid: probs[:len(s)][i] for i, sid in enumerate(s.column("ids"))}
    rows, plain_rows = read_csv(out), {r["id"]: r for r in read_csv(plain_out)}
    assert len(rows) == 4
    moved = 0.0
    for row in rows:
        got = np.array([float(row["p_cat"]), float(row["p_dog"])])
        np.testing.assert_allclose(got, expected[row["id"]], atol=1e-6)
        without = np.array([float(plain_rows[row["id"]][c]) for c in ("p_cat", "p_dog")])
        np.testing.assert_allclose(without, plain[row["id"]], atol=1e-6)
        moved = max(moved, float(np.abs(got - without).max()))
    assert moved > 1e-6  # the views changed the figures: the mean is not the plain view's

    code = run_pipeline.main(["export", "--run", str(run), "--tta", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: export --tta") and "predict --tta" in err[-1]
