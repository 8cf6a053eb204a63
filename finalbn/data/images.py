"""Decoding image files: the cheap checks, the full check and the resize to tensors.

All decoding goes through :func:`decode_image`; the decoded-image cache
(``finalbn.data.cache``) fills its files with :func:`decode_images`, so cached
and freshly decoded pixels are the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from finalbn.errors import UserError

# Images whose shorter side is below this are skipped, unless image_size itself is
# smaller. 32 px is CIFAR's size, the smallest these architectures are known to
# learn from; a smaller file is a thumbnail, an icon or a 1x1 tracking pixel, not
# a photo of a leaf, and resizing it to the 224 px the torchvision backbones take
# would invent 48 of every 49 pixels (7x per side). A judgement call, not a
# measured threshold.
MIN_SIDE = 32

# Reasons a file is skipped; they and inspect_file's "smaller than N px" are the keys of Manifest.skipped.
ZERO_BYTE = "zero-byte"
NOT_AN_IMAGE = "not an image"
TRUNCATED = "truncated"
CORRUPT = "corrupt"
# A path that is not UTF-8 text (listed by Python with surrogate escapes).
NAME_NOT_UTF8 = "name not UTF-8"


@dataclass(frozen=True)
class FileFacts:
    """What reading a file once tells us: its hash and whether it can be an image."""

    sha256: str
    # None when the header parses as an image; otherwise a skip reason.
    problem: str | None


def inspect_file(path: Path, image_size: int) -> FileFacts:
    """Hash a file and parse only its image header (format and size).

    Cheap enough to run on every candidate file (the bytes are read anyway
    for the hash), so zero-byte, non-image and too small files are counted
    over the whole scan, not only among the files a split happens to pick.
    An image is too small when its shorter side is below both MIN_SIDE and
    ``image_size``, i.e. when it would be upscaled from less than MIN_SIDE.
    """
    smallest = min(MIN_SIDE, image_size)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if not data:
        return FileFacts(digest, ZERO_BYTE)
    try:
        with Image.open(io.BytesIO(data)) as image:
            shorter = min(image.size)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return FileFacts(digest, NOT_AN_IMAGE)
    if shorter < smallest:
        return FileFacts(digest, f"smaller than {smallest} px")
    return FileFacts(digest, None)


def inspect_files(paths: list[Path], image_size: int) -> list[FileFacts]:
    """:func:`inspect_file` over many files, in order; threads, as I/O and hashing free the GIL."""
    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        return list(pool.map(lambda path: inspect_file(path, image_size), paths))


def decode_problem(path: Path) -> str | None:
    """Fully decode a file; None when it decodes, else the skip reason.

    JPEGs are decoded at 1/8 scale (Image.draft): the decoder still reads the
    whole entropy-coded stream, so truncation is caught at a fraction of the cost.
    """
    try:
        with Image.open(path) as image:
            image.draft("RGB", (32, 32))
            image.load()
    except OSError as error:
        return TRUNCATED if "truncated" in str(error) else CORRUPT
    except (UnidentifiedImageError, SyntaxError, ValueError):
        return CORRUPT
    return None


def decode_image(path: Path, size: int) -> np.ndarray:
    """One file as a ``size x size`` RGB uint8 array [H, W, 3].

    Grayscale, RGBA and palette images become RGB. Non-square images are
    squashed, not cropped, so no part of a leaf is cut away (PlantVillage
    images are square). Resizing is bilinear; Pillow's resize filters over the
    whole source footprint when shrinking, i.e. it is antialiased.
    """
    with Image.open(path) as image:
        # Lets libjpeg decode at a reduced scale that is still >= size.
        image.draft("RGB", (size, size))
        rgb = image.convert("RGB")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def load_image_tensor(root: Path, paths: list[str], size: int) -> torch.Tensor:
    """Decode manifest paths under ``root`` into a uint8 tensor [N, 3, size, size]."""
    batch = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    decode_images(root, paths, size, batch)
    return torch.from_numpy(batch)


def decode_images(root: Path, paths: list[str], size: int, out: np.ndarray) -> None:
    """Decode manifest paths under ``root`` into ``out`` [N, 3, size, size] uint8, row for row.

    ``out`` may be a memory-mapped file, so a cache writes straight to disk.
    """

    def fill(index: int) -> None:
        path = root / paths[index]
        try:
            out[index] = decode_image(path, size).transpose(2, 0, 1)
        except (OSError, SyntaxError, ValueError) as error:
            raise UserError(
                f"cannot read {path} listed in the manifest ({error}): "
                "the data changed since the manifest was built; rebuild the manifest"
            ) from None

    # Pillow releases the GIL while decoding and resizing, so threads scale.
    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        list(pool.map(fill, range(len(paths))))


def _workers() -> int:
    return max(1, os.cpu_count() or 1)
