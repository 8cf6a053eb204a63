"""The split protocol: grouped, seeded, nested draws of train/val/test per class.

Per class, the groups (exact duplicates and photos of one leaf) are put in ONE
seeded random order and consumed test first, then val, then train. Hence:

* test and val do not depend on the train counts, so every point of an
  imbalance sweep is scored on the same test images;
* train with 10 minority images is a subset of train with 20 (same seed), so
  the sweep adds images instead of drawing a new sample at each ratio.

Each class has its own generator (seeded by split_seed and the class name), so
adding a second majority class does not reshuffle the others.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from finalbn.config import SPLITS, DataConfig, SplitName
from finalbn.data.manifest import SCHEMA, Manifest
from finalbn.data.sources import SOURCES, Candidate, DataSource, Scan, raise_if_strict
from finalbn.errors import UserError

logger = logging.getLogger(__name__)

# Test first: test and val must not move when the train counts change.
DRAW_ORDER: tuple[SplitName, ...] = ("test", "val", "train")
SAME_IMAGE_TWO_CLASSES = "same image in two classes"
Role = Literal["majority", "minority"]


@dataclass(frozen=True)
class Group:
    """Images that must share a split: exact duplicates and photos of one leaf."""

    id: str
    members: tuple[Candidate, ...]  # sorted by path


def build_manifest(cfg: DataConfig) -> Manifest:
    """Draw the splits cfg describes; same cfg and same files -> same manifest."""
    if cfg.split_seed < 0:
        raise UserError(f"split_seed is {cfg.split_seed}: use a seed >= 0")
    source = SOURCES.get(cfg.source)()
    scan = source.scan(cfg)
    skipped = Counter(scan.skipped)
    first = dict(scan.first_skipped)
    try:
        rows = _draw_splits(cfg, source, scan, skipped, first)
    finally:
        # Before a shortfall is raised too: skipped files are often why a class falls short.
        if skipped:
            logger.warning(
                "skipped files: %s",
                ", ".join(f"{n} {why} (first: {first[why]})" for why, n in sorted(skipped.items())),
            )
    manifest = Manifest(
        table=_table(scan, rows),
        classes=scan.classes,
        minority=scan.minority,
        root=scan.root,
        skipped=dict(sorted(skipped.items())),
    )
    _log_counts(manifest)
    return manifest


def _draw_splits(
    cfg: DataConfig, source: DataSource, scan: Scan, skipped: Counter[str], first: dict[str, str]
) -> list[tuple[Candidate, SplitName, str]]:
    """Every class's draw; ``skipped`` and ``first`` gain the files passed over on the way."""
    candidates = _drop_cross_class_duplicates(scan.candidates, skipped, first)
    by_class: dict[int, list[Candidate]] = {i: [] for i in range(len(scan.classes))}
    for candidate in candidates:
        by_class[candidate.label_index].append(candidate)
    # Every shortfall is reported before any image is decoded.
    for label_index, members in by_class.items():
        _require(cfg, scan, label_index, usable=len(members))

    def readable(candidate: Candidate) -> bool:
        problem = source.decode_problem(scan.root, candidate.path)
        if problem is None:
            return True
        raise_if_strict(cfg, Path(scan.root or "") / candidate.path, problem)
        skipped[problem] += 1
        first.setdefault(problem, candidate.path)
        return False

    rows: list[tuple[Candidate, SplitName, str]] = []
    for label_index, members in by_class.items():
        name = scan.classes[label_index]
        groups = _groups(members, name, cfg.group_by_leaf)
        order = _class_rng(cfg.split_seed, name).permutation(len(groups))
        targets = {s: cfg.count(s, _role(scan, label_index)) for s in DRAW_ORDER}
        drawn = _draw([groups[i] for i in order], targets, readable)
        if len(drawn) < sum(targets.values()):
            _require(cfg, scan, label_index, usable=len(members), drawn=(len(drawn), len(groups)))
        rows += drawn
    return rows


def _drop_cross_class_duplicates(
    candidates: tuple[Candidate, ...], skipped: Counter[str], first: dict[str, str]
) -> list[Candidate]:
    """Identical bytes under two labels cannot both be right: drop every copy."""
    labels: dict[str, set[int]] = {}
    for candidate in candidates:
        labels.setdefault(candidate.sha256, set()).add(candidate.label_index)
    dropped = [c.path for c in candidates if len(labels[c.sha256]) > 1]
    if dropped:
        skipped[SAME_IMAGE_TWO_CLASSES] += len(dropped)
        first.setdefault(SAME_IMAGE_TWO_CLASSES, dropped[0])
    return [c for c in candidates if len(labels[c.sha256]) == 1]


