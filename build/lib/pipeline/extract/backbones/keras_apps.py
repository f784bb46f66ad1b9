"""ResNet50, VGG19 and every other `keras.applications` model as registry entries.

Preprocessing is each application's own `preprocess_input` (ResNet50 and VGG19: "caffe" mode,
RGB->BGR and ImageNet mean subtraction, no scaling), never a hand-written copy.
"""

from __future__ import annotations

import importlib
import sys

from pipeline.extract.backbones import register_backbone
from pipeline.extract.backbones.spec import BackboneSpec
from pipeline.errors import ConfigError

# Native input sizes of the applications that are not 224x224.
_NATIVE_SIZE = {
    "xception": 299, "inceptionv3": 299, "inceptionresnetv2": 299, "nasnetlarge": 331,
    "efficientnetb1": 240, "efficientnetb2": 260, "efficientnetb3": 300, "efficientnetb4": 380,
    "efficientnetb5": 456, "efficientnetb6": 528, "efficientnetb7": 600,
    "efficientnetv2b1": 240, "efficientnetv2b2": 260, "efficientnetv2b3": 300,
    "efficientnetv2s": 384, "efficientnetv2m": 480, "efficientnetv2l": 480,
}


def _application_classes() -> dict:
    import keras

    apps = keras.applications
    return {name.lower(): getattr(apps, name) for name in dir(apps)
            if name[:1].isupper() and callable(getattr(apps, name))}


def _make_spec(name: str, constructor, layer_aliases: dict | None = None,
               notes: str = "") -> BackboneSpec:
    module = sys.modules[constructor.__module__]
    public_module = constructor.__module__.rsplit(".", 1)[-1]
    size = _NATIVE_SIZE.get(constructor.__name__.lower(), 224)

    def build(weights, input_shape):
        try:
            return constructor(include_top=False, weights=weights, input_shape=tuple(input_shape))
        except ValueError as exc:
            # Keras checks the size before it downloads anything: say so, not "download failed".
            if "input size must be at least" not in str(exc).lower():
                raise
            raise ConfigError(f"--input-size {input_shape[-2]} is too small for {name}: "
                              f"{str(exc).splitlines()[0]} Pass a larger --input-size.") from None

    return BackboneSpec(
        name=name,
        build=build,
        preprocess=module.preprocess_input,
        preprocess_name=f"keras.applications.{public_module}.preprocess_input",
        input_shape=(size, size, 3),
        layer_aliases=dict(layer_aliases or {}),
        notes=notes or f"keras.applications.{constructor.__name__}",
    )


def spec_for_keras_application(name: str) -> BackboneSpec | None:
    """Spec for any keras.applications model: `mobilenet`, `MobileNet` or `keras/MobileNet`."""
    key = name.split("/", 1)[1] if name.lower().startswith("keras/") else name
    key = key.replace("_", "").replace("-", "").lower()
    constructor = _application_classes().get(key)
    if constructor is None:
        return None
    return _make_spec(key, constructor)


def _register_named() -> None:
    resnet = importlib.import_module("keras.applications")
    register_backbone(_make_spec(
        "resnet50", resnet.ResNet50, {"pool5": "conv5_block3_out"},
        notes="ResNet50 (ImageNet): pooled 2048-d, pool5 7x7x2048 at 224"))
    register_backbone(_make_spec(
        "vgg19", resnet.VGG19, {"pool5": "block5_pool"},
        notes="VGG19 (ImageNet): pooled 512-d, pool5 7x7x512 at 224"))


_register_named()
