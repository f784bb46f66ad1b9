"""export never takes what sits at its --out path for its own: it replaces only the files an
earlier export recorded in its model.json (a list of paths with their sha256), each format keeps
a model.json of its own, and a user's file added to, or put in place of, an earlier artifact is
left as it is with one `error:` line.

A real tiny run (rows_outputs.extracted_run) is exported with --no-check, so each export takes
seconds; the formats used (keras, saved_model) need TensorFlow only.
"""

import json
import os
from pathlib import Path

import pytest

from rows_outputs import USER_TEXT, extracted_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return extracted_run(tmp_path_factory.mktemp("export_owner"))["run"]


def _export(run, out, fmt, capsys, *more):
    from run_pipeline import main

    code = main(["export", "--run", str(run), "--format", fmt, "--out", str(out), "--no-check",
                 *more])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err, captured.err
    return code, captured.out, captured.err


def _refused(code, err, *words):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0], lines[0]


def _tree(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _contract(path: Path, fmt: str) -> dict:
    from pipeline.deploy.formats import contract_path

    return json.loads(contract_path(path, fmt).read_text())


def test_a_file_added_to_an_exported_folder_is_kept(run, tmp_path, capsys):
    out = tmp_path / "d" / "sm"
    assert _export(run, out, "saved_model", capsys)[0] == 0
    (out / "notes.txt").write_text(USER_TEXT)
    before = _tree(out)
    code, _, err = _export(run, out, "saved_model", capsys)
    _refused(code, err, "--out", "notes.txt")
    assert _tree(out) == before
    (out / "notes.txt").unlink()
    (out / "mine").mkdir()  # an empty folder of the user's is not the tool's either
    _refused(*_export(run, out, "saved_model", capsys)[::2], "--out", "mine")
    assert (out / "mine").is_dir() and _tree(out) == {k: v for k, v in before.items()
                                                      if k != "notes.txt"}


def test_a_file_put_where_an_artifact_was_is_kept(run, tmp_path, capsys):
    out = tmp_path / "m.keras"
    assert _export(run, out, "keras", capsys)[0] == 0
    out.write_text(USER_TEXT)  # the user's own file, under the artifact's name
    code, _, err = _export(run, out, "keras", capsys)
    _refused(code, err, "--out", "did not write")
    assert out.read_text() == USER_TEXT
    # inside a folder artifact alike: one of its files replaced by the user's
    folder = tmp_path / "sm"
    assert _export(run, folder, "saved_model", capsys)[0] == 0
    (folder / "saved_model.pb").write_text(USER_TEXT)
    before = _tree(folder)
    _refused(*_export(run, folder, "saved_model", capsys)[::2], "--out")
    assert _tree(folder) == before


def test_an_unchanged_earlier_export_is_replaced(run, tmp_path, capsys):
    out = tmp_path / "sm"
    for _ in range(2):
        code, stdout, err = _export(run, out, "saved_model", capsys)
        assert code == 0, err
    assert stdout.strip().splitlines()[-1] == str(out)
    recorded = _contract(out, "saved_model")["files"]
    assert "sm/saved_model.pb" in recorded
    assert sorted(recorded) == sorted(f"sm/{name}" for name in _tree(out))
    assert not list(tmp_path.glob(".featcache-scratch*"))


def test_two_formats_with_one_stem_keep_a_model_json_each(run, tmp_path, capsys):
    assert _export(run, tmp_path / "m.keras", "keras", capsys)[0] == 0
    assert _export(run, tmp_path / "m", "saved_model", capsys)[0] == 0
    assert _contract(tmp_path / "m.keras", "keras")["model"] == "m.keras"
    assert _contract(tmp_path / "m", "saved_model")["model"] == "m"
    # and each is still recognised as an earlier export: both replace themselves again
    assert _export(run, tmp_path / "m.keras", "keras", capsys)[0] == 0
    assert _export(run, tmp_path / "m", "saved_model", capsys)[0] == 0


def test_an_export_in_the_older_layout_is_recognised(run, tmp_path, capsys):
    """Exports written before model.json had a format's name and a file list: `model.json`
    beside the artifact, naming it. Its files, none newer than that model.json, are replaced
    (and the old model.json with them); a file added to it later is not."""
    from pipeline.deploy.formats import contract_path

    def older_layout(path, fmt):
        new = contract_path(path, fmt)
        data = json.loads(new.read_text())
        del data["files"]
        new.unlink()
        old = path.with_suffix(".json")
        old.write_text(json.dumps(data))
        newest = max(p.stat().st_mtime for p in [path, *path.rglob("*")])
        os.utime(old, (newest + 1, newest + 1))
        return old

    out = tmp_path / "old" / "model.keras"
    assert _export(run, out, "keras", capsys)[0] == 0
    old_json = older_layout(out, "keras")
    assert _export(run, out, "keras", capsys)[0] == 0
    assert not old_json.exists() and contract_path(out, "keras").is_file()

    folder = tmp_path / "old_sm"
    assert _export(run, folder, "saved_model", capsys)[0] == 0
    old_json = older_layout(folder, "saved_model")
    later = old_json.stat().st_mtime + 10
    (folder / "notes.txt").write_text(USER_TEXT)
    os.utime(folder / "notes.txt", (later, later))
    before = _tree(folder)
    _refused(*_export(run, folder, "saved_model", capsys)[::2], "--out")
    assert _tree(folder) == before and old_json.is_file()
