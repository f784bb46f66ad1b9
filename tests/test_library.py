"""The library API (featcache.py): the examples of docs/library.md run as written, `import
featcache` stays light, and the command functions are the CLI's entry points."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "library.md"

pytest.importorskip("pyarrow")


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), re.S)


def test_the_library_page_examples_run(tmp_path, monkeypatch):
    pytest.importorskip("pandas")
    blocks = python_blocks(PAGE)
    assert len(blocks) >= 7
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for block in blocks:
        exec(compile(block, f"{PAGE.name} example", "exec"), namespace)
    # what the examples made is what they say
    with namespace["featcache"].open_store(namespace["again"]) as copy, \
            namespace["featcache"].open_store(namespace["store"]) as original:
        np.testing.assert_array_equal(copy.load()[0], original.load()[0])
        assert copy.class_names == original.class_names == ["cat", "dog", "fox"]
    assert (namespace["run"].path / "head.keras").is_file()
    assert (namespace["search"].path / "leaderboard.csv").is_file()
    assert (namespace["report"].path / "summary.json").is_file()
    assert namespace["probabilities"].shape == (4, 3)
    assert len(namespace["frame"]) == 60
    assert Path(namespace["model_file"].path).suffix == ".keras"
    assert namespace["scores"].path.read_text().count("\n") == 7  # a header and 6 photos


def test_import_featcache_loads_no_heavy_package():
    code = ("import sys, json, featcache; print(json.dumps(sorted(m for m in ('tensorflow', "
            "'keras', 'h5py', 'pandas', 'pyarrow', 'sklearn', 'jax') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert json.loads(out.stdout) == []


def test_store_dataset_serves_training_views_only_for_training(tmp_path):
    import featcache
    from pipeline.store.feature_store import StoreWriter

    writer = StoreWriter(tmp_path / "v.h5", (2,), view_rows=True)
    ids = np.array(["a", "b", "c", "d"], dtype=object)
    cols = dict(ids=ids, split=np.array(["train", "train", "val", "val"], dtype=object),
                group=np.array([""] * 4, dtype=object), stamps=np.array([""] * 4, dtype=object))
    for view in (0, 1, 2):
        x = np.column_stack([np.arange(4), np.full(4, view)]).astype(np.float32)
        writer.append(x, labels=[0, 1, 0, 1], view=np.full(4, view, np.int32), **cols)
    path = writer.commit("k" * 64, ["x", "y"], {"backbone": "external", "layer": "given"})
    with featcache.open_store(path) as store:
        def served(split):
            data = featcache.StoreDataset(store, split, batch_size=100, shuffle=False)
            return sorted(map(tuple, data[0][0].astype(int).tolist()))
        assert served("train") == [(f, v) for f in (0, 1) for v in (0, 1, 2)]
        assert served("val") == [(2, 0), (3, 0)]
        assert featcache.StoreDataset(store, "train", 100, views=False).n == 2


def test_a_bad_setting_is_the_cli_refusal(tmp_path):
    import featcache
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="epoch"):
        featcache.fit_head(tmp_path / "none.h5", epochs=0)
    with pytest.raises(ConfigError, match="unknown"):
        featcache.audit(tmp_path / "none.h5", no_such_option=1)


def test_pip_install_installs_the_module_and_a_config_object_is_taken(tmp_path):
    import tomllib

    import featcache
    from pipeline.interop.options import VectorsConfig

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "featcache" in project["tool"]["setuptools"]["py-modules"]
    X = np.arange(12, dtype=np.float32).reshape(6, 2)
    np.save(tmp_path / "v.npy", X)
    (tmp_path / "t.csv").write_text("id,label\n" + "".join(f"r{i},c{i % 2}\n" for i in range(6)))
    store = featcache.import_vectors(vectors=str(tmp_path / "v.npy"),
                                     table=str(tmp_path / "t.csv"), name="n",
                                     cache_dir=str(tmp_path / "c"))
    out = featcache.export_vectors(store, VectorsConfig.from_mapping({"format": "npy"}),
                                   out=str(tmp_path / "o.npy"))
    assert out.command == "vectors" and out.path == tmp_path / "o.npy"
    np.testing.assert_array_equal(np.load(out.path), X)
