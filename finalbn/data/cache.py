"""On-disk arrays that every trial of a sweep on one node shares: decoded images, frozen-backbone features.

Decoded images: one ``.npy`` file per file list, named by a content key,
built once and then memory-mapped, so concurrent trials on a node share its
pages in the OS page cache instead of each holding a private copy.

Features: rows keyed by each image file's sha256 (:func:`cached_rows`), so a
trial on another split of the same images (another seed's draw, another
minority count) reuses the rows of every image it shares with earlier trials
and computes only the others.

Entries are written to a temporary file and renamed into place, so a reader
never sees half a file; an exclusive lock makes a second process that wants
the same entry wait and then read the first one's file instead of building it
again (where the file system has no locks, both build and the last rename
wins: same key, same bytes). Nothing is ever evicted: delete the folder to
reclaim the space.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
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
from finalbn.records import write_atomic, write_text

CACHE_DIR_ENV = "FINALBN_CACHE_DIR"
IMAGE_CACHE_ENV = "FINALBN_IMAGE_CACHE"
FEATURE_CACHE_ENV = "FINALBN_FEATURE_CACHE"
DEFAULT_CACHE_DIR = Path("~/.cache/finalbn")
# Bump when the bytes an entry holds for the same key change (layout, decoder).
# 2: images with more than 8 bits per channel are stretched from their range, no longer clipped to white.
FORMAT_VERSION = 2


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


def pixels_id(source: str, image_size: int) -> str:
    """Names how ``source`` turns one image's bytes into pixels: with the image's sha256, its pixels.

    Pillow's version is in it because another libjpeg may decode the same
    bytes differently.
    """
    return content_key("pixels", FORMAT_VERSION, source, image_size, PIL.__version__)


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


# ------------------------------------------------------------------ rows by sha256

# A shard is one float32 [n, D] ``.npy`` and beside it the n hex sha256s of
# its rows, one a line; a trial adds one shard (two files) holding what it
# had to compute. Measured for 1,500 rows of 1,280 floats (2 loaded cores,
# page cache warm): from 3 shards 23-27 ms, from 30 shards 55-64 ms, from one
# .npy per image in hashed folders 550-950 ms (and a cold trial would write
# 1,500 files, each fsynced), from an SQLite table of blobs 27-69 ms. SQLite
# is no faster and its locking is unsafe on the NFS a Slurm cluster shares;
# plain files renamed into place are safe there.
_SHA256 = re.compile(r"[0-9a-f]{64}")


def cached_rows(
    folder: Path, key: str, ids: list[str], dim: int, build: Callable[[list[str]], np.ndarray]
) -> np.ndarray:
    """float32 rows [len(ids), dim] of ``ids`` (hex sha256s, repeats allowed) from the shards of ``key`` in ``folder``.

    ``build(missing)`` computes the rows [len(missing), dim] of the ids that no
    shard holds yet, in first-seen order; they become one new shard. Callers of
    one key take turns building under a lock, each only what the ones before
    it left missing, so every id's row is computed once per key (callers on
    disjoint ids wait too: building is the once-per-image part). A shard that
    does not parse or does not match its list of ids is deleted and its rows
    built again.
    """
    found = _read_shards(folder, key, dim)
    if any(i not in found for i in ids):
        found = _add_shard(folder, key, ids, dim, build)
    out = np.empty((len(ids), dim), dtype=np.float32)
    for row, i in enumerate(ids):
        out[row] = found[i]
    return out


def _add_shard(
    folder: Path, key: str, ids: list[str], dim: int, build: Callable[[list[str]], np.ndarray]
) -> dict[str, np.ndarray]:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with _exclusive(folder / f"{key}.lock"):
            # Read again: another process may have added rows while this one
            # waited. Broken shards go now, while no one else can be writing.
            found = _read_shards(folder, key, dim, delete_broken=True)
            missing = list(dict.fromkeys(i for i in ids if i not in found))
            if missing:
                rows = build(missing)
                name = f"{key}-{content_key(missing)[:16]}"
                # The rows before their index: a shard is seen only once both are whole.
                write_atomic(folder / f"{name}.npy", lambda temp: _save(temp, rows))
                write_text(folder / f"{name}.sha256", "".join(f"{i}\n" for i in missing))
                found |= dict(zip(missing, rows, strict=True))
    except OSError as error:
        raise UserError(
            f"cannot write the cache entry {folder / key}-* ({error.strerror or error}): point {CACHE_DIR_ENV} at a "
            f"writable folder, or turn the feature cache off with {FEATURE_CACHE_ENV}=0"
        ) from None
    return found


def _save(path: Path, rows: np.ndarray) -> None:
    # Through a handle: np.save appends ".npy" to a name that lacks it.
    with path.open("wb") as handle:
        np.save(handle, rows)


def _read_shards(folder: Path, key: str, dim: int, delete_broken: bool = False) -> dict[str, np.ndarray]:
    """id -> its row (a view of a read-only memory map) over every whole shard of ``key``."""
    found: dict[str, np.ndarray] = {}
    for index in sorted(folder.glob(f"{key}-*.sha256")):
        shard = _open_shard(index, dim)
        if shard is None:
            if delete_broken:
                index.unlink(missing_ok=True)
                index.with_suffix(".npy").unlink(missing_ok=True)
            continue
        for i, row in zip(*shard, strict=True):
            found.setdefault(i, row)
    return found


def _open_shard(index: Path, dim: int) -> tuple[list[str], np.ndarray] | None:
    try:
        ids = index.read_text().split()
        # A plain view of the map: rows of a np.memmap are memmaps, whose making
        # took half the read time measured above.
        rows = np.asarray(np.load(index.with_suffix(".npy"), mmap_mode="r"))
    # Missing, truncated or foreign (UnicodeDecodeError is a ValueError).
    except (OSError, ValueError, EOFError):
        return None
    if rows.dtype != np.float32 or rows.shape != (len(ids), dim) or not all(_SHA256.fullmatch(i) for i in ids):
        return None
    return ids, rows
