"""On-disk arrays that every trial of a sweep on one node shares: decoded images, frozen-backbone features.

An entry is one ``.npy`` file named by a content key, built once and then
memory-mapped, so concurrent trials on a node share its pages in the OS page
cache instead of each holding a private copy. It is written to a temporary
file and renamed into place, so a reader never sees half a file; an exclusive
lock makes a second process that wants the same key wait and then read the
first one's file instead of building it again (where the file system has no
locks, both build and the last rename wins: same key, same bytes). Nothing is
ever evicted: delete the folder to reclaim the space.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import filelock
import numpy as np
import PIL
import polars as pl

from finalbn.config import canonical_json
from finalbn.data.images import decode_images
from finalbn.errors import UserError

CACHE_DIR_ENV = "FINALBN_CACHE_DIR"
IMAGE_CACHE_ENV = "FINALBN_IMAGE_CACHE"
FEATURE_CACHE_ENV = "FINALBN_FEATURE_CACHE"
DEFAULT_CACHE_DIR = Path("~/.cache/finalbn")
# Bump when the bytes an entry holds for the same key change (layout, decoder).
FORMAT_VERSION = 1


def cache_root(cache_dir: Path | None = None) -> Path:
    """The cache folder: ``cache_dir``, else $FINALBN_CACHE_DIR, else ~/.cache/finalbn."""
    chosen = cache_dir if cache_dir is not None else Path(os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR)
    return chosen.expanduser()


def cache_enabled(env: str) -> bool:
    """On unless the variable is "0" (FINALBN_IMAGE_CACHE, FINALBN_FEATURE_CACHE)."""
    return os.environ.get(env, "1").strip() != "0"


def content_key(*parts: object) -> str:
    """sha256 over JSON-serialisable parts: equal parts, equal key."""
    return hashlib.sha256(canonical_json(parts).encode()).hexdigest()


def pixels_key(source: str, image_size: int, files: pl.DataFrame) -> str:
    """Names the uint8 pixels of ``files`` (path, sha256 rows, in that order) as ``source`` decodes them.

    The sha256s pin the bytes wherever the root is; Pillow's version is in the
    key because another libjpeg may decode the same bytes differently.
    """
    rows = files.select("path", "sha256").rows()
    return content_key("pixels", FORMAT_VERSION, source, image_size, PIL.__version__, rows)


def cached_images(root: Path, files: pl.DataFrame, source: str, image_size: int, cache_dir: Path | None) -> np.ndarray:
    """Decoded images of ``files`` (path, sha256 rows) as a [N, 3, S, S] uint8 memory map, row for row.

    Decodes exactly as :func:`finalbn.data.images.load_image_tensor` does, so
    cached and uncached pixels are bit-identical. The map is copy-on-write:
    writing to it changes this process's pages, never the file.
    """
    paths = files["path"].to_list()
    shape = (len(paths), 3, image_size, image_size)

    def build(temp: Path) -> None:
        out = np.lib.format.open_memmap(temp, mode="w+", dtype=np.uint8, shape=shape)
        decode_images(root, paths, image_size, out)
        out.flush()

    path = cache_root(cache_dir) / "images" / f"{pixels_key(source, image_size, files)}.npy"
    return cached_array(path, shape, np.dtype(np.uint8), build)


def cached_array(path: Path, shape: tuple[int, ...], dtype: np.dtype, build: Callable[[Path], None]) -> np.ndarray:
    """The ``.npy`` at ``path`` memory-mapped copy-on-write; ``build(temp)`` writes it first when it is missing.

    A file of the wrong shape or dtype, or one that does not parse, is built again.
    """
    found = _open(path, shape, dtype)
    if found is not None:
        return found
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _exclusive(path.with_name(f"{path.name}.lock")):
            # Another process may have built it while this one waited.
            found = _open(path, shape, dtype)
            if found is None:
                _build_atomically(path, build)
                found = _open(path, shape, dtype)
    except OSError as error:
        raise UserError(
            f"cannot write the cache entry {path} ({error.strerror or error}): point {CACHE_DIR_ENV} at a "
            f"writable folder, or turn the caches off with {IMAGE_CACHE_ENV}=0 {FEATURE_CACHE_ENV}=0"
        ) from None
    if found is None:
        raise UserError(
            f"cache entry {path} is unreadable right after it was written: check the disk, "
            f"or set {CACHE_DIR_ENV} to another folder"
        )
    return found


def _build_atomically(path: Path, build: Callable[[Path], None]) -> None:
    # Unique per process and thread; it ends in .npy, as numpy appends the suffix to names without it.
    temp = path.with_name(f".{path.stem}.{os.getpid()}-{threading.get_ident()}.tmp.npy")
    try:
        build(temp)
        with temp.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _open(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | None:
    try:
        # Copy-on-write: torch wants writable arrays, and the file must never change.
        array = np.load(path, mmap_mode="c")
    # Missing, truncated or foreign: (re)built by the caller.
    except (OSError, ValueError, EOFError):
        return None
    if array.shape != shape or array.dtype != dtype:
        return None
    return array


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    lock = filelock.FileLock(lock_path)
    try:
        lock.acquire()
    except OSError:
        # No locks on this file system (some NFS mounts): building twice is
        # only wasted work, since the rename is atomic and the bytes equal.
        yield
        return
    try:
        yield
    finally:
        lock.release()
