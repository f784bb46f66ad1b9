"""Decoding and discovery: modes, EXIF, resize policies, folder layouts and manifests."""

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import DataError, DecodeError
from pipeline.extract.sources import discover
from pipeline.extract.sources.images import IMAGE_EXTENSIONS, load_image
from pipeline.store.feature_store import open_store
from tests.conftest import register_tiny_trunk, write_images


def _save(path, img, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "I;16", "LA"])
def test_every_mode_becomes_8bit_rgb(tmp_path, mode):
    rng = np.random.default_rng(1)
    base = Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
    if mode == "I;16":
        img = Image.fromarray((rng.integers(0, 65536, (20, 30))).astype(np.uint16))
        assert img.mode.startswith("I;16")
        path = _save(tmp_path / "x.png", img)
    else:
        ext = ".jpg" if mode == "CMYK" else ".png"
        path = _save(tmp_path / f"x{ext}", base.convert(mode))
    out = load_image(path, (16, 24))
    assert out.shape == (16, 24, 3) and out.dtype == np.uint8
    assert out.std() > 0  # not a blank conversion


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    arr = np.full((8, 8), 65535 // 2, dtype=np.uint16)
    path = _save(tmp_path / "g.png", Image.fromarray(arr))
    out = load_image(path, (8, 8))
    assert 120 <= out.mean() <= 135  # mid-grey, not saturated white


def test_transparent_pixels_are_white(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)  # fully transparent black
    path = _save(tmp_path / "t.png", Image.fromarray(rgba, "RGBA"))
    assert (load_image(path, (4, 4)) == 255).all()


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 20, 20))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = _save(tmp_path / "o.jpg", img, exif=exif, quality=95)
    out = load_image(path, (40, 20))  # (height, width): displayed image is portrait
    assert out.shape == (40, 20, 3)
    top, bottom = out[:10].mean(axis=(0, 1)), out[-10:].mean(axis=(0, 1))
    assert top[2] > 200 and bottom[0] > 200  # blue half rotated to the top


def test_center_crop_keeps_aspect_ratio(tmp_path):
    img = Image.new("RGB", (60, 20), (255, 0, 0))
    img.paste((0, 255, 0), (20, 0, 40, 20))  # green square in the middle
    path = _save(tmp_path / "w.png", img)
    crop = load_image(path, (10, 10), "center_crop")
    squash = load_image(path, (10, 10), "squash")
    assert crop[..., 1].min() > 200  # only the green middle survives
    assert squash[..., 0].max() > 200  # squash keeps the red sides


@pytest.mark.parametrize("content,reason", [(b"", "empty file"), (b"not an image", "not a recognised")])
def test_bad_files_raise_decode_error(tmp_path, content, reason):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(DecodeError, match=reason):
        load_image(path, (8, 8))


def test_split_layout_with_validation_alias(tmp_path):
    write_images(tmp_path, split="train", per_class=2)
    write_images(tmp_path, split="validation", per_class=1)
    write_images(tmp_path, split="test", classes=("cat",), per_class=1)
    ds = discover(tmp_path, IMAGE_EXTENSIONS)
    assert ds.class_names == ("cat", "dog")
    assert [s.split for s in ds.samples].count("val") == 2
    assert {s.split for s in ds.samples} == {"train", "val", "test"}
    assert ds.samples[0].id.startswith("train/")


def test_label_missing_from_train_is_an_error(tmp_path):
    write_images(tmp_path, split="train", classes=("cat",), per_class=2)
    write_images(tmp_path, split="test", classes=("cat", "owl"), per_class=1)
    with pytest.raises(DataError, match="owl"):
        discover(tmp_path, IMAGE_EXTENSIONS)


def test_manifest_with_split_and_group(tmp_path):
    write_images(tmp_path / "imgs", per_class=2)
    rows = ["path,label,split,group", "imgs/cat/cat_0.png,cat,train,v1",
            "imgs/cat/cat_1.png,cat,val,v2", "imgs/dog/dog_0.png,dog,train,v3",
            "imgs/dog/dog_1.png,dog,validation,v4"]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    ds = discover(tmp_path / "m.csv", IMAGE_EXTENSIONS)
    assert [s.group for s in ds.samples if s.split == "val"] == ["v2", "v4"]
    (tmp_path / "bad.csv").write_text("file,label\nx.png,cat\n")
    with pytest.raises(DataError, match="path,label"):
        discover(tmp_path / "bad.csv", IMAGE_EXTENSIONS)


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="no input files"):
        discover(tmp_path / "empty", IMAGE_EXTENSIONS)


def test_symlinked_files_keep_their_names_in_the_data_folder(tmp_path):
    src = write_images(tmp_path / "src", classes=("cat",), per_class=1)
    linked = tmp_path / "data" / "cat"
    linked.mkdir(parents=True)
    for i in range(2):  # the same photo twice, under two names
        (linked / f"copy{i}.png").symlink_to(src / "cat" / "cat_0.png")
    ds = discover(tmp_path / "data", IMAGE_EXTENSIONS)
    assert [s.id for s in ds.samples] == ["cat/copy0.png", "cat/copy1.png"]


def test_only_folders_with_the_tools_marker_are_skipped_and_each_is_named(tmp_path, capsys):
    """Class folders that merely hold a run.json, a summary.json + report.html pair, a file
    named like a store, or that are (or once were) the --cache-dir, are data like any other;
    only folders carrying the tool's `.featcache-output` marker are left out, and the one line
    that says so names each of them."""
    from pipeline.outputs import write_marker
    from run_pipeline import main

    weights = register_tiny_trunk(tmp_path / "tiny.weights.h5")
    classes = ("cat", "runs", "reports", "stores", "old_cache", "cache_now")
    data = write_images(tmp_path / "photos", classes=classes, per_class=2, size=(24, 24))
    (data / "runs" / "run.json").write_text("{}")
    (data / "reports" / "summary.json").write_text("{}")
    (data / "reports" / "report.html").write_text("<html></html>")
    (data / "stores" / "a-b-c-0123456789.h5").write_bytes(b"")
    for folder in ("marked", "cat/plots"):
        write_images(data / folder, classes=("x",), per_class=1, size=(24, 24))
        write_marker(data / folder, "fit-head")
    common = ["extract", "--data", str(data), "--backbone", "tiny_trunk", "--weights",
              str(weights), "--no-progress"]
    assert main([*common, "--cache-dir", str(data / "old_cache")]) == 0
    capsys.readouterr()
    assert main([*common, "--cache-dir", str(data / "cache_now")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    with open_store(out[-1]) as store:
        assert list(store.class_names) == sorted(classes), store.class_names
        assert len(store) == 12 and not any("marked" in i or "plots" in i
                                            for i in store.column("ids"))
    named = [line for line in out if "skipped" in line]
    assert len(named) == 1 and "cat/plots" in named[0] and "marked" in named[0], out
