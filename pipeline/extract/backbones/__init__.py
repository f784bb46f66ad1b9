"""Backbone registry: one small entry per backbone.

Contract: a backbone module calls `register_backbone(spec)` at import with a `BackboneSpec`
whose `build(weights, input_shape)` returns the headless Keras trunk. `get_backbone(name)`
returns the spec; preprocessing, feature layers and input size all come from it.

Any `keras.applications` model also works by its lower-case name (`mobilenet`,
`efficientnetb0`, `keras/EfficientNetB0`): `keras_apps.py` makes its spec on first use; so does
`hub_presets.py` for a KerasHub preset (a directory, an hf:// or kaggle:// handle, a name).

Add a backbone in three steps: write `build` and `preprocess`, register a `BackboneSpec` in a
module of this package, and import that module in `_load_builtin_backbones` below.
"""

from __future__ import annotations

from pipeline.extract.backbones.spec import BackboneSpec
from pipeline.extract.sources import reader_class_for
from pipeline.errors import BackboneError
from pipeline.extract.backbones.hub_presets import spec_for_preset

_REGISTRY: dict[str, BackboneSpec] = {}
_BUILTINS_LOADED = False


def register_backbone(spec: BackboneSpec, *, overwrite: bool = False) -> BackboneSpec:
    """Adds `spec` under `spec.name`; refuses to replace an entry silently."""
    if spec.name in _REGISTRY and not overwrite:
        raise BackboneError(f"backbone '{spec.name}' is already registered")
    reader = reader_class_for(spec.kind)
    if reader is not None and reader.needs_recipe and spec.clip_recipe is None:
        raise BackboneError(f"clip backbone '{spec.name}' needs a clip_recipe (how its frames are "
                            "resized, cropped and mean-subtracted; see sources.ClipRecipe)")
    _REGISTRY[spec.name] = spec
    return spec


def _load_builtin_backbones() -> None:
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    # Here, not at the top: each registers itself through this package (a circle), and
    # keras_apps loads Keras.
    from pipeline.extract.backbones import keras_apps  # noqa: F401  (resnet50, vgg19, ...)
    from pipeline.extract.backbones import c3d  # noqa: F401  (registers c3d)
    from pipeline.extract.backbones import i3d  # noqa: F401  (registers i3d)


def list_backbones() -> list[str]:
    """Registered names, plus a reminder that any keras.applications model also works."""
    _load_builtin_backbones()
    return sorted(_REGISTRY)


def kind_of(name: str) -> str:
    """The kind of backbone `name` (what its reader reads) without importing Keras, so the data
    can be listed and checked before the backend loads: a registered backbone's own kind
    (plugins, c3d and i3d register at import, cheaply), else `image`, the kind of every
    keras.applications model. An unknown name is refused later, by `get_backbone`."""
    # They register through this package, so importing them at its top would be a circle.
    from pipeline.extract.backbones import c3d, i3d  # noqa: F401  (register; Keras stays lazy)

    spec = _REGISTRY.get(name.strip())
    return spec.kind if spec is not None else "image"


def get_backbone(name: str) -> BackboneSpec:
    """Returns the spec for `name` (registered, or any keras.applications model)."""
    _load_builtin_backbones()
    key = name.strip()
    if key in _REGISTRY:
        return _REGISTRY[key]
    from pipeline.extract.backbones.keras_apps import spec_for_keras_application  # lazy: Keras

    spec = spec_for_keras_application(key)
    if spec is None:
        spec = spec_for_preset(key)
    if spec is None:
        raise BackboneError(
            f"unknown backbone '{name}'. Registered: {', '.join(list_backbones())}; "
            "or any keras.applications model by name (e.g. mobilenet, efficientnetb0, xception), "
            "or a KerasHub preset (a preset directory, an hf:// or kaggle:// handle, or a "
            "built-in preset name such as dinov2_small).")
    return spec


__all__ = ["BackboneSpec", "register_backbone", "get_backbone", "kind_of", "list_backbones"]
