"""The frozen feature extractor: a trunk cut at the requested layer, pooled if asked.

The model is built once per extraction, frozen (`trainable = False`) and always called in
inference mode, so BatchNorm uses its moving statistics (seed 003's ResNet50 trap).
"""

from __future__ import annotations

from pipeline.extract.backbones.weights import load_trunk
from pipeline.errors import BackboneError

POOLINGS = ("avg", "max")


def resolve_layer_name(spec, trunk, layer: str) -> str:
    """Maps `pooled`, `pool5` or a layer name onto a layer of `trunk`."""
    if layer == "pooled":
        return spec.pooled_from or trunk.layers[-1].name
    name = spec.layer_aliases.get(layer, layer)
    if layer == "pool5" and name == "pool5" and "pool5" not in {l.name for l in trunk.layers}:
        name = trunk.layers[-1].name  # the last conv block's output of any keras.applications trunk
    try:
        trunk.get_layer(name)
    except ValueError:
        names = [l.name for l in trunk.layers]
        raise BackboneError(
            f"backbone '{spec.name}' has no layer '{layer}'. Use pooled, pool5, one of "
            f"{', '.join(sorted(spec.layer_aliases)) or 'no aliases'}, or a layer name such as "
            f"{', '.join(names[-4:])}.") from None
    return name


def build_feature_model(spec, weights: str, layer: str = "pooled", pooling: str = "avg",
                        input_size: int | None = None, precision: str = "float32",
                        raw_input: bool = False, frames: int | None = None):
    """Builds the frozen extractor.

    Args:
        spec: a `BackboneSpec`.
        weights: `imagenet`, `none` or a weights file path.
        layer: `pooled`, `pool5` or a layer name of the trunk.
        pooling: `avg` or `max`, used when `layer == "pooled"`.
        input_size: square spatial size overriding the spec's default.
        precision: float32, or float16/bfloat16 to compute in mixed precision (GPUs); the
            output is always float32.
        raw_input: take uint8 pixels and apply `spec.preprocess` inside the model (in float32),
            so only a quarter of the bytes cross to the device and no host thread converts.
        frames: clip length (`--frames`) for a clip backbone that takes any length (I3D).

    Returns:
        A `keras.Model` from the raw-preprocessed input to the feature tensor.
    """
    import keras

    if pooling not in POOLINGS:
        raise BackboneError(f"pooling must be one of {', '.join(POOLINGS)}; received: {pooling!r}")
    previous = keras.config.dtype_policy()
    if precision != "float32":  # the policy is global: set it only while the layers are made
        keras.config.set_dtype_policy(f"mixed_{precision}")
    try:
        trunk = load_trunk(spec, weights, spec.input_shape_for(input_size, frames))
    finally:
        keras.config.set_dtype_policy(previous)
    name = resolve_layer_name(spec, trunk, layer)
    out = trunk.get_layer(name).output
    if layer == "pooled" and not spec.pooled_from and len(out.shape) > 2:
        rank = len(out.shape) - 2
        pools = {
            ("avg", 2): keras.layers.GlobalAveragePooling2D, ("max", 2): keras.layers.GlobalMaxPooling2D,
            ("avg", 3): keras.layers.GlobalAveragePooling3D, ("max", 3): keras.layers.GlobalMaxPooling3D,
        }
        out = pools[(pooling, rank)](name=f"{pooling}_pool")(out)
    if precision != "float32":
        out = keras.layers.Activation("linear", dtype="float32", name="to_float32")(out)
    model = keras.Model(trunk.inputs[0], out, name=f"{spec.name}_features")
    if raw_input:
        pixels = keras.Input(shape=model.input.shape[1:], dtype="uint8", name="pixels")
        # Built under the float32 policy: mean subtraction stays exact even in mixed precision.
        x = spec.preprocess(keras.ops.cast(pixels, "float32"))
        model = keras.Model(pixels, model(x, training=False), name=f"{spec.name}_from_pixels")
    model.trainable = False
    return model
