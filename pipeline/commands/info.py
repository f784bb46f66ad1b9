"""`run_pipeline.py info STORE`: what a feature store holds and how it was made."""

from __future__ import annotations

from collections import Counter

HELP = "print what a feature store holds: rows, classes, splits, failures, provenance"


def add_arguments(parser) -> None:
    parser.add_argument("store", help="path of a feature store (.h5)")


def describe_store(path) -> str:
    from pipeline.store.feature_store import open_store

    with open_store(path) as store:
        prov = store.provenance
        labels = store.column("labels")
        counts = Counter(labels.tolist())
        lines = [
            f"store        {store.path}",
            f"rows         {len(store)} x {store.feature_shape} "
            f"({store.file['features'].dtype})",
            f"backbone     {prov.get('backbone')}  layer {prov.get('layer')}"
            + (f"  pooling {prov['pooling']}" if prov.get("pooling") else ""),
            f"weights      {prov.get('weights_label', prov.get('weights'))}",
            f"input        {prov.get('input_shape')}  resize {prov.get('resize', '')}  "
            f"preprocess {prov.get('preprocess')}",
            "classes      " + ", ".join(f"{name} ({counts.get(i, 0)})"
                                         for i, name in enumerate(store.class_names)),
            "splits       " + (", ".join(f"{s} ({len(store.indices(s))})" for s in store.splits)
                                or "none (fit-head makes a stratified split)"),
            "groups       " + (f"{len(set(store.column('group').tolist()))} distinct"
                                if store.has_groups else "none"),
            f"created      {prov.get('created_at')}  keras {prov.get('versions', {}).get('keras')}"
            f" ({prov.get('versions', {}).get('keras_backend')})",
            f"cache key    {store.key[:16]}",
        ]
        failures = store.failures()
        lines.append(f"failures     {len(failures)}")
        lines += [f"  {fid}: {reason}" for fid, reason in failures[:20]]
        if len(failures) > 20:
            lines.append(f"  ... and {len(failures) - 20} more")
    return "\n".join(lines)


def run(args) -> None:
    print(describe_store(args.store))
    return None
