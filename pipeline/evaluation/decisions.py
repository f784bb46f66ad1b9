"""A review's decisions (decisions.csv, saved from the audit's report page) as a layer over a
store, read by fit-head and grid-search with `--decisions`.

The file starts with a line `# audit <identity>` naming the store it was reviewed on
(`audit_identity`: the store's vectors, files and row count), then a CSV `id,action,value`:

    drop     the row (and its augmented views) takes no part in the run
    relabel  the row's class becomes `value`, a class of the store
    group    the row joins the group named `value`, bringing the rest of its own group, so no
             split, fold or calibration share separates them
    keep     the row was reviewed and stays as it is

The store file is never changed: the labels and groups are read in its place (`use_labels`,
`use_groups`), and the dropped rows leave each part of the split where the audit's leaking rows
leave it (`exclusions.py`).

Usage:
    decisions = apply_decisions(store, "decisions.csv", echo)  # None without a file
    parts, n_dropped = decisions.drop_from([train, val, test])
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import ConfigError, DataError
from pipeline.outputs import require_regular_file
from pipeline.tables import TableError, parse_rows

ACTIONS = ("drop", "relabel", "group", "keep")
IDENTITY_PREFIX = "# audit "
COLUMNS = ("id", "action", "value")


def audit_identity(store) -> str:
    """The identity a decisions file names: 16 hex digits of the store's vector key, source
    fingerprint and row count, so a file reviewed on another store (or other files) is refused."""
    blob = json.dumps([store.key, store.provenance.get("source_fingerprint"), len(store)])
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Decisions:
    """What a decisions file changed: its path and digest, the dropped plain rows, and how many
    rows each action took."""

    path: str
    sha256: str
    dropped: np.ndarray
    applied: dict

    def record(self) -> dict:
        """For metrics.json and run.json."""
        return {"file": self.path, "sha256": self.sha256, "applied": dict(self.applied)}

    def drop_from(self, parts: list) -> tuple[list, int]:
        """(each part without the dropped rows, how many rows left the parts)."""
        kept = [np.setdiff1d(rows, self.dropped) for rows in parts]
        return kept, int(sum(len(a) - len(b) for a, b in zip(parts, kept)))


def apply_decisions(store, path, echo) -> Decisions | None:
    """`--decisions`: reads the file, checks every line against the store, and from now on reads
    the store with its relabelled rows and joined groups (the file on disk is not changed).

    Returns:
        The decisions (their dropped rows are left out by `exclusions.py`), or None without a
        file.

    Raises:
        ConfigError: the file is missing.
        DataError: a line names an id the store lacks, an unknown action, a class the store
            lacks, a group without a name, or contradicts another line; or the file was saved
            from another store's audit.
    """
    if not path:
        return None
    lines, digest = _read(store, Path(path))
    row_of = {row_id: i for i, row_id in enumerate(store.column("ids").tolist())}
    class_of = {name: k for k, name in enumerate(store.class_names)}
    changed: dict[int, tuple[int, str, str]] = {}  # row -> (line, action, value): drop/relabel
    joined: dict[int, list[str]] = {}
    kept: set[int] = set()
    for line, row in lines:
        row_id, action, value = (row.get(c) or "" for c in COLUMNS)
        where = f"{path} line {line}"
        if row_id not in row_of:
            raise DataError(f"{where}: id {row_id} is not a row of {store.path.name}; decisions "
                            "name rows by the ids of that store's audit, so review the audit of "
                            "the store you train on, or delete the line")
        if action not in ACTIONS:
            raise DataError(f"{where}: action '{action}' is not one of {', '.join(ACTIONS)}")
        if action == "relabel" and value not in class_of:
            raise DataError(f"{where}: class '{value}' is not a class of {store.path.name} "
                            f"({', '.join(store.class_names)}); relabel to one of those")
        if action == "group" and not value:
            raise DataError(f"{where}: a group decision needs a group name in the value column "
                            "(rows with the same name form one group)")
        r = row_of[row_id]
        if action == "group":
            joined.setdefault(r, []).append(value)
        elif action == "keep":
            kept.add(r)
        else:
            earlier = changed.setdefault(r, (line, action, value))
            if earlier[1:] != (action, value):
                raise DataError(f"{where}: {action} {value} contradicts line {earlier[0]} "
                                f"({earlier[1]} {earlier[2]}) for {row_id}; keep one of the two")
    relabelled = {r: class_of[v] for r, (_, a, v) in changed.items() if a == "relabel"}
    if relabelled:
        labels = store.column("labels").copy()
        labels[list(relabelled)] = list(relabelled.values())
        store.use_labels(labels)
    if joined:
        _join_groups(store, joined, Path(path).name)
    dropped = np.array(sorted(r for r, (_, a, _) in changed.items() if a == "drop"),
                       dtype=np.int64)
    decisions = Decisions(str(path), digest, dropped, {
        "drop": len(dropped), "relabel": len(relabelled), "group": len(joined),
        "keep": len(kept - set(changed))})  # a row also dropped or relabelled is not kept
    applied = decisions.applied
    echo(f"--decisions: {applied['drop']} row(s) dropped, {applied['relabel']} relabelled, "
         f"{applied['group']} grouped, {applied['keep']} kept as they are ({path}, sha256 "
         f"{digest[:12]}); the store itself is unchanged")
    return decisions


def _read(store, path: Path) -> tuple[list[tuple[int, dict]], str]:
    """((line number, row) of every decision, the file's sha256), once its first line names
    this store's audit."""
    require_regular_file(path, "decisions file",
                         fix="pass the decisions.csv saved from the audit's report.html")
    if not path.is_file():
        raise ConfigError(f"decisions file not found: {path}; pass the decisions.csv saved from "
                          "the audit's report.html")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text (byte {exc.start}); save it again from the "
                        "audit's report.html") from None
    first, _, rest = text.partition("\n")
    identity = audit_identity(store)
    expected = f"{IDENTITY_PREFIX}{identity}"
    if not first.startswith(IDENTITY_PREFIX):
        raise DataError(f"{path} has no `{IDENTITY_PREFIX}<identity>` first line naming the audit "
                        f"it was reviewed on; save it from the report.html of {store.path.name}'s "
                        f"audit, or make `{expected}` its first line")
    named = first[len(IDENTITY_PREFIX):].split()
    if named[:1] != [identity]:
        raise DataError(f"{path} was saved from another store's audit "
                        f"({named[0] if named else 'none named'}); {store.path.name} is audit "
                        f"{identity}: review the report.html of this store's audit")
    try:
        rows = parse_rows(io.StringIO(rest, newline=""), COLUMNS, first_line=2)
    except TableError as exc:
        raise DataError(f"{path}: {exc}; its lines are id,action,value after the header "
                        f"{','.join(COLUMNS)}") from None
    return ([(i + 3, row) for i, row in enumerate(rows) if any(row.values())],  # blank lines
            hashlib.sha256(data).hexdigest())


def _join_groups(store, joined: dict, source: str) -> None:
    """Joins each named group of the decisions with the groups its rows already belong to (the
    store's, or the audit's with --groups-from-audit); the joined rows take the first of their
    own group names, so no row outside them changes group."""
    own = store.row_index.group[:len(store)]
    parent: dict = {}

    def root(node):
        while parent.setdefault(node, node) != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for r, names in joined.items():
        for name in names:
            parent[root(("decision", name))] = root(("group", own[r]))
    members: dict = {}
    for r in range(len(own)):
        if ("group", own[r]) in parent:
            members.setdefault(root(("group", own[r])), []).append(r)
    groups = store.column("group").copy()
    for rows in members.values():
        groups[rows] = min(own[rows].tolist())
    was = store.groups_from
    store.use_groups(groups, source if was == "the store" else f"{was} + {source}")
