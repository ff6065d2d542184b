"""Photographs for ImageNet models: an image folder, or scikit-image's bundled photographs.

``image_folder``: ``data.root`` holds images, either in class subfolders (torchvision's
ImageFolder layout, e.g. a subset of the ImageNet validation split sorted into one folder per
class) or flat. Subfolders named by ImageNet class index (``0`` ... ``999``) give labels;
subfolders named by WordNet id (``n01440764``) give labels when ``data.class_index`` points at a
file with the 1000 ids in class order (one per line, or the JSON of Keras' ``imagenet_class_index``);
otherwise labels are unknown (-1) and accuracy and ``target=label`` are unavailable.

``skimage_photos``: the colour photographs scikit-image ships (astronaut, chelsea the cat,
coffee, rocket), for an offline smoke run; labels unknown.

Every image is resized (shorter side), center-cropped and scaled as the model expects
(``benchmark.models.imagenet.Preprocessing``). There is no train split: these models are not
trained here.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image

from benchmark.config import DataConfig
from benchmark.data import Dataset
from benchmark.models.imagenet import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp")  # any letter case
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def read_image(path: Path) -> Image.Image:
    """An image file as 8-bit RGB, read faithfully or refused naming the file.

    EXIF orientation applied; palette, grayscale and CMYK converted; transparency composited onto white;
    16-bit and 32-bit integer images (PNG, TIFF) scaled from their full range, not clipped at 255; float
    images taken as [0, 1]. A truncated, unreadable or non-image file is a ValueError.
    """
    from PIL import ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            opened.load()
            img = ImageOps.exif_transpose(opened)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"data.root: {path} is not a readable image ({type(err).__name__}: {err}); remove or "
                         "replace it") from None
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img).astype(np.float64)
        if img.mode == "F":
            full = 1.0
        elif img.mode == "I" and arr.max(initial=0) > 65535:
            full = 2.0**31 - 1
        else:
            full = 65535.0
        if arr.min(initial=0) < 0 or arr.max(initial=0) > full:
            raise ValueError(f"data.root: {path} holds {img.mode} values outside [0, {full:g}]; save it as an 8- or "
                             "16-bit image")
        img = Image.fromarray(np.round(arr / full * 255.0).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return img.convert("RGB")


def to_input(image: Image.Image, pre: Preprocessing) -> torch.Tensor:
    """(3, crop, crop) float32: shorter side resized to ``pre.resize`` (bilinear), center crop, scaled."""
    from torchvision.transforms import functional as TF

    img = TF.resize(image.convert("RGB"), pre.resize, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    x = TF.to_tensor(TF.center_crop(img, [pre.crop, pre.crop]))
    if pre.scaling == "minus_one_one":
        return x * 2.0 - 1.0
    return TF.normalize(x, IMAGENET_MEAN, IMAGENET_STD)


def _dataset(name: str, images: list[torch.Tensor], labels: list[int], pre: Preprocessing,
             provenance: dict) -> Dataset:
    x = torch.stack(images)
    y = torch.tensor(labels, dtype=torch.long)
    return Dataset(name=name, train_images=x[:0], train_labels=y[:0], eval_images=x, eval_labels=y,
                   num_classes=1000, input_range=pre.input_range(),
                   provenance={**provenance, "preprocessing": dataclasses.asdict(pre),
                               "labels_known": bool((y >= 0).all()) if len(y) else False})


def _class_index(path: Optional[str]) -> Optional[dict[str, int]]:
    if path is None:
        return None
    text = Path(path).expanduser().read_text()
    if text.lstrip().startswith("{"):  # Keras: {"0": ["n01440764", "tench"], ...}
        return {v[0]: int(k) for k, v in json.loads(text).items()}
    return {line.split()[0]: i for i, line in enumerate(s for s in text.splitlines() if s.strip())}


def load_image_folder(cfg: DataConfig, pre: Preprocessing, limit: Optional[int] = None) -> Dataset:
    if cfg.root is None:
        raise ValueError("data.root is not set; point data.root at a folder of images (class subfolders or flat), "
                         "e.g. data.root=/data/imagenet_val_subset")
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise ValueError(f"data.root={cfg.root!r} does not exist or is not a folder; point it at a folder of images")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS)
    if not files:
        raise ValueError(f"data.root={cfg.root!r} holds no images ({', '.join(EXTENSIONS[:6])}, ...); "
                         "point it at a folder of photographs")
    if limit is not None:
        files = files[:limit]
    index = _class_index(cfg.class_index)
    labels = []
    for f in files:
        folder = f.parent.name if f.parent != root else None
        if folder is not None and re.fullmatch(r"\d+", folder):
            if not 0 <= int(folder) < 1000:
                raise ValueError(f"data.root: class folder {folder!r} ({f.parent}) is not an ImageNet class index "
                                 "(0 to 999); rename it, or use WordNet ids with data.class_index")
            labels.append(int(folder))
        elif folder is not None and index is not None and folder in index:
            labels.append(index[folder])
        else:
            labels.append(-1)
    images = [to_input(read_image(f), pre) for f in files]
    return _dataset("image_folder", images, labels, pre,
                    {"source": f"image folder {root}", "files": [str(f.relative_to(root)) for f in files]})


def load_skimage_photos(cfg: DataConfig, pre: Preprocessing, limit: Optional[int] = None) -> Dataset:
    import skimage.data

    names = SKIMAGE_PHOTOS[:limit] if limit is not None else SKIMAGE_PHOTOS
    images = [to_input(Image.fromarray(np.asarray(getattr(skimage.data, n)())), pre) for n in names]
    return _dataset("skimage_photos", images, [-1] * len(images), pre,
                    {"source": "scikit-image's bundled photographs (skimage.data)", "files": list(names)})
