"""KerasHub presets as backbones: tiny presets with random weights, made here with
`save_to_preset`, against KerasHub's own model run through its own image converter."""

import json
import shutil

import numpy as np
import pytest

from conftest import write_images

SIZE = 28  # two 14-pixel patches a side: four patch tokens
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# A padding converter's pixels are rounded to uint8 (half a level at most), which KerasHub's own
# float path does not do: the vectors of the tiny DINOv2 below move by at most this much.
PAD_ROUNDING_BOUND = 2e-2  # measured: 1.05e-2 (half a level is 0.0087 after the std of 0.225)


def _dinov2(registers=4, seed=1):
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    return keras_hub.models.DINOV2Backbone(
        patch_size=14, num_layers=2, hidden_dim=32, num_heads=2, intermediate_dim=64,
        num_register_tokens=registers, image_shape=(SIZE, SIZE, 3),
        position_embedding_shape=(SIZE, SIZE, 3))


def _dinov2_converter(interpolation="bicubic"):
    import keras_hub

    return keras_hub.layers.DINOV2ImageConverter(
        image_size=(SIZE, SIZE), scale=[1 / (255 * s) for s in STD],
        offset=[-m / s for m, s in zip(MEAN, STD)], interpolation=interpolation, antialias=True)


def _siglip(seed=2):
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    vision = keras_hub.models.SigLIPVisionEncoder(
        patch_size=14, hidden_dim=32, num_layers=2, num_heads=2, intermediate_dim=64,
        image_shape=(SIZE, SIZE, 3))
    text = keras_hub.models.SigLIPTextEncoder(
        vocabulary_size=64, embedding_dim=32, hidden_dim=32, num_layers=1, num_heads=2,
        intermediate_dim=64, sequence_length=8)
    return keras_hub.models.SigLIPBackbone(vision, text)


@pytest.fixture(scope="module")
def presets(tmp_path_factory):
    import keras_hub

    root = tmp_path_factory.mktemp("hub")
    dino, siglip = _dinov2(), _siglip()
    dino.save_to_preset(str(root / "dino_tiny"))
    _dinov2_converter().save_to_preset(str(root / "dino_tiny"))
    siglip.save_to_preset(str(root / "siglip_tiny"))
    siglip_converter = keras_hub.layers.SigLIPImageConverter(
        image_size=(SIZE, SIZE), scale=1 / 127.5, offset=-1.0)
    siglip_converter.save_to_preset(str(root / "siglip_tiny"))
    data = write_images(root / "pets", per_class=3, size=(SIZE, SIZE))
    return {"root": root, "data": data, "dino": dino, "siglip": siglip,
            "siglip_converter": siglip_converter, "dino_converter": _dinov2_converter()}


def _extract(presets, backbone, **options):
    from pipeline.extract.run import run_extraction
    from pipeline.store.feature_store import open_store

    opts = {"data": str(presets["data"]), "backbone": str(backbone), "batch_size": 4,
            "cache_dir": str(presets["root"] / "cache"), **options}
    path = run_extraction(opts, progress=False, echo=lambda *_: None).path
    with open_store(path) as store:
        return path, list(store.column("ids")), np.asarray(store.file["features"][:]), \
            dict(store.provenance)


def _pixels(presets, ids):
    from PIL import Image

    return np.stack([np.asarray(Image.open(presets["data"] / i).convert("RGB"))
                     for i in ids]).astype(np.float32)


def test_dinov2_store_vectors_equal_keras_hub_through_its_own_converter(presets):
    """Class token at 0, four register tokens after it (never averaged), patches from 5."""
    wanted = {}
    for layer in ("pooled", "tokens_mean", "cls_tokens_mean"):
        path, ids, got, prov = _extract(presets, presets["root"] / "dino_tiny", layer=layer)
        sequence = np.asarray(presets["dino"](presets["dino_converter"](_pixels(presets, ids))))
        assert sequence.shape[1] == 1 + 4 + 4
        cls, mean = sequence[:, 0], sequence[:, 5:].mean(axis=1)
        wanted = {"pooled": cls, "tokens_mean": mean,
                  "cls_tokens_mean": np.concatenate([cls, mean], axis=1)}[layer]
        np.testing.assert_allclose(got, wanted, atol=1e-5)
        assert prov["preset"]["first_patch_token"] == 5 and prov["preset"]["class_token"] == 0
        assert prov["pooling"] is None  # a token, not a pooled map
    assert np.abs(wanted).max() > 0.1  # the check compares real numbers, not zeros


