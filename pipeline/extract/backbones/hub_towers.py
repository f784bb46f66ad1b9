"""The image towers of KerasHub backbones and where their tokens sit.

A KerasHub vision backbone ends in a sequence of tokens (ViT family) or a feature map
(convolutional). `feature_trunk` puts named built-in layers on top of that output, one per
`--layer` the family offers, so the usual layer lookup of `feature_model.py` cuts the trunk at
any of them and an exported model needs no layer of this package:

- `hub_pooled` (`--layer pooled`): the class token of the final, normalised sequence (DINOv2,
  ViT, CLIP); SigLIP, which has no class token, gives its attention-pooling head's output;
- `hub_tokens_mean` (`--layer tokens_mean`): the mean of the patch tokens only (never the
  class or register tokens);
- `hub_cls_tokens_mean` (`--layer cls_tokens_mean`): both, concatenated (the DINOv2
  linear-probe recipe), for families with a class token;
- `hub_projected` (`--layer projected`): CLIP's image projection of the pooled token, or
  SigLIP's head output (its image embedding).

A convolutional backbone (any whose output is a map) is taken as it is: `pooled` is the global
average (or `--pooling max`) of its last map.

Token layout of the final sequence, per family: DINOv2 `[class, registers..., patches...]`,
ViT and CLIP `[class, patches...]`, SigLIP `[patches...]`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

# Published normalisation, for presets whose image converter brings none (KerasHub's
# conversions of Hugging Face DINOv2 and ViT checkpoints, for one).
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
CLIP_MEAN_STD = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))

LAYER_NAMES = {"tokens_mean": "hub_tokens_mean", "cls_tokens_mean": "hub_cls_tokens_mean",
               "projected": "hub_projected"}
POOLED = "hub_pooled"


@dataclass(frozen=True)
class Tower:
    """How one KerasHub backbone class holds its image tower.

    Attributes:
        family: a short name recorded in the cache key (dinov2, vit, clip, siglip).
        mean_std: the model's published normalisation (used when the preset has none).
        encoder: backbone -> the functional model whose output is the final sequence or the
            head (the backbone itself, or its vision encoder).
        sequence: encoder -> the final normalised token sequence (batch, tokens, dim).
        class_token: backbone -> index of the class token, or None.
        first_patch: backbone -> index of the first patch token.
        head: (backbone, encoder) -> the pooled image embedding where the family pools with a
            head of its own (SigLIP), else None.
        projection: (backbone, pooled tensor) -> the projected embedding, or None.
    """

    family: str
    mean_std: tuple
    encoder: Callable
    sequence: Callable
    class_token: Callable
    first_patch: Callable
    head: Callable | None = None
    projection: Callable | None = None


def _itself(backbone):
    return backbone


def _vision(backbone):
    return backbone.vision_encoder


def _final_output(encoder):
    return encoder.output


def _clip_sequence(encoder):
    out = encoder.output
    return out["sequence_output"] if isinstance(out, dict) else out


def _siglip_sequence(encoder):
    return encoder.post_layer_norm.output


def _registers_then_patches(backbone):
    return 1 + int(getattr(backbone, "num_register_tokens", 0))


def _vit_class_token(backbone):
    return 0 if getattr(backbone, "use_class_token", True) else None


def _vit_first_patch(backbone):
    return 1 if getattr(backbone, "use_class_token", True) else 0


def _clip_projection(backbone, pooled):
    projection = getattr(backbone, "vision_projection", None)
    return None if projection is None else projection(pooled)


TOWERS: dict[str, Tower] = {
    "DINOV2Backbone": Tower("dinov2", IMAGENET_MEAN_STD, _itself, _final_output,
                            lambda b: 0, _registers_then_patches),
    "ViTBackbone": Tower("vit", HALF_MEAN_STD, _itself, _final_output, _vit_class_token,
                         _vit_first_patch),
    "CLIPBackbone": Tower("clip", CLIP_MEAN_STD, _vision, _clip_sequence, lambda b: 0,
                          lambda b: 1, projection=_clip_projection),
    "CLIPVisionEncoder": Tower("clip", CLIP_MEAN_STD, _itself, _clip_sequence, lambda b: 0,
                               lambda b: 1),
    "SigLIPBackbone": Tower("siglip", HALF_MEAN_STD, _vision, _siglip_sequence,
                            lambda b: None, lambda b: 0, head=lambda b, e: e.output,
                            projection=lambda b, pooled: pooled),
    "SigLIPVisionEncoder": Tower("siglip", HALF_MEAN_STD, _itself, _siglip_sequence,
                                 lambda b: None, lambda b: 0, head=lambda b, e: e.output,
                                 projection=lambda b, pooled: pooled),
}


def tower_for(class_name: str) -> Tower | None:
    return TOWERS.get(class_name)


def token_layout(tower: Tower, backbone) -> dict:
    """What the key and `info` record of how the vectors are read off the sequence."""
    return {"family": tower.family, "class_token": tower.class_token(backbone),
            "first_patch_token": tower.first_patch(backbone),
            "pooled": "class token" if tower.class_token(backbone) is not None
            else ("attention-pooling head" if tower.head else "mean of patch tokens")}


def feature_trunk(backbone, tower: Tower | None):
    """A functional model from the backbone's images to every feature the family offers, each
    the output of a named built-in layer (see the module doc). A convolutional backbone
    (`tower` None) is returned as it is."""
    import keras

    if tower is None:
        return backbone
    encoder = tower.encoder(backbone)
    images = encoder.inputs[0]
    sequence = tower.sequence(encoder)
    tokens, dim = int(sequence.shape[1]), int(sequence.shape[2])
    layers = keras.layers
    first = tower.first_patch(backbone)
    patches = layers.Cropping1D((first, 0), name="hub_patch_tokens")(sequence) if first else \
        sequence
    mean = layers.GlobalAveragePooling1D(name=LAYER_NAMES["tokens_mean"])(patches)
    outputs = [mean]
    index = tower.class_token(backbone)
    cls = None
    if index is not None:
        cut = layers.Cropping1D((index, tokens - index - 1), name="hub_class_token_1")(sequence)
        cls = layers.Reshape((dim,), name="hub_class_token")(cut)
        outputs.append(layers.Concatenate(name=LAYER_NAMES["cls_tokens_mean"])([cls, mean]))
    pooled = tower.head(backbone, encoder) if tower.head else cls if cls is not None else mean
    pooled = layers.Identity(name=POOLED)(pooled)
    outputs.append(pooled)
    projected = tower.projection(backbone, pooled) if tower.projection else None
    if projected is not None:
        outputs.append(layers.Identity(name=LAYER_NAMES["projected"])(projected))
    return keras.Model(images, outputs, name=f"{tower.family}_tower")


def offered_layers(tower: Tower | None, backbone) -> dict:
    """`--layer` name -> trunk layer name, for the layers this backbone has."""
    if tower is None:
        return {}
    names = {"tokens_mean": LAYER_NAMES["tokens_mean"]}
    if tower.class_token(backbone) is not None:
        names["cls_tokens_mean"] = LAYER_NAMES["cls_tokens_mean"]
    if tower.projection is not None and (tower.head is not None or
                                         getattr(backbone, "vision_projection", None)):
        names["projected"] = LAYER_NAMES["projected"]
    return names
