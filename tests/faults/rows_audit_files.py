"""Fault-table rows: the audit's files that fit-head and grid-search read back
(`--groups-from-audit`: suggested_groups.csv; `--exclude-leaks`: duplicates.csv; both:
summary.json), edited by hand or damaged. Each is one `error:` line naming the file (and the
line of a CSV) and saying to run the audit again; a summary.json that cannot be read counts as
no audit. The edited file is left as it is.
"""

import shutil

import numpy as np

from fault_case import Fault


def build(root):
    """A store of 24 rows with near-duplicate pairs, its audit, and copies of both whose
    audit has one file edited."""
    from pipeline.audit.run import run_audit
    from pipeline.store.feature_store import write_store

    rng = np.random.default_rng(0)
    labels = np.arange(24) % 2
    base = rng.normal(size=(12, 8)).astype(np.float32)
    features = np.repeat(base, 2, axis=0) + rng.normal(0, 1e-3, (24, 8)).astype(np.float32)
    store = write_store(root / "pets.h5", features, np.repeat(labels[::2], 2),
                        class_names=["cat", "dog"], ids=[f"img_{i}.png" for i in range(24)])
    run_audit(store, {"folds": 2}, echo=lambda *_: None)
    f = {"root": root, "store": store}

    def edited(name, file, change):
        copy = root / name / store.name
        copy.parent.mkdir()
        shutil.copy(store, copy)
        shutil.copytree(store.with_suffix(".audit"), copy.with_suffix(".audit"))
        path = copy.with_suffix(".audit") / file
        path.write_bytes(change(path.read_bytes()))
        f[name], f[name + "_file"] = copy, path
        f[name + "_bytes"] = path.read_bytes()

    edited("renamed", "suggested_groups.csv",
           lambda b: b.replace(b"id,group,size", b"id,grp,size", 1))
    edited("short_row", "suggested_groups.csv", lambda b: _cut_line(b, 3))
    edited("latin1", "suggested_groups.csv", lambda b: b.replace(b"img_5", b"img_\xe9", 1))
    edited("other_ids", "suggested_groups.csv", lambda b: b.replace(b"img_5.png", b"x.png", 1))
    edited("dupes_renamed", "duplicates.csv", lambda b: b.replace(b"id_a", b"first", 1))
    edited("summary_latin1", "summary.json", lambda b: b.replace(b"{", b'{"x": "\xe9",', 1))
    return f


def _cut_line(data: bytes, line: int) -> bytes:
    """The CSV with its `line` (1 = the header) cut after its first cell."""
    lines = data.split(b"\r\n")
    lines[line - 1] = lines[line - 1].split(b",")[0]
    return b"\r\n".join(lines)


def _left_as_it_was(name):
    def check(files):
        assert files[name + "_file"].read_bytes() == files[name + "_bytes"]
    return check


def _fit(name, *flags):
    return ["fit-head", "--store", "{%s}" % name, "--out", "{root}/runs", "--epochs", "1",
            "--no-progress", *flags]


CASES = [
    Fault("audit-groups-column-renamed", _fit("renamed", "--groups-from-audit"),
          "suggested_groups.csv", after=_left_as_it_was("renamed")),
    Fault("audit-groups-short-row", _fit("short_row", "--groups-from-audit"), "line 3",
          after=_left_as_it_was("short_row")),
    Fault("audit-groups-not-utf8", _fit("latin1", "--groups-from-audit"), "not UTF-8",
          after=_left_as_it_was("latin1")),
    Fault("audit-groups-other-ids", _fit("other_ids", "--groups-from-audit"),
          "suggested_groups.csv lists other rows", after=_left_as_it_was("other_ids")),
    Fault("audit-groups-search-short-row",
          ["grid-search", "--store", "{short_row}", "--out", "{root}/runs", "--models",
           "logistic_regression", "--cv", "2", "--n-jobs", "1", "--no-progress",
           "--groups-from-audit"], "run `run_pipeline.py audit",
          after=_left_as_it_was("short_row")),
    Fault("audit-duplicates-column-renamed", _fit("dupes_renamed", "--exclude-leaks"),
          "duplicates.csv", after=_left_as_it_was("dupes_renamed")),
    Fault("audit-summary-not-utf8", _fit("summary_latin1", "--groups-from-audit"),
          "needs a current audit", after=_left_as_it_was("summary_latin1")),
]
