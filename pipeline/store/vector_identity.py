"""What a vector is: one key over everything that changes the stored vectors.

Extract builds the identity (a dict with the fields below) and names its store and its
`cache_key` attribute after `vector_key(identity)`; predict, export, `audit --run` and the
search's model loading compare that same key before they let a model see vectors.

The identity holds the vectors' recipe only, never the data's identity: the data root's
absolute path is not in it, so a dataset moved to another folder is still a cache hit (ids are
relative to the root and each file's size:mtime stamp guards its row).

    from pipeline.store.vector_identity import vector_key, vector_differences
    key = vector_key(identity)
    wrong = vector_differences(run_provenance, store.provenance)   # [] when the same vectors
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from pipeline.store.feature_store import SCHEMA_VERSION, cache_key

# Bumped whenever the meaning of a field changes, so an older key can never match a newer one.
IDENTITY_VERSION = 2
# The provenance field (and root attribute) holding a store's key.
KEY_FIELD = "vector_key"
# What a store made before keys were recorded shows in a message, with the fix.
OLDER = "none (a store made by an older version: extract its data again and fit again)"

# Each field of the identity, with the extract options it is made from. The options are what
# predict and export pass to extract again to rebuild the same extractor.
FIELDS = {
    "backbone": ("backbone",),
    "weights": ("weights",),          # the file's sha256 identity, not its path
    "random_init": (),                # seed and Keras backend of --weights none
    "layer": ("layer",),
    "pooling": ("pooling",),          # None where it changes nothing (a vector layer)
    "input_shape": ("input_size", "frames"),  # frames: clip backbones of any length (i3d)
    "preprocess": (),                 # the backbone's own preprocessing
    "reader": ("resize", "jpeg_draft", "frames", "short", "sampling", "stride", "num_clips",
               "fps", "mean_file"),   # the reader's own settings(): decoding and resizing
    "dtype": ("dtype",),
    "precision": ("precision",),
    "calibration": ("calibration_size", "int8_min_cosine", "int8_refusal"),  # int8 only: the
                                      # images that set its scales and the guard's rule
    "aggregate": ("aggregate",),      # clip backbones only
    "l2_normalize": ("l2_normalize",),  # clip backbones only
    "temporal_pool": ("temporal_pool",),  # image backbones on clip frames only: mean, max
                                      # or none (a row per frame)
    "preset": (),                     # KerasHub presets only: architecture digest, token layout
    "views": (),                      # view rows only: --augment's recipe and --view-seed
                                      # (views.py); absent for plain rows, whose key stays
                                      # that of a store made without views
    "imported": (),                   # `import` only: the input files' sha256 and --name; an
                                      # imported store has no backbone, so no other field
}
REQUIRED = ("backbone", "weights", "layer", "pooling", "input_shape", "preprocess", "reader",
            "dtype", "precision")
# Options that change no vector but are needed to build the extractor again: the user's
# modules that register its backbone (`--plugin`).
BUILD_ONLY_OPTIONS = ("plugin",)
# The extract options a store records so that its extractor can be built again.
REBUILD_OPTIONS = tuple(dict.fromkeys([*(option for options in FIELDS.values()
                                         for option in options), *BUILD_ONLY_OPTIONS]))


def vector_key(identity: dict) -> str:
    """sha256 of the identity (canonical JSON); the store's file name holds its first 10 digits.

    Raises:
        ValueError: a field outside `FIELDS`, or a required one missing from the identity of
            extracted vectors (a bug in the caller).
    """
    unknown = sorted(set(identity) - set(FIELDS))
    missing = [] if "imported" in identity else [f for f in REQUIRED if f not in identity]
    if unknown or missing:
        raise ValueError(f"vector identity: unknown field(s) {unknown}, missing {missing}")
    return cache_key({"identity_version": IDENTITY_VERSION, "schema_version": SCHEMA_VERSION,
                      **identity})


def identity_of(provenance: dict) -> dict:
    """The identity fields recorded in a store's provenance (or a run's copy of it)."""
    return {f: provenance[f] for f in FIELDS if f in provenance}


def rebuild_options(options) -> dict:
    """The options of `REBUILD_OPTIONS` from extract's options (a mapping or a config)."""
    get = options.get if isinstance(options, Mapping) else lambda k: getattr(options, k, None)
    return {k: get(k) for k in REBUILD_OPTIONS if get(k) is not None}


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def vector_differences(expected: dict, given: dict) -> list[tuple[str, object, object]]:
    """(field, expected value, given value) for each way two provenances' vectors differ.

    Both carry a key (stores made by this version): equal keys mean the same vectors. Otherwise
    the identity fields are compared one by one, so a key mismatch is always explained; a key
    mismatch with no differing field (a store of an older version) is reported as the key.
    """
    key_a, key_b = expected.get(KEY_FIELD), given.get(KEY_FIELD)
    if key_a and key_b and key_a == key_b:
        return []
    diffs = [(f, expected.get(f), given.get(f)) for f in FIELDS
             if (f in expected or f in given)
             and _canonical(expected.get(f)) != _canonical(given.get(f))]
    if not diffs and (key_a or key_b) and key_a != key_b:
        diffs = [(KEY_FIELD, key_a or OLDER, key_b or OLDER)]
    return diffs


def describe_differences(diffs, expected_name: str = "trained on",
                         given_name: str = "given") -> str:
    """`reader.resize: trained on 'squash' vs given 'center_crop'; ...` (a dict field, such as
    the reader's settings, names only its entries that differ)."""
    parts = []
    for field, a, b in diffs:
        if isinstance(a, dict) and isinstance(b, dict):
            inner = [(f"{field}.{k}", a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
                     if _canonical(a.get(k)) != _canonical(b.get(k))]
        else:
            inner = [(field, a, b)]
        parts += [f"{name}: {expected_name} {_short(x)} vs {given_name} {_short(y)}"
                  for name, x, y in inner]
    return "; ".join(parts)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."
