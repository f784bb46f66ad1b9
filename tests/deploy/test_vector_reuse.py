"""Every reuse of a run compares the vectors' one key: predict, export, audit --run.

One module-scoped setup: tiny PNGs -> extract with --resize squash and with center_crop (a
tiny real CNN) -> fit-head on the squash store, and a grid-search style run folder (a logistic
regression saved by the search's own writer) on the same store.
"""

import json
import shutil

import numpy as np
import pytest

from conftest import register_tiny_trunk, write_images

SIZE = 32


def _extract(data, root, **changes):
    from pipeline.extract.run import run_extraction

    weights = register_tiny_trunk(root / "tiny.weights.h5", SIZE)
    opts = {"data": str(data), "backbone": "tiny_trunk", "weights": str(weights),
            "layer": "pooled", "pooling": "avg", "input_size": SIZE, "resize": "squash",
            "dtype": "float32", "batch_size": 8, "cache_dir": str(root / "cache"), **changes}
    return run_extraction(opts, progress=False, echo=lambda *_: None).path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from pipeline.fit.run import fit_head
    from pipeline.search import io as search_io
    from pipeline.store import open_store

    root = tmp_path_factory.mktemp("reuse")
    data = write_images(root / "pets", per_class=8)
    squash = _extract(data, root)
    crop = _extract(data, root, resize="center_crop")
    head = fit_head(squash, {"epochs": 2, "hidden_units": (8,), "test_fraction": 0.25,
                             "progress": False}, out_dir=root / "runs", echo=lambda *_: None)
    search = root / "runs" / "search"
    search.mkdir()
    with open_store(squash) as store:
        X, y = store.load()
        meta = {"store": str(squash), "store_key": store.key, "provenance": store.provenance,
                "class_names": list(store.class_names)}
    search_io.write_run_json(search, meta)
    search_io.save_best_model(search, make_pipeline(LogisticRegression()).fit(X, y), meta, model="lr",
                              family="logistic_regression", params={})
    return {"root": root, "data": data, "squash": squash, "crop": crop, "head": head,
            "search": search}


def _edited_run(runs, tmp_path, **options):
    """A copy of the fit-head run whose recorded extract options were changed."""
    run = tmp_path / "run"
    shutil.copytree(runs["head"], run)
    info = json.loads((run / "run.json").read_text())
    info["provenance"]["extract_options"].update(options)
    (run / "run.json").write_text(json.dumps(info))
    return run


def test_predicted_vectors_carry_the_training_stores_key(runs, tmp_path):
    from pipeline.deploy.prediction import predict
    from pipeline.store import open_store

    new = write_images(tmp_path / "new", per_class=1, seed=5)
    predict(runs["head"], new, {"cache_dir": str(tmp_path / "c"), "progress": False},
            echo=lambda *_: None)
    (made,) = (tmp_path / "c").glob("*.h5")
    with open_store(made) as fresh, open_store(runs["squash"]) as trained:
        assert fresh.key == trained.key


@pytest.mark.parametrize("option, value, named", [("resize", "center_crop", "reader.resize"),
                                                  ("precision", "float16", "precision")])
def test_predict_refuses_options_that_do_not_rebuild_the_training_vectors(
        runs, tmp_path, option, value, named):
    from pipeline.deploy.prediction import predict
    from pipeline.errors import StoreError

    run = _edited_run(runs, tmp_path, **{option: value})
    with pytest.raises(StoreError, match=named):
        predict(run, runs["data"], {"cache_dir": str(tmp_path / "c"), "progress": False},
                echo=lambda *_: None)
    assert not (tmp_path / "c").exists()  # refused before extracting anything


def test_export_refuses_options_that_do_not_rebuild_the_training_vectors(runs, tmp_path):
    from pipeline.deploy.export import export_model
    from pipeline.errors import StoreError

    run = _edited_run(runs, tmp_path, resize="center_crop")
    with pytest.raises(StoreError, match="reader.resize: trained on 'squash' vs given"):
        export_model(run, {"check": False}, echo=lambda *_: None)
    assert not (run / "export").exists()


