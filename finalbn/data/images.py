"""Decoding image files: the cheap checks, the full check and the resize to tensors.

All decoding goes through :func:`decode_image`; the decoded-image cache
(``finalbn.data.cache``) fills its files with :func:`decode_images`, so cached
and freshly decoded pixels are the same bytes.

Images with more than 8 bits per sample (16-bit grey or colour PNG and TIFF,
32-bit integer and float TIFF) are stretched linearly from their own darkest
to their brightest sample to 0..255 (:func:`stretch_to_uint8`); 8-bit images
decode exactly as Pillow's ``convert("RGB")`` makes them.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import sys
import warnings
from collections.abc import Iterator
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
# More pixels than Image.MAX_IMAGE_PIXELS (Pillow's decompression-bomb limit,
# about 89 million): a tiny file can declare such a size and need gigabytes to decode.
TOO_MANY_PIXELS = "too many pixels"

# What Image.open raises for too many pixels: the error past twice the limit, the
# warning past the limit where a filter (python -W error) turns warnings into errors.
_BOMB = (Image.DecompressionBombError, Image.DecompressionBombWarning)

# Pillow modes with more than 8 bits per sample (all single-channel).
_WIDE_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
# Pillow has no mode with more than 8 bits per colour channel (python-pillow/Pillow#1888): it
# decodes 16-bit RGB(A) PNG and TIFF samples to their high byte. Decoding the same tiles again
# with the opposite byte order yields the low bytes. Keys: the raw modes Pillow picks for them.
_NATIVE_TWIN = "16B" if sys.byteorder == "little" else "16L"
_LOW_BYTE_RAWMODE = {
    "RGB;16B": "RGB;16L",
    "RGB;16L": "RGB;16B",
    "RGB;16N": f"RGB;{_NATIVE_TWIN}",
    "RGBA;16B": "RGBA;16L",
    "RGBA;16L": "RGBA;16B",
    "RGBA;16N": f"RGBA;{_NATIVE_TWIN}",
}


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
            size = image.size
    except _BOMB:
        return FileFacts(digest, TOO_MANY_PIXELS)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return FileFacts(digest, NOT_AN_IMAGE)
    if too_many_pixels(size):
        return FileFacts(digest, TOO_MANY_PIXELS)
    if min(size) < smallest:
        return FileFacts(digest, f"smaller than {smallest} px")
    return FileFacts(digest, None)


def too_many_pixels(size: tuple[int, int]) -> bool:
    """Whether an image of ``size`` (width, height) passes Pillow's decompression-bomb limit.

    Pillow only warns between the limit and twice the limit; these files are
    skipped from the limit on, whatever the warning filters say.
    """
    limit = Image.MAX_IMAGE_PIXELS
    return limit is not None and size[0] * size[1] > limit


@contextlib.contextmanager
def _bomb_warnings_ignored() -> Iterator[None]:
    """Silence Pillow's DecompressionBombWarning, which fires for files counted as TOO_MANY_PIXELS.

    Enter it in the thread that starts the worker threads, never in them:
    catch_warnings swaps the process-wide filter list and is not thread-safe.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def inspect_files(paths: list[Path], image_size: int) -> list[FileFacts]:
    """:func:`inspect_file` over many files, in order; threads, as I/O and hashing free the GIL."""
    with _bomb_warnings_ignored(), ThreadPoolExecutor(max_workers=_workers()) as pool:
        return list(pool.map(lambda path: inspect_file(path, image_size), paths))


def decode_problem(path: Path) -> str | None:
    """Fully decode a file; None when it decodes, else the skip reason.

    JPEGs are decoded at 1/8 scale (Image.draft): the decoder still reads the
    whole entropy-coded stream, so truncation is caught at a fraction of the cost.
    """
    try:
        with _bomb_warnings_ignored(), Image.open(path) as image:
            if too_many_pixels(image.size):
                return TOO_MANY_PIXELS
            image.draft("RGB", (32, 32))
            image.load()
    except _BOMB:
        return TOO_MANY_PIXELS
    except OSError as error:
        return TRUNCATED if "truncated" in str(error) else CORRUPT
    except (UnidentifiedImageError, SyntaxError, ValueError):
        return CORRUPT
    return None


