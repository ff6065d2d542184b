"""Image files read faithfully or refused by name: bit depths, modes, EXIF orientation, extensions, damage."""

import numpy as np
import pytest
from PIL import Image

from benchmark.config import DataConfig
from benchmark.data.photos import load_image_folder, read_image
from benchmark.models.imagenet import Preprocessing

PRE = Preprocessing(resize=32, crop=32)


def gradient(h=40, w=48):
    return np.add.outer(np.arange(h), np.arange(w)).astype(np.float64) / (h + w - 2)


def test_sixteen_bit_png_is_scaled_from_its_full_range_not_clipped(tmp_path):
    g = gradient()
    Image.fromarray(np.round(g * 65535).astype(np.uint16)).save(tmp_path / "deep.png")
    Image.fromarray(np.round(g * 255).astype(np.uint8)).save(tmp_path / "flat.png")
    deep, flat = (np.asarray(read_image(tmp_path / n)).astype(int) for n in ("deep.png", "flat.png"))
    assert deep.std() > 30  # not a constant white image
    assert np.abs(deep - flat).max() <= 1


@pytest.mark.parametrize("mode", ["P", "L", "RGBA", "CMYK", "LA"])
def test_modes_become_the_same_rgb(tmp_path, mode):
    rgb = (np.stack([gradient(), gradient()[::-1], np.full((40, 48), 0.5)], -1) * 255).astype(np.uint8)
    src = Image.fromarray(rgb)
    img = src.convert("L") if mode in ("L", "LA") else src
    expected = np.asarray(img.convert("RGB")).astype(int)
    name = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    (img.convert(mode) if mode != "P" else img.quantize(256)).save(name, **({"quality": 100} if mode == "CMYK" else {}))
    got = np.asarray(read_image(name)).astype(int)
    assert got.shape == expected.shape
    assert np.abs(got - expected).mean() < (12 if mode in ("P", "CMYK") else 1)


def test_transparency_is_composited_onto_white(tmp_path):
    a = np.zeros((8, 8, 4), np.uint8)
    a[..., 0] = 200
    a[:4, :, 3] = 255  # top half opaque red-ish, bottom half transparent
    Image.fromarray(a, "RGBA").save(tmp_path / "t.png")
    got = np.asarray(read_image(tmp_path / "t.png"))
    assert (got[:4] == [200, 0, 0]).all() and (got[4:] == 255).all()


def test_exif_orientation_is_applied(tmp_path):
    img = Image.fromarray((gradient(20, 40) * 255).astype(np.uint8)).convert("RGB")  # wide
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=100)
    assert read_image(tmp_path / "rot.jpg").size == (20, 40)  # tall, as shown


def test_upper_case_extensions_are_found_and_damaged_files_named(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    Image.fromarray((gradient() * 255).astype(np.uint8)).convert("RGB").save(root / "A.PNG")
    Image.fromarray((gradient() * 255).astype(np.uint8)).convert("RGB").save(root / "b.JPEG")
    data = load_image_folder(DataConfig(name="image_folder", root=str(root)), PRE)
    assert len(data.eval_images) == 2
    good = (root / "b.JPEG").read_bytes()
    (root / "c.jpg").write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(ValueError, match="c.jpg is not a readable image"):
        load_image_folder(DataConfig(name="image_folder", root=str(root)), PRE)
    (root / "c.jpg").write_text("not an image")
    with pytest.raises(ValueError, match="c.jpg is not a readable image"):
        load_image_folder(DataConfig(name="image_folder", root=str(root)), PRE)


def test_a_class_folder_outside_the_imagenet_indices_is_refused(tmp_path):
    folder = tmp_path / "photos" / "1234"
    folder.mkdir(parents=True)
    Image.fromarray((gradient() * 255).astype(np.uint8)).convert("RGB").save(folder / "x.png")
    with pytest.raises(ValueError, match="class folder '1234'"):
        load_image_folder(DataConfig(name="image_folder", root=str(tmp_path / "photos")), PRE)