def test_siglip_pooled_and_projected_are_its_image_embedding(presets):
    from pipeline.extract.backbones import get_backbone

    images = None
    for layer in ("projected", "tokens_mean"):
        _, ids, got, prov = _extract(presets, presets["root"] / "siglip_tiny", layer=layer)
        images = presets["siglip_converter"](_pixels(presets, ids))
        encoder = presets["siglip"].vision_encoder
        if layer == "projected":  # the attention-pooling head: SigLIP's image embedding
            np.testing.assert_allclose(got, np.asarray(encoder(images)), atol=1e-5)
        else:  # SigLIP has no class token: every token is a patch
            import keras

            tokens = keras.Model(encoder.inputs, encoder.post_layer_norm.output)(images)
            np.testing.assert_allclose(got, np.asarray(tokens).mean(axis=1), atol=1e-5)
        assert prov["preset"]["family"] == "siglip" and prov["preset"]["class_token"] is None
    spec = get_backbone(str(presets["root"] / "siglip_tiny"))
    assert "cls_tokens_mean" not in spec.layer_aliases  # offered only with a class token


def test_every_converter_value_and_the_weights_digest_are_in_the_key(presets, tmp_path):
    from pipeline.extract.backbones import get_backbone
    from pipeline.extract.backbones.weights import identity_for

    base = get_backbone(str(presets["root"] / "dino_tiny"))
    values = json.loads(base.preprocess_name.split(" ", 3)[3])
    assert values["interpolation"] == "bicubic" and values["antialias"] is True
    assert values["image_size"] == [SIZE, SIZE] and values["crop_to_aspect_ratio"] is True
    np.testing.assert_allclose(values["scale"], [1 / (255 * s) for s in STD])
    # Another interpolation: other preprocessing. Other weights: another weights identity.
    shutil.copytree(presets["root"] / "dino_tiny", tmp_path / "bilinear")  # the same weights
    _dinov2_converter("bilinear").save_to_preset(str(tmp_path / "bilinear"))
    _dinov2(seed=7).save_to_preset(str(tmp_path / "reseeded"))
    _dinov2_converter().save_to_preset(str(tmp_path / "reseeded"))
    bilinear = get_backbone(str(tmp_path / "bilinear"))
    reseeded = get_backbone(str(tmp_path / "reseeded"))
    assert bilinear.preprocess_name != base.preprocess_name
    assert reseeded.preprocess_name == base.preprocess_name
    weights = {identity_for(s, "imagenet") for s in (base, bilinear, reseeded)}
    assert len(weights) == 2 and all(w.startswith("sha256:") for w in weights)
    assert identity_for(base, "none") == "none"
    # No registers: another token layout, another architecture digest.
    _dinov2(registers=0).save_to_preset(str(tmp_path / "plain"))
    plain = get_backbone(str(tmp_path / "plain"))
    assert plain.identity["preset"]["first_patch_token"] == 1
    assert plain.identity["preset"]["config_sha256"] != base.identity["preset"]["config_sha256"]
    # Its converter has none: the family's published mean and std, said so.
    plain_values = json.loads(plain.preprocess_name.split(" ", 3)[3])
    assert plain_values["source"].startswith("published mean and std")
    np.testing.assert_allclose(plain_values["offset"], [-m / s for m, s in zip(MEAN, STD)])


def test_info_shows_the_preset(presets, capsys):
    from run_pipeline import main

    path, *_ = _extract(presets, presets["root"] / "dino_tiny")
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "preset       class DINOV2Backbone" in out and "first_patch_token 5" in out
    assert "keras_hub image converter" in out and "preset weights sha256:" in out


def _cli_error(argv, capsys) -> str:
    from run_pipeline import main

    assert main(argv) == 2
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, captured.err
    assert "Retrying" not in captured.err  # the hubs' own retry notices stay quiet
    return errors[0]


@pytest.mark.parametrize("preset, host", [("dinov2_with_registers_small", "api.kaggle.com"),
                                          ("hf://facebook/dinov2-small", "huggingface.co")])
def test_a_preset_name_or_handle_offline_says_to_pass_a_directory(presets, tmp_path, capsys,
                                                                   preset, host):
    from pipeline.extract.backbones.imagenet_download import host_reachable

    if host_reachable(host):
        pytest.skip(f"this machine reaches {host}: the preset would download")
    line = _cli_error(["extract", "--data", str(presets["data"]), "--backbone", preset,
                       "--cache-dir", str(tmp_path / "c"), "--no-progress"], capsys)
    assert preset in line and "local preset directory" in line
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").glob("*.h5"))