def _groups(members: list[Candidate], class_name: str, by_leaf: bool) -> list[Group]:
    """Union-find over sha256 (and leaf id) within one class.

    Groups come back sorted by id and their members by path, so the seeded
    permutation is the only source of order (never listdir or set order).
    """
    parent = list(range(len(members)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_with: dict[str, int] = {}
    for i, candidate in enumerate(members):
        keys = [f"sha256:{candidate.sha256}"]
        if by_leaf and candidate.leaf is not None:
            keys.append(f"leaf:{_leaf_group(class_name, candidate.leaf)}")
        for key in keys:
            if key in first_with:
                parent[find(i)] = find(first_with[key])
            else:
                first_with[key] = i

    components: dict[int, list[Candidate]] = {}
    for i, candidate in enumerate(members):
        components.setdefault(find(i), []).append(candidate)
    groups = [
        Group(
            id=_group_id(component, class_name, by_leaf),
            members=tuple(sorted(component, key=lambda c: c.path)),
        )
        for component in components.values()
    ]
    return sorted(groups, key=lambda g: g.id)


def _leaf_group(class_name: str, leaf: str) -> str:
    # Leaf ids are scoped by class: numbering is per photo series, and a group
    # spanning two classes could not be drawn class by class.
    return f"{class_name}/{leaf}"


def _group_id(component: list[Candidate], class_name: str, by_leaf: bool) -> str:
    """The leaf ("<class>/<leaf id>") where there is one, else the smallest sha256."""
    leaves = sorted(_leaf_group(class_name, c.leaf) for c in component if by_leaf and c.leaf is not None)
    return leaves[0] if leaves else min(c.sha256 for c in component)


def _class_rng(seed: int, class_name: str) -> np.random.Generator:
    name_key = int.from_bytes(hashlib.sha256(class_name.encode()).digest()[:8], "little")
    return np.random.default_rng([seed, name_key])


def _draw(
    groups: list[Group],
    targets: dict[SplitName, int],
    readable: Callable[[Candidate], bool],
) -> list[tuple[Candidate, SplitName, str]]:
    """Fill the splits in DRAW_ORDER from groups in the given order.

    A group goes to one split only: when it would overshoot, its remaining
    images stay unused rather than leak into the next split. Only images that
    get picked are decode-checked; an unreadable one is passed over.
    """
    pending = [s for s in DRAW_ORDER if targets[s] > 0]
    filled = 0
    drawn: list[tuple[Candidate, SplitName, str]] = []
    for group in groups:
        if not pending:
            break
        split = pending[0]
        for candidate in group.members:
            if filled == targets[split]:
                break
            if readable(candidate):
                drawn.append((candidate, split, group.id))
                filled += 1
        if filled == targets[split]:
            pending.pop(0)
            filled = 0
    return drawn


def _role(scan: Scan, label_index: int) -> Role:
    return "minority" if label_index in scan.minority else "majority"


def _require(
    cfg: DataConfig,
    scan: Scan,
    label_index: int,
    usable: int,
    drawn: tuple[int, int] | None = None,
) -> None:
    """Raise when a class cannot fill its splits; ``drawn``: (images drawn, groups) after a draw."""
    role = _role(scan, label_index)
    counts = {s: cfg.count(s, role) for s in DRAW_ORDER}
    needed = sum(counts.values())
    if drawn is None and usable >= needed:
        return
    parts = " + ".join(f"{s} {n:,}" for s, n in counts.items())
    found = f"has {usable:,} usable images"
    if drawn is not None:
        found += (
            f" in {drawn[1]:,} groups but only {drawn[0]:,} could be drawn "
            "(groups stay whole within a split and unreadable files are passed over)"
        )
    flags = ", ".join(f"--{s}-{role}" for s in DRAW_ORDER)
    raise UserError(
        f"class {scan.classes[label_index]!r} {scan.context} {found}, the protocol needs "
        f"{needed:,} ({parts}): reduce {flags}, or add images to that class"
    )


def _table(scan: Scan, rows: list[tuple[Candidate, SplitName, str]]) -> pl.DataFrame:
    rank = {s: i for i, s in enumerate(SPLITS)}
    frame = pl.DataFrame(
        {
            "path": [c.path for c, _, _ in rows],
            "label": [scan.classes[c.label_index] for c, _, _ in rows],
            "label_index": [c.label_index for c, _, _ in rows],
            "role": [_role(scan, c.label_index) for c, _, _ in rows],
            "split": [s for _, s, _ in rows],
            "sha256": [c.sha256 for c, _, _ in rows],
            "group": [g for _, _, g in rows],
            "rank": [rank[s] for _, s, _ in rows],
        },
        schema={**pl.Schema(SCHEMA), "rank": pl.Int32},
    )
    return frame.sort("rank", "label_index", "path").drop("rank")


def _log_counts(manifest: Manifest) -> None:
    counts = manifest.table.group_by("split", "label").len()
    for split in SPLITS:
        per_class = {label: n for label, n in counts.filter(pl.col("split") == split).select("label", "len").rows()}
        logger.info(
            "%s: %s",
            split,
            ", ".join(f"{name} {per_class.get(name, 0):,}" for name in manifest.classes),
        )
