"""`run_pipeline.py info STORE`: what a feature store holds and how it was made."""

from __future__ import annotations

from collections import Counter

from pipeline.extract.precision import describe_choice
from pipeline.extract.sources import reader_class_for, reader_class_named

HELP = "print what a feature store holds: rows, classes, splits, groups, reader, provenance"


def add_arguments(parser) -> None:
    parser.add_argument("store", help="path of a feature store (.h5) that extract printed")


def describe_store(path) -> str:
    """The lines `info` prints for one store."""
    from pipeline.store.feature_store import open_store  # lazy: h5py; the CLI starts without it

    with open_store(path) as store:
        prov = store.provenance
        labels = store.column("labels")
        counts = Counter(labels.tolist())
        made_split = "group-aware" if store.row_index.has_groups else "stratified"
        lines = [
            f"store        {store.path}",
            f"rows         {len(store)} x {store.feature_shape} "
            f"({store.file['features'].dtype})",
            f"backbone     {prov.get('backbone')}  layer {prov.get('layer')}"
            + (f"  pooling {prov['pooling']}" if prov.get("pooling") else ""),
            f"weights      {prov.get('weights_label', prov.get('weights'))}",
            f"input        {prov.get('input_shape')}  preprocess {prov.get('preprocess')}",
            f"reader       {describe_reader(prov)}",
            f"precision    {describe_choice(prov)}",
            "classes      " + ", ".join(f"{name} ({counts.get(i, 0)})"
                                         for i, name in enumerate(store.class_names)),
            "splits       " + (", ".join(f"{s} ({len(store.indices(s))})" for s in store.splits)
                                or f"none (fit-head makes a {made_split} split)"),
            f"groups       {describe_groups(store)}",
            f"created      {prov.get('created_at')}  keras {prov.get('versions', {}).get('keras')}"
            f" ({prov.get('versions', {}).get('keras_backend')})",
            f"cache key    {store.key[:16]}",
            f"vectors      {verify_vectors(store)}",
        ]
        if prov.get("imported"):  # `import`: no backbone, weights or reader made these vectors
            source = (prov.get("imported_from") or {}).get("vectors") or ""
            lines[2:6] = [f"imported     {prov['imported'].get('name')} from "
                          f"{source.rsplit('/', 1)[-1]} (sha256 "
                          f"{str(prov['imported'].get('sha256'))[:16]})"]
        if prov.get("preset"):  # a KerasHub preset: its class, architecture and token layout
            lines.append("preset       " + ", ".join(f"{k} {v}" for k, v in prov["preset"].items()))
        if store.n_views:  # extract --views: the augmented rows behind the plain ones
            views = prov.get("views") or {}
            lines.insert(2, f"views        {store.n_views} augmented view(s) per file "
                            f"({len(store.full_column('view')) - len(store)} rows), recipe "
                            f"{views.get('recipe')}, seed {views.get('seed')}")
        if prov.get("precision") == "int8":  # the guard's figures, threshold and decision
            from pipeline.extract.quantize import describe_guard  # lazy: h5py

            lines.append(f"int8 guard   {describe_guard(prov.get('int8_guard') or {})}")
        failures = store.failures()
        lines.append(f"failures     {len(failures)}")
        lines += [f"  {fid}: {reason}" for fid, reason in failures[:20]]
        if len(failures) > 20:
            lines.append(f"  ... and {len(failures) - 20} more")
    return "\n".join(lines)


def verify_vectors(store) -> str:
    """Reads every vector once: a `StoreError` naming the rows that fail their checksum or hold
    NaN or inf, else what was verified."""
    from pipeline.store import integrity  # lazy: h5py; the CLI starts without it

    features = store.file["features"]
    corrupt, non_finite = integrity.damaged_rows(features)
    if corrupt:
        raise integrity.corrupt_error(store.path, features, corrupt, store.provenance)
    if non_finite:
        raise integrity.non_finite_error(store.path, non_finite, store.provenance)
    if features.fletcher32:
        return "all finite, checksums verified"
    return "all finite (no checksums: written before stores carried them)"


def describe_reader(prov: dict) -> str:
    """The reader settings that made the vectors, as the reader that made them words them."""
    settings = prov.get("reader") or {}
    reader = reader_class_named(settings.get("reader", "image")) or reader_class_for("image")
    return reader.describe(prov)


def describe_groups(store) -> str:
    """`10 distinct, 10 in more than one split` and how to fix it, or `none`."""
    groups, splits = store.column("group").tolist(), store.column("split").tolist()
    if not any(groups):
        return "none"
    seen: dict = {}
    for group, split in zip(groups, splits):
        if group and split:
            seen.setdefault(group, set()).add(split)
    distinct = len({g for g in groups if g})
    text = f"{distinct} distinct"
    ungrouped = sum(1 for g in groups if not g)
    if ungrouped:
        text += f", {ungrouped} row(s) without a group"
    leaking = sum(1 for s in seen.values() if len(s) > 1)
    if leaking:
        text += (f", {leaking} in more than one split: validation scores will be optimistic; "
                 "drop the split column to let fit-head make a group-aware split, or move each "
                 "group to one split")
    return text


def run(args) -> None:
    print(describe_store(args.store))
    return None