def test_a_weights_file_or_another_input_size_is_refused(presets, tmp_path, capsys):
    base = ["extract", "--data", str(presets["data"]), "--backbone",
            str(presets["root"] / "dino_tiny"), "--cache-dir", str(tmp_path / "c"),
            "--no-progress"]
    weights = tmp_path / "other.weights.h5"
    weights.write_bytes(b"not used")
    assert "carries its own weights" in _cli_error(base + ["--weights", str(weights)], capsys)
    assert "runs at 28x28" in _cli_error(base + ["--input-size", "56"], capsys)
    assert "not a KerasHub preset" in _cli_error(
        base[:3] + ["--backbone", str(tmp_path)] + base[5:], capsys)


def test_openvino_float32_equals_tensorflow_and_int8_is_guarded(presets):
    dino = presets["root"] / "dino_tiny"
    _, ids, reference, _ = _extract(presets, dino, engine="tensorflow")
    _, ids_ov, native, prov = _extract(presets, dino, engine="openvino",
                                       cache_dir=str(presets["root"] / "ov"))
    assert ids_ov == ids and prov["engine"] == "openvino"
    np.testing.assert_allclose(native, reference, atol=1e-5)
    _, _, quantized, prov = _extract(presets, dino, engine="openvino", precision="int8",
                                     calibration_size=4, cache_dir=str(presets["root"] / "q"))
    guard = prov["int8_guard"]
    # Either the int8 vectors pass the guard, or they are refused and float32 ones stored.
    if guard["decision"].startswith("refused"):
        np.testing.assert_allclose(quantized, reference, atol=1e-5)
    else:
        assert guard["cosine_median"] >= guard["threshold"]


def test_a_convolutional_preset_pools_its_last_map(presets, tmp_path):
    import keras
    import keras_hub

    keras.utils.set_random_seed(4)
    resnet = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 32],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block")
    converter = keras_hub.layers.ResNetImageConverter(image_size=(SIZE, SIZE), scale=1 / 255.0)
    resnet.save_to_preset(str(tmp_path / "resnet_tiny"))
    converter.save_to_preset(str(tmp_path / "resnet_tiny"))
    for pooling in ("avg", "max"):
        _, ids, got, prov = _extract(presets, tmp_path / "resnet_tiny", pooling=pooling)
        maps = np.asarray(resnet(converter(_pixels(presets, ids))))
        assert maps.ndim == 4
        wanted = maps.mean(axis=(1, 2)) if pooling == "avg" else maps.max(axis=(1, 2))
        np.testing.assert_allclose(got, wanted, atol=1e-5)
        assert prov["pooling"] == pooling and prov["preset"]["family"] == "convolutional"


def test_clip_pooled_is_the_class_token_and_projected_its_image_embedding(presets, tmp_path):
    import keras
    import keras_hub

    keras.utils.set_random_seed(5)
    vision = keras_hub.models.CLIPVisionEncoder(
        patch_size=14, hidden_dim=32, num_layers=2, num_heads=2, intermediate_dim=64,
        image_shape=(SIZE, SIZE, 3))
    text = keras_hub.models.CLIPTextEncoder(
        vocabulary_size=64, embedding_dim=32, hidden_dim=32, num_layers=1, num_heads=2,
        intermediate_dim=64, max_sequence_length=8)
    clip = keras_hub.models.CLIPBackbone(vision, text, projection_dim=16)
    clip.save_to_preset(str(tmp_path / "clip_tiny"))  # its converter: none, so CLIP's mean/std
    mean, std = np.array([0.48145466, 0.4578275, 0.40821073]), \
        np.array([0.26862954, 0.26130258, 0.27577711])
    for layer in ("pooled", "projected"):
        _, ids, got, prov = _extract(presets, tmp_path / "clip_tiny", layer=layer)
        images = (_pixels(presets, ids) / 255.0 - mean) / std
        sequence = np.asarray(vision(images.astype(np.float32)))
        wanted = sequence[:, 0] if layer == "pooled" else \
            np.asarray(clip.get_vision_embeddings(images.astype(np.float32)))
        assert wanted.shape[1] == (32 if layer == "pooled" else 16)
        np.testing.assert_allclose(got, wanted, atol=1e-5)
        assert prov["preset"]["family"] == "clip" and prov["preset"]["first_patch_token"] == 1


