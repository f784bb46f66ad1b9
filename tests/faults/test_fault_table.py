"""The fault table: every bad input or fault a user can cause from the command line, one row
each, with the exit status and message it must end with, all run in one process.

A refused row (status 2) must end with exactly one `error: ...` line on standard error that holds
the row's words, and no traceback. A row that must succeed (status 0) must print no traceback and,
when it has words, say them on standard error (a warning). A row's `after` check then asserts that
nothing the user had was lost. The rows live in `rows_<family>.py` beside this file (see
fault_case.py); cases that need a real fault of the machine (a full disk, a read-only mount, a
SIGKILL, a FIFO) have tests of their own.
"""

import importlib
import json
import shutil
from pathlib import Path

import h5py
import pytest

ROW_MODULES = [importlib.import_module(p.stem)
               for p in sorted(Path(__file__).parent.glob("rows_*.py"))]
ROWS = [(module, case) for module in ROW_MODULES for case in module.CASES]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Each rows module's files, written once (module name -> placeholders)."""
    return {module.__name__: module.build(tmp_path_factory.mktemp(module.__name__))
            for module in ROW_MODULES}


@pytest.mark.parametrize("module, case", ROWS, ids=[case.id for _, case in ROWS])
def test_fault_ends_as_the_table_says(built, capsys, monkeypatch, module, case):
    import io

    from run_pipeline import main

    files = built[module.__name__]
    argv = [a.format(**files) for a in case.argv]
    if case.stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(case.stdin))
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own refusals
        code = exc.code
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert code == case.status, err
    if case.status == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        assert case.words.lower() in lines[0].lower(), lines[0]
    elif case.words:
        assert case.words.lower() in err.lower(), err
    if case.after is not None:
        case.after(files)


def test_the_table_is_long_enough_and_covers_every_command():
    from run_pipeline import COMMANDS

    assert len(ROWS) >= 30
    ids = [case.id for _, case in ROWS]
    assert len(ids) == len(set(ids)), "two rows share an id"
    covered = {case.argv[0] for _, case in ROWS}
    assert set(COMMANDS) - {"demo", "audit"} <= covered


def test_info_on_a_store_it_made_may_suggest_deleting_it(built, tmp_path, capsys):
    """Only a file the tool recognises as its own (our name pattern and attributes) gets the
    advice to delete it; a user's CSV or photo never does."""
    from run_pipeline import main

    files = built["rows_usage"]
    for path in (files["outside_csv"], files["jpeg"], files["foreign"]):
        assert main(["info", str(path)]) == 2
        assert "delete" not in capsys.readouterr().err
    ours = tmp_path / "pets-mobilenet-pooled-0123456789.h5"
    shutil.copy(files["store"], ours)
    with h5py.File(ours, "a") as fh:
        fh.attrs["schema_version"] = 0
        fh.attrs["provenance"] = json.dumps({"backbone": "mobilenet"})
    assert main(["info", str(ours)]) == 2
    err = capsys.readouterr().err
    assert "schema" in err and "extract" in err