def test_audit_run_refuses_a_model_trained_on_other_reader_settings(runs, capsys):
    from run_pipeline import main

    code = main(["audit", "--store", str(runs["crop"]), "--run", str(runs["search"]),
                 "--out", str(runs["root"] / "crop.audit")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ")
    assert "reader.resize: model 'squash' vs given 'center_crop'" in err
    assert not (runs["root"] / "crop.audit").exists()


def test_export_records_the_precision_it_ran(runs, tmp_path):
    from pipeline.deploy.formats import contract_path
    from pipeline.deploy.export import export_model

    path = export_model(runs["head"], {"out": str(tmp_path / "m.keras"), "check": False},
                        echo=lambda *_: None)
    assert json.loads(contract_path(path, "keras").read_text())["precision"] == "float32"


@pytest.mark.parametrize("precision", ["bfloat16", "int8"])
def test_export_refuses_a_reduced_precision_run_with_the_fix(runs, tmp_path, precision):
    from pipeline.deploy.export import export_model
    from pipeline.errors import ConfigError

    run = tmp_path / "run"
    shutil.copytree(runs["head"], run)
    info = json.loads((run / "run.json").read_text())
    info["provenance"]["precision"] = precision  # as a store extracted so records it
    info["provenance"]["extract_options"]["precision"] = precision
    (run / "run.json").write_text(json.dumps(info))
    with pytest.raises(ConfigError, match=f"{precision}.*--precision float32"):
        export_model(run, {"check": False}, echo=lambda *_: None)
    assert not (run / "export").exists()


def test_predict_says_how_many_scored_files_the_run_trained_on(runs, tmp_path):
    from pipeline.deploy.prediction import predict

    split = json.loads((runs["head"] / "metrics.json").read_text())["split"]
    lines = []
    out = predict(runs["head"], runs["data"], {"cache_dir": str(tmp_path / "c"),
                                               "out": str(tmp_path / "p.csv"),
                                               "progress": False}, echo=lines.append)
    seen = [line for line in lines if "rows of this run" in line]
    assert len(seen) == 1, lines
    assert f"{split['n_train']} training, {split['n_val']} validation and {split['n_test']} " \
           "test" in seen[0]
    counts = json.loads(out.with_name("p-accuracy.json").read_text())["rows_of_the_run"]
    assert counts == {"train": split["n_train"], "val": split["n_val"],
                      "test": split["n_test"], "new": 0}
    new = write_images(tmp_path / "new", per_class=1, seed=5)
    lines.clear()
    predict(runs["head"], new, {"cache_dir": str(tmp_path / "c2"), "progress": False},
            echo=lines.append)
    assert not [line for line in lines if "rows of this run" in line]
    assert np.isfinite(json.loads((runs["head"] / "predictions-new-accuracy.json").read_text())
                       ["accuracy"])


def test_a_run_on_a_store_of_an_older_version_is_refused_with_the_fix(runs, tmp_path):
    from pipeline.deploy.prediction import predict
    from pipeline.errors import StoreError

    run = tmp_path / "run"
    shutil.copytree(runs["head"], run)
    info = json.loads((run / "run.json").read_text())
    del info["provenance"]["vector_key"]  # as an older extract wrote it
    (run / "run.json").write_text(json.dumps(info))
    with pytest.raises(StoreError, match="older version.*extract .* again and fit again"):
        predict(run, runs["data"], {"cache_dir": str(tmp_path / "c"), "progress": False},
                echo=lambda *_: None)


def test_predict_does_not_guess_when_the_runs_store_has_changed(runs, tmp_path):
    from pipeline.deploy.prediction import predict

    run = tmp_path / "run"
    shutil.copytree(runs["head"], run)
    info = json.loads((run / "run.json").read_text())
    info["provenance"]["source_fingerprint"] = "0" * 64  # the store now holds other files
    (run / "run.json").write_text(json.dumps(info))
    lines = []
    out = predict(run, runs["data"], {"cache_dir": str(tmp_path / "c"), "progress": False},
                  echo=lines.append)
    assert [line for line in lines if "changed since the run" in line]
    assert json.loads(out.with_name(out.stem + "-accuracy.json").read_text())[
        "rows_of_the_run"] is None


@pytest.fixture(scope="module")
def int8_run(runs):
    """A real int8 store (OpenVINO + NNCF) of the same files, and a head fitted on it."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from pipeline.fit.run import fit_head

    store = _extract(runs["data"], runs["root"], precision="int8", calibration_size=8)
    head = fit_head(store, {"epochs": 1, "hidden_units": (8,), "test_fraction": 0.25,
                            "progress": False}, out_dir=runs["root"] / "runs8",
                    echo=lambda *_: None)
    return {"store": store, "head": head}


def test_audit_run_refuses_an_int8_store_for_a_float32_model(runs, int8_run, capsys):
    from run_pipeline import main

    code = main(["audit", "--store", str(int8_run["store"]), "--run", str(runs["search"]),
                 "--out", str(runs["root"] / "int8.audit")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "precision: model 'float32' vs given 'int8'" in err


def test_an_int8_run_predicts_with_its_own_key_and_exports_nothing(int8_run, tmp_path):
    from pipeline.deploy.export import export_model
    from pipeline.deploy.prediction import predict
    from pipeline.errors import ConfigError
    from pipeline.store import open_store

    new = write_images(tmp_path / "new", per_class=1, seed=5)
    cache = int8_run["store"].parent  # where its quantized model is (openvino/)
    predict(int8_run["head"], new, {"cache_dir": str(cache), "progress": False},
            echo=lambda *_: None)
    (made,) = cache.glob("new-*.h5")
    with open_store(made) as fresh, open_store(int8_run["store"]) as trained:
        assert fresh.key == trained.key and fresh.provenance["precision"] == "int8"
    with pytest.raises(ConfigError, match="int8.*--precision float32 and fit again"):
        export_model(int8_run["head"], {"check": False}, echo=lambda *_: None)
    assert not (int8_run["head"] / "export").exists()