def test_keras_hub_is_imported_only_when_a_preset_is_asked_for(presets):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    script = f"""
import sys
sys.path.insert(0, {str(root)!r})
import pipeline, pipeline.extract.options, pipeline.extract.run
from pipeline.extract.backbones import get_backbone, kind_of
kind_of({str(presets["root"] / "dino_tiny")!r}); get_backbone("resnet50"); get_backbone("mobilenet")
before = "keras_hub" in sys.modules
get_backbone({str(presets["root"] / "dino_tiny")!r})
print(before, "keras_hub" in sys.modules)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-2:] == ["False", "True"]


def _odd_photos(root):
    """A 320x240 JPEG and a tall PNG, neither at the preset's size nor square."""
    from PIL import Image

    rng = np.random.default_rng(11)
    for name, (height, width), ext in (("wide", (240, 320), ".jpg"), ("tall", (70, 30), ".png")):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(2):
            smooth = rng.integers(0, 256, (height // 10 + 2, width // 10 + 2, 3), np.uint8)
            img = Image.fromarray(smooth).resize((width, height), Image.Resampling.BICUBIC)
            noisy = np.clip(np.asarray(img, np.int16) + rng.integers(-40, 41, (height, width, 3)),
                            0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(folder / f"{name}_{i}{ext}", quality=92)
    return root


@pytest.mark.parametrize("aspect, interpolation, antialias", [
    ("crop", "bicubic", True), ("pad", "bilinear", False), ("squash", "nearest", False)])
def test_photos_of_any_size_are_resized_as_the_converter_does(presets, tmp_path, aspect,
                                                               interpolation, antialias):
    """Store vectors equal KerasHub's backbone on its own converter's output for the decoded
    photo (uint8, as a photo decodes), whatever the photo's size and aspect ratio."""
    import keras_hub
    from PIL import Image

    converter = keras_hub.layers.DINOV2ImageConverter(
        image_size=(SIZE, SIZE), scale=[1 / (255 * s) for s in STD],
        offset=[-m / s for m, s in zip(MEAN, STD)], interpolation=interpolation,
        antialias=antialias, crop_to_aspect_ratio=aspect == "crop",
        pad_to_aspect_ratio=aspect == "pad")
    shutil.copytree(presets["root"] / "dino_tiny", tmp_path / "preset")  # the same weights
    converter.save_to_preset(str(tmp_path / "preset"))
    data = _odd_photos(tmp_path / "photos")
    _, ids, got, prov = _extract(presets, tmp_path / "preset", data=str(data),
                                 cache_dir=str(tmp_path / "cache"))
    dino, unrounded = presets["dino"], 0.0
    for row, sample in zip(got, ids):
        photo = np.asarray(Image.open(data / sample).convert("RGB"))[None]
        if aspect != "pad":
            wanted = np.asarray(dino(converter(photo)))[0, 0]  # the class token
        else:  # Keras pads float images only: its float pixels, rounded as a uint8 photo is
            pixels = np.round(np.asarray(converter.resizing(photo.astype(np.float32))))
            wanted = np.asarray(dino(pixels * np.float32(converter.scale)
                                     + np.float32(converter.offset)))[0, 0]
            as_float = np.asarray(dino(converter(photo.astype(np.float32))))[0, 0]
            unrounded = max(unrounded, float(np.abs(row - as_float).max()))
        np.testing.assert_allclose(row, wanted, atol=1e-5, err_msg=sample)
    assert np.abs(got).max() > 0.1
    print(f"max |vector - KerasHub on the unrounded float photo| = {unrounded:.2e}")
    assert unrounded <= PAD_ROUNDING_BOUND
    assert prov["reader"]["aspect"] == {"crop": "crop_to_aspect_ratio", "squash": "squash",
                                        "pad": "pad_to_aspect_ratio"}[aspect]
    assert prov["reader"]["interpolation"] == interpolation


def test_a_resize_that_contradicts_the_converter_is_refused(presets, tmp_path, capsys):
    base = ["extract", "--data", str(presets["data"]), "--backbone",
            str(presets["root"] / "dino_tiny"), "--cache-dir", str(tmp_path / "c"),
            "--no-progress"]
    line = _cli_error(base + ["--resize", "squash"], capsys)
    assert "--resize squash" in line and "crop to aspect ratio" in line and "leave out" in line
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").glob("*.h5"))


def test_decode_processes_resize_as_threads_do(presets, tmp_path):
    """Each decode process builds the converter's Resizing layer itself: the same pixels."""
    data = _odd_photos(tmp_path / "photos")
    runs = {}
    for decode in ("threads", "processes"):
        _, ids, got, prov = _extract(presets, presets["root"] / "dino_tiny", data=str(data),
                                     decode=decode, workers=2,
                                     cache_dir=str(tmp_path / decode))
        runs[decode] = (ids, got)
        assert prov["reader"]["resize"] == "image_converter"
    assert runs["threads"][0] == runs["processes"][0]
    np.testing.assert_array_equal(runs["threads"][1], runs["processes"][1])