def decode_image(path: Path, size: int) -> np.ndarray:
    """One file as a ``size x size`` RGB uint8 array [H, W, 3].

    Grayscale, RGBA and palette images become RGB; images with more than 8
    bits per sample are first stretched to 8 bits (:func:`stretch_to_uint8`).
    Non-square images are squashed, not cropped, so no part of a leaf is cut
    away (PlantVillage images are square). Resizing is bilinear; Pillow's
    resize filters over the whole source footprint when shrinking, i.e. it is
    antialiased.
    """
    with Image.open(path) as image:
        if too_many_pixels(image.size):
            # A ValueError, as for other files the manifest lists but that cannot be read.
            raise ValueError(f"{image.size[0]}x{image.size[1]} is more than {Image.MAX_IMAGE_PIXELS:,} pixels")
        # Lets libjpeg decode at a reduced scale that is still >= size.
        image.draft("RGB", (size, size))
        rgb = _eight_bit_rgb(image, path)
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def stretch_to_uint8(samples: np.ndarray) -> np.ndarray:
    """Map samples linearly from their own min..max to 0..255, rounded to the nearest integer.

    One min and max over all channels, so colours keep their balance. A
    constant image becomes 0, and so do NaN and infinite samples (the min and
    max are over the finite ones). Per image, never the type's range: 12-bit
    data in 16-bit files (common from microscopy cameras) would otherwise use
    only 16 of the 256 levels; the price is that brightness is relative to each
    image, not comparable between images.
    """
    values = samples.astype(np.float64)
    finite = np.isfinite(values)
    low = values.min(where=finite, initial=np.inf)
    high = values.max(where=finite, initial=-np.inf)
    if not high > low:  # constant, or no finite sample at all
        return np.zeros(samples.shape, dtype=np.uint8)
    scaled = np.rint((values - low) * (255.0 / (high - low)))
    scaled[~finite] = 0
    return scaled.astype(np.uint8)


def _eight_bit_rgb(image: Image.Image, path: Path) -> Image.Image:
    """``image`` as 8-bit RGB: wide samples stretched, 8-bit images as convert("RGB") makes them."""
    if image.mode in _WIDE_MODES:
        return Image.fromarray(stretch_to_uint8(np.asarray(image))).convert("RGB")
    wide_colour = _sixteen_bit_colour(image, path)
    if wide_colour is not None:
        # Alpha is dropped, as convert("RGB") drops it from 8-bit images.
        return Image.fromarray(stretch_to_uint8(wide_colour[..., :3]))
    return image.convert("RGB")


def _sixteen_bit_colour(image: Image.Image, path: Path) -> np.ndarray | None:
    """The 16-bit samples [H, W, C] of a 16-bit RGB(A) file ``image`` was opened from, else None.

    Other 16-bit colour layouts (grey with alpha, premultiplied alpha) keep
    Pillow's high byte: a fixed scaling from 0..65535, not a clip.
    """
    low_byte_tiles = _low_byte_tiles(image.tile)
    if not low_byte_tiles:
        return None
    high = np.asarray(image)
    with Image.open(path) as again:
        again.tile = low_byte_tiles
        low = np.asarray(again)
    return (high.astype(np.uint16) << 8) | low


def _low_byte_tiles(tiles: list) -> list:
    """``tiles`` set to decode each sample's low byte; empty unless every tile is 16-bit RGB(A)."""
    twins = []
    for tile in tiles:
        args = tile[3]
        rawmode = args if isinstance(args, str) else args[0]
        if rawmode not in _LOW_BYTE_RAWMODE:
            return []
        twin = _LOW_BYTE_RAWMODE[rawmode]
        args = twin if isinstance(args, str) else (twin, *args[1:])
        # Pillow >= 11 tiles are named tuples that load() reads by name; Pillow 10's are plain.
        twins.append(tile._replace(args=args) if hasattr(tile, "_replace") else (*tile[:3], args))
    return twins


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
        except (OSError, SyntaxError, ValueError, *_BOMB) as error:
            raise UserError(
                f"cannot read {path} listed in the manifest ({error}): "
                "the data changed since the manifest was built; rebuild the manifest"
            ) from None

    # Pillow releases the GIL while decoding and resizing, so threads scale.
    with _bomb_warnings_ignored(), ThreadPoolExecutor(max_workers=_workers()) as pool:
        list(pool.map(fill, range(len(paths))))


def _workers() -> int:
    return max(1, os.cpu_count() or 1)
